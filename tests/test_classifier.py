"""Classifier models, heads, save/load, input validation, adversarial training, resume, CLI."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from eegsine.commands.main import main
from eegsine.errors import UserError
from eegsine.io import read_json
from eegsine.models.classifier import (Classifier, ClassifierConfig, make_sine_head, build_classifier,
                                       check_images)
from eegsine.training.classifier import (ClassifierTrainConfig, classifier_preset, detect_catastrophic_overfitting,
                                         init_gradient_probe, train_classifier)

DIGITS = dict(dataset="digits", n_val_eval=100, val_pgd_steps=3, batch_size=32, lr=2e-3, grad_log_steps=5,
              ckpt_every_steps=10)


# -- heads ------------------------------------------------------------------------------------------
def test_sine_head_formula_and_bound():
    torch.manual_seed(0)
    head = make_sine_head(16, 5, omega=3.0, amplitude=2.5, init="default")
    x = torch.randn(7, 16) * 100  # huge pre-activations: output must stay within the amplitude
    out = head(x)
    ref = 2.5 * torch.sin(3.0 * (x @ head.weight.T + head.bias))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    assert out.abs().max() <= 2.5 + 1e-6
    torch.testing.assert_close(head.pre_activation(x), x @ head.weight.T + head.bias, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("init,omega,bound", [
    ("siren", 1.0, math.sqrt(6 / 200)),
    ("siren", 30.0, math.sqrt(6 / 200) / 30),
    ("poster", 1.0, 1.0 / (6 * 200)),
    ("default", 1.0, 1 / math.sqrt(200)),  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound
])
def test_head_init_bounds(init, omega, bound):
    torch.manual_seed(0)
    head = make_sine_head(200, 10, omega=omega, init=init, poster_p=1.0)
    w = head.weight.detach()
    assert w.abs().max() <= bound * (1 + 1e-6)
    assert w.abs().max() >= 0.95 * bound  # uses the whole interval (2000 draws)


def test_poster_p_scales_bound():
    torch.manual_seed(0)
    head = make_sine_head(50, 10, init="poster", poster_p=6.0)
    assert head.weight.abs().max() <= 6.0 / (6 * 50) + 1e-9
    assert head.weight.abs().max() > 0.9 * 6.0 / (6 * 50)


# -- models -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,c,size,kw", [("small_cnn", 1, 28, {}), ("small_cnn", 1, 8, {}),
                                            ("small_cnn", 3, 32, {}), ("preact_resnet18", 3, 32, {"base_width": 4}),
                                            ("wong_mnist", 1, 28, {}), ("wong_mnist", 1, 8, {})])
@pytest.mark.parametrize("head", ["linear", "sine"])
def test_model_shapes(arch, c, size, kw, head):
    cfg = ClassifierConfig(arch=arch, in_channels=c, image_size=size, head=head, init="siren", **kw)
    out = build_classifier(cfg).eval()(torch.rand(3, c, size, size))
    assert out.shape == (3, 10)
    if head == "sine":
        assert out.abs().max() <= cfg.amplitude


def test_small_cnn_is_the_trades_layout():
    m = build_classifier(ClassifierConfig())
    assert m.body.fcs[1].in_features == 64 * 4 * 4  # 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4, no padding
    assert [mod.out_channels for mod in m.body.convs if isinstance(mod, torch.nn.Conv2d)] == [32, 32, 64, 64]


def test_normalisation_inside_model():
    cfg = ClassifierConfig(mean=[0.5], std=[0.25])
    torch.manual_seed(0)
    m = build_classifier(cfg).eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(m(x), m.head(m.body((x - 0.5) / 0.25)))


def test_save_load_roundtrip(tmp_path):
    cfg = ClassifierConfig(head="sine", init="siren", omega=2.0, amplitude=3.0)
    m = build_classifier(cfg).eval()
    m.save_pretrained(tmp_path)
    m2 = Classifier.from_pretrained(tmp_path)
    assert m2.cfg == cfg
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m(x), m2(x))


def test_load_other_architecture_is_a_user_error(tmp_path):
    build_classifier(ClassifierConfig()).save_pretrained(tmp_path)
    # config says preact_resnet18, weights are a small_cnn
    ClassifierConfig(arch="preact_resnet18", in_channels=1, image_size=28).save(tmp_path)
    with pytest.raises(UserError, match="weights do not fit Classifier"):
        Classifier.from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(UserError, match="std"):
        ClassifierConfig(in_channels=3, std=[1.0, 1.0])
    with pytest.raises(UserError, match="eps"):
        ClassifierTrainConfig(eps=8.0)
    with pytest.raises(UserError, match="unknown key"):
        ClassifierConfig.from_dict({"kind": "classifier", "version": 1, "heads": "sine"})


def test_check_images():
    cfg = ClassifierConfig()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 9])
    check_images(x, y, cfg)
    with pytest.raises(UserError, match=r"must lie in \[0, 1\]"):
        check_images(x * 255, y, cfg)
    with pytest.raises(UserError, match=r"expects \(N, 1, 28, 28\)"):
        check_images(torch.rand(4, 3, 28, 28), y, cfg)
    with pytest.raises(UserError, match="labels must lie"):
        check_images(x, torch.tensor([0, 1, 2, 10]), cfg)
    with pytest.raises(UserError, match="NaN"):
        check_images(torch.full((1, 1, 28, 28), float("nan")), None, cfg)


# -- training ---------------------------------------------------------------------------------------
def test_catastrophic_overfitting_detector():
    ok = [{"step": 1, "clean": .9, "fgsm": .6, "pgd": .5}, {"step": 2, "clean": .92, "fgsm": .65, "pgd": .55}]
    assert detect_catastrophic_overfitting(ok) is None
    co = ok + [{"step": 3, "clean": .95, "fgsm": .9, "pgd": .02}]
    msg = detect_catastrophic_overfitting(co)
    assert msg is not None and "step 3" in msg
    # PGD falls but FGSM falls too: a bad step, not catastrophic overfitting
    assert detect_catastrophic_overfitting(ok + [{"step": 3, "clean": .5, "fgsm": .3, "pgd": .2}]) is None


@pytest.mark.parametrize("head,init", [("linear", "default"), ("sine", "siren")])
def test_train_digits_both_heads(tmp_path, head, init):
    cfg = ClassifierTrainConfig(**DIGITS, model=ClassifierConfig(head=head, init=init), mode="fgsm_rs", eps=0.1,
                                epochs=3, eval_every_steps=20)
    m = train_classifier(cfg, tmp_path)
    assert m["test_clean_accuracy"] > 0.7  # 10 classes: chance is 0.1 (measured 0.91 / 0.92 on 360 test images)
    # the kept checkpoint is the first best of the stated selection metric over the validation history (exact); the
    # attacks bite. PGD-3 vs FGSM is not asserted: two attacks with their own randomness on 100 images, and PGD-3
    # was measured 2 images *weaker* than FGSM at one step of this very run (0.36 vs 0.34 robust, sine head)
    assert m["best"] == max(m["history"], key=lambda h: h["pgd"] + 1e-3 * h["clean"])
    assert m["best"]["pgd"] < m["best"]["clean"] and m["best"]["fgsm"] < m["best"]["clean"]
    model = Classifier.from_pretrained(tmp_path)
    mcfg = model.cfg
    assert (mcfg.image_size, mcfg.head) == (8, head)  # taken from the data
    metrics = read_json(tmp_path / "metrics.json")["train"]
    n_steps = 3 * math.ceil(1293 / 32)  # 1437 digits training images, 10% held out for validation
    assert metrics["steps"] == n_steps and metrics["eps_units"] == "[0,1] pixel"
    assert [h["step"] for h in metrics["history"]] == list(range(20, n_steps + 1, 20)) + [n_steps]
    assert len(metrics["grad_norms_first_steps"]["body.convs.0"]) == 5
    for f in ("grad_norms.png", "curves.png", "train.md", "log.txt"):
        assert (tmp_path / f).stat().st_size > 0


def test_resume_gives_the_same_weights(tmp_path, monkeypatch):
    cfg = ClassifierTrainConfig(**{**DIGITS, "ckpt_every_steps": 7, "batch_size": 64}, mode="pgd", steps=2, eps=0.1,
                                epochs=2)
    ref = train_classifier(cfg, tmp_path / "a")
    import eegsine.training.classifier as tc

    real = tc._lr_at

    def interrupted(c, step, total):
        if step == 14:
            raise KeyboardInterrupt
        return real(c, step, total)

    monkeypatch.setattr(tc, "_lr_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(cfg, tmp_path / "b")
    assert read_json(tmp_path / "b" / "ckpt.json")["progress"]["step"] == 14
    monkeypatch.setattr(tc, "_lr_at", real)
    res = train_classifier(cfg, tmp_path / "b")
    a = Classifier.from_pretrained(tmp_path / "a")
    b = Classifier.from_pretrained(tmp_path / "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert res["history"] == ref["history"]


def test_keep_last_trains_on_every_image_and_saves_the_final_weights(tmp_path):
    """Wong et al.'s recipe: no held-out images (val_fraction 0) and the last step's weights; with validation
    images kept (keep=last, val_fraction 0.1) the same training as keep=best, but the final weights saved."""
    from safetensors.torch import load_file

    with pytest.raises(UserError, match="--keep last"):
        ClassifierTrainConfig(**DIGITS, val_fraction=0.0)
    m = train_classifier(ClassifierTrainConfig(**DIGITS, mode="natural", epochs=1, val_fraction=0.0, keep="last"),
                         tmp_path / "all")
    assert (m["n_train"], m["n_val"], m["history"], m["best"]) == (1437, 0, [], None)  # every training image
    report = (tmp_path / "all" / "train.md").read_text()
    assert "the weights after the last step" in report and "Catastrophic overfitting: not watched" in report
    cfg = ClassifierTrainConfig(**DIGITS, mode="natural", epochs=2, eval_every_steps=10)
    best, last = train_classifier(cfg, tmp_path / "best"), train_classifier(cfg.replace(keep="last"), tmp_path / "last")
    assert best["history"] == last["history"]  # the same training
    assert not (tmp_path / "last" / "best.safetensors").exists()
    final = load_file(max((tmp_path / "last").glob("ckpt-*.safetensors"), key=lambda p: int(p.stem[5:])))
    chosen = load_file(tmp_path / "best" / "best.safetensors")
    kept = {"best": Classifier.from_pretrained(tmp_path / "best").state_dict(),
            "last": Classifier.from_pretrained(tmp_path / "last").state_dict()}
    assert all(torch.equal(v, final[f"model.model.{k}"]) for k, v in kept["last"].items())
    assert all(torch.equal(v, chosen[k]) for k, v in kept["best"].items())
    if best["best"]["step"] < best["steps"]:  # the chosen checkpoint is an earlier one: the two models differ
        assert not all(torch.equal(v, kept["last"][k]) for k, v in kept["best"].items())


def test_changed_config_refuses_to_resume(tmp_path):
    cfg = ClassifierTrainConfig(**DIGITS, mode="natural", epochs=1)
    train_classifier(cfg, tmp_path)
    with pytest.raises(UserError, match="different configuration"):
        train_classifier(cfg.replace(lr=0.5), tmp_path)


def test_init_probe_orders_poster_below_siren(tmp_path):
    """The poster's literal formula (tiny weights) starves the body of gradient; SIREN's bound does not."""
    from eegsine.data import load_images

    ds = load_images("digits")
    cfg = ClassifierConfig(image_size=8, head="sine")
    probe = init_gradient_probe(cfg, torch.from_numpy(ds.train_x[:128]), torch.from_numpy(ds.train_y[:128]), tmp_path,
                                n_batches=2)
    assert probe["poster"]["body.convs.0"] < 0.1 * probe["siren"]["body.convs.0"]
    assert (tmp_path / "init_probe.png").exists()


def test_presets_share_training_settings():
    for name in ("tiny", "paper-mnist", "paper-mnist-fgsmrs", "paper-cifar10"):
        p = classifier_preset(name)
        assert (p["standard"].model.head, p["sine"].model.head) == ("linear", "sine")
        assert p["standard"].replace(model=p["sine"].model) == p["sine"]
    with pytest.raises(UserError):
        classifier_preset("huge")


def test_paper_cifar10_preset_uses_cifar_conventions():
    for cfg in classifier_preset("paper-cifar10").values():
        assert ((cfg.dataset, cfg.model.arch, cfg.model.in_channels, cfg.model.image_size)
                == ("cifar10", "preact_resnet18", 3, 32))
        assert cfg.eps == pytest.approx(8 / 255) and cfg.alpha == pytest.approx(2 / 255) and cfg.steps == 10
        assert len(cfg.model.mean) == len(cfg.model.std) == 3


def test_paper_mnist_fgsmrs_preset_is_wong_et_al_mnist_recipe():
    """Wong, Rice & Kolter 2020's MNIST defaults (locuslab/fast_adversarial MNIST/train_mnist.py): FGSM from a
    random start, eps 0.3, alpha 0.375, 10 epochs of batch 100, Adam, cyclic lr peaking at 5e-3, their CNN."""
    p = classifier_preset("paper-mnist-fgsmrs")
    for cfg in p.values():
        assert (cfg.dataset, cfg.mode, cfg.eps, cfg.alpha, cfg.epochs, cfg.batch_size) == (
            "mnist", "fgsm_rs_wong", 0.3, 0.375, 10, 100)
        assert (cfg.optimizer, cfg.lr, cfg.lr_schedule, cfg.weight_decay, cfg.eps_ramp_epochs) == (
            "adam", 5e-3, "cyclic", 0.0, 0.0)
        assert cfg.model.arch == "wong_mnist" and cfg.n_train == 0
        assert round(cfg.val_fraction * 60000) == 1000  # 59,000 of MNIST's 60,000 trained on
    assert (p["standard"].model.init, p["sine"].model.init) == ("default", "siren")
    # their mnist_net: conv(1->16, 4, s2, p1) conv(16->32, 4, s2, p1) fc(1568->100) fc(100->10): 166,406 parameters
    for cfg in p.values():
        m = build_classifier(cfg.model)
        assert sum(t.numel() for t in m.parameters()) == 166_406
        assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
        assert [tuple(t.shape) for t in m.body.parameters()] == [(16, 1, 4, 4), (16,), (32, 16, 4, 4), (32,),
                                                                 (100, 1568), (100,)]
    with pytest.raises(UserError, match="multiple of 4"):
        ClassifierConfig(arch="wong_mnist", image_size=30)


def test_cyclic_lr_is_wong_et_al_triangle():
    from eegsine.training.classifier import _lr_at

    cfg = classifier_preset("paper-mnist-fgsmrs")["sine"]
    total = 10 * 590  # their np.interp(t, [0, 4, 10], [0, lr_max, 0]) at t = epoch + (i + 1) / 590
    assert _lr_at(cfg, 2359, total) == pytest.approx(5e-3)        # end of epoch 4: the peak
    assert _lr_at(cfg, 1179, total) == pytest.approx(2.5e-3)      # end of epoch 2: half way up
    assert _lr_at(cfg, 4129, total) == pytest.approx(2.5e-3)      # end of epoch 7: half way down
    assert _lr_at(cfg, total - 1, total) == pytest.approx(0.0)    # the last step
    assert _lr_at(cfg, 0, total) == pytest.approx(5e-3 / 2360)    # the first step is not zero


def test_mnist_scale_eps_on_cifar10_is_refused():
    with pytest.raises(UserError, match=r"0\.3 is an MNIST-scale radius.*8/255 = 0\.0314.*--eps 0\.0314"):
        ClassifierTrainConfig(dataset="cifar10")  # the default eps is MNIST's 0.3
    assert ClassifierTrainConfig(dataset="cifar10", eps=16 / 255).eps == pytest.approx(16 / 255)


def test_missing_cifar10_names_the_training_flag(tmp_path, capsys):
    rc = main(["train", "classifier", "--run", str(tmp_path / "r"), "--dataset", "cifar10", "--eps", "0.0314",
               "--data-root", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and "pass --data-root FOLDER" in err and "--root" not in err.replace("--data-root", "")


# -- CLI & other data ---------------------------------------------------------------------------------
def test_cli_train_and_bad_input(tmp_path, capsys):
    rc = main(["train", "classifier", "--run", str(tmp_path / "r"), "--dataset", "digits", "--mode", "natural",
               "--epochs", "1", "--n-val-eval", "50", "--model-head", "sine", "--model-init", "siren",
               "--no-init-probe"])
    assert rc == 0
    assert Classifier.from_pretrained(tmp_path / "r").cfg.head == "sine"
    capsys.readouterr()
    rc = main(["train", "classifier", "--run", str(tmp_path / "s"), "--dataset", "digits", "--eps", "3"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eps" in err[0]


def write_cifar_folder(root, n_per_batch=12, seed=0):
    """A folder in the exact cifar-10-batches-py format (dicts of bytes keys, uint8 (N, 3072) rows)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        # class-dependent colour so a model can learn something
        base = np.array([[25 * c, 255 - 25 * c, 128] for c in labels], dtype=np.float32)[:, :, None]
        img = np.clip(base + rng.normal(0, 30, (n_per_batch, 3, 1024)), 0, 255).astype(np.uint8)
        img = img.reshape(n_per_batch, 3072)
        with open(root / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": img,
                         b"filenames": [f"{i}.png".encode() for i in range(n_per_batch)]}, fh)
    return root


@pytest.mark.parametrize("arch,head", [("preact_resnet18", "linear"), ("preact_resnet18", "sine"),
                                       ("small_cnn", "sine")])
def test_train_on_cifar_format_folder(tmp_path, arch, head):
    root = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    cfg = ClassifierTrainConfig(dataset="cifar10", data_root=str(root), mode="fgsm_rs", eps=8 / 255, epochs=1,
                                batch_size=16, n_val_eval=6, val_pgd_steps=2, grad_log_steps=2,
                                model=ClassifierConfig(arch=arch, head=head, base_width=4, init="siren", in_channels=3,
                                                       mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]))
    m = train_classifier(cfg, tmp_path / "run")
    model = Classifier.from_pretrained(tmp_path / "run")
    mcfg = model.cfg
    assert (mcfg.in_channels, mcfg.image_size, mcfg.arch) == (3, 32, arch)
    assert m["n_train"] == 54 and m["n_test"] == 12  # 60 training images, 10% held out


@pytest.mark.parametrize("name", ["mnist", pytest.param("fashion-mnist", marks=pytest.mark.slow)])
def test_train_real_subset(tmp_path, name):
    from eegsine.data import get_spec

    if not get_spec(name).available():
        pytest.skip(f"{name} not present (run `eegsine data fetch {name}`)")
    for head in ("linear", "sine"):
        cfg = ClassifierTrainConfig(dataset=name, mode="natural", epochs=2, n_train=2000, n_val_eval=100, lr=2e-3,
                                    val_pgd_steps=1, batch_size=50, model=ClassifierConfig(head=head, init="siren"))
        m = train_classifier(cfg, tmp_path / head)
        assert m["test_clean_accuracy"] > 0.5, (name, head, m["test_clean_accuracy"])


# -- device (issue #25): CUDA when present, never a silent CPU run when a GPU is asked for ----------------------
def test_device_resolution(monkeypatch):
    from eegsine.training.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device cuda: no CUDA device here"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(UserError, match="has 1 CUDA device"):
        resolve_device("cuda:3")
    with pytest.raises(UserError, match="not auto, cpu, cuda or cuda:N"):
        ClassifierTrainConfig(device="gpu")


def test_the_cpu_device_is_the_same_computation(tmp_path, monkeypatch):
    """--device cpu and auto on a machine without CUDA train the same weights as each other, step for step."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = ClassifierTrainConfig(**DIGITS, mode="pgd", steps=2, eps=0.1, epochs=1)
    ref = train_classifier(cfg, tmp_path / "auto")
    res = train_classifier(cfg.replace(device="cpu"), tmp_path / "cpu")
    a, b = Classifier.from_pretrained(tmp_path / "auto"), Classifier.from_pretrained(tmp_path / "cpu")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert res["history"] == ref["history"]
    assert "on cpu" in (tmp_path / "cpu" / "log.txt").read_text()
