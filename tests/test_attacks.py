"""Attacks (registry, PGD, adaptive attacks, AutoAttack strength) and the robustness evaluation's sanity checks."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchattacks

from eegsine.attacks.registry import REGISTRY as ATTACK_REGISTRY
from eegsine.attacks.algorithms import (AttackParams, AutoAttackStandard, BPDASine, PGD, PreSine, build_attack,
                                        describe, margin_loss)
from eegsine.bench.robustness.evaluate import RobustnessConfig, evaluate_robustness, robustness_preset
from eegsine.commands.main import main
from eegsine.errors import UserError
from eegsine.models.classifier import ClassifierConfig, build_classifier
from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

FAST = AttackParams(pgd_steps=5, pgd_restarts=2, apgd_steps=5, fab_steps=5, square_queries=30, n_targets=2)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Naturally trained digits models, one per head (~3 s each)."""
    root = tmp_path_factory.mktemp("digits_runs")
    out = {}
    for name, head, init in (("standard", "linear", "default"), ("sine", "sine", "siren")):
        cfg = ClassifierTrainConfig(dataset="digits", mode="natural", epochs=4, batch_size=32, lr=2e-3, n_val_eval=50,
                                    val_pgd_steps=1, grad_log_steps=0, model=ClassifierConfig(head=head, init=init))
        train_classifier(cfg, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def digits_data():
    from eegsine.data import load_images

    ds = load_images("digits")
    return torch.from_numpy(ds.test_x[:64]), torch.from_numpy(ds.test_y[:64])


def _model(run):
    from eegsine.models.classifier import Classifier

    return Classifier.from_pretrained(run)


def test_margin_loss():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    torch.testing.assert_close(margin_loss(z, torch.tensor([0, 2])), torch.tensor([-1.0, 6.0]))


@pytest.mark.parametrize("name", list(ATTACK_REGISTRY))
def test_every_registered_attack_stays_in_the_eps_ball(name, digits_runs, digits_data):
    """Registry completeness: every attack (evaluated and training ones) builds, runs and returns valid images
    (no known exceptions)."""
    model = _model(digits_runs["sine"])
    source = _model(digits_runs["standard"])
    x, y = digits_data[0][:16], digits_data[1][:16]
    eps = 0.2
    atk = build_attack(name, model, eps, 10, FAST, source_model=source)
    adv = atk(x, y)
    assert adv.shape == x.shape
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_wong_fgsm_rs_takes_the_gradient_at_the_unclipped_start():
    """Wong et al.'s code: grad at x + U(-eps, eps) *before* clipping to [0, 1] (torchattacks' FFGSM clips first);
    the returned point is clipped to the eps ball and to [0, 1], one step of alpha from the start."""
    torch.manual_seed(0)
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 3)

        def forward(self, x):
            seen.append(float(x.min()))
            return self.lin(x.flatten(1))

    model = Probe()
    x = torch.zeros(8, 1, 4, 4)  # an all-black image: a clipped start could never go below 0
    y = torch.zeros(8, dtype=torch.long)
    adv = build_attack("fgsm-rs-wong", model, 0.3, 3, AttackParams(fgsm_rs_alpha=0.375))(x, y)
    assert seen[0] < -0.2  # the gradient was taken at negative pixels
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 0.3 + 1e-6
    # from u ~ U(-eps, eps) one step of 0.375: a pixel pushed up ends at min(eps, u + 0.375) in [0.075, eps], one
    # pushed down at u - 0.375 < 0, clipped to the black pixel's 0; nothing in between
    vals = adv.flatten()
    assert bool(((vals.abs() < 1e-7) | (vals >= 0.075 - 1e-6)).all())
    assert bool((vals.abs() < 1e-7).any()) and bool((vals > 0.29).any())
    seen.clear()
    build_attack("fgsm-rs", model, 0.3, 3, AttackParams(fgsm_rs_alpha=0.375))(x, y)
    assert min(seen) >= 0.0  # torchattacks' FFGSM: the clipped start


def test_sine_only_attacks_refuse_linear_head(digits_runs):
    with pytest.raises(UserError, match="needs a sine-head"):
        build_attack("bpda-pgd", _model(digits_runs["standard"]), 0.1, 10)


def test_pgd_beats_clean_and_margin_restarts_help(digits_runs, digits_data):
    model = _model(digits_runs["standard"])
    x, y = digits_data
    clean = (model(x).argmax(1) == y).float().mean()
    assert clean > 0.8
    for loss in ("ce", "margin"):
        adv = PGD(model, eps=0.3, steps=10, restarts=2, loss=loss)(x, y)
        with torch.no_grad():
            acc = (model(adv).argmax(1) == y).float().mean()
        assert acc < clean - 0.5, (loss, float(acc))


def test_bpda_forward_is_the_model_and_backward_skips_sin(digits_runs, digits_data):
    model = _model(digits_runs["sine"])
    model.head.omega, model.head.amplitude = 2.0, 1.5
    x = digits_data[0][:8].clone().requires_grad_(True)
    bp = BPDASine(model)
    torch.testing.assert_close(bp(x), model(x))
    g_bpda = torch.autograd.grad(bp(x)[:, 3].sum(), x)[0]
    # sin replaced by identity: d/dx [A * omega * (W f(x) + b)]
    g_lin = torch.autograd.grad((1.5 * 2.0 * model.head.pre_activation(model.features(x)))[:, 3].sum(), x)[0]
    torch.testing.assert_close(g_bpda, g_lin)
    g_true = torch.autograd.grad(model(x)[:, 3].sum(), x)[0]
    assert not torch.allclose(g_true, g_bpda)
    torch.testing.assert_close(PreSine(model)(x), 2.0 * model.head.pre_activation(model.features(x)))


def test_adaptive_attack_is_judged_by_the_real_model(digits_runs, digits_data):
    """A judge that is never fooled keeps PGD from claiming any success: the last run's point is returned."""
    model = _model(digits_runs["sine"])
    x, y = digits_data[0][:8], digits_data[1][:8]

    class Oracle(nn.Module):  # always right
        def forward(self, inp):
            return nn.functional.one_hot(y[: len(inp)], 10).float() if len(inp) == len(y) else torch.zeros(len(inp), 10)

    calls = []
    pgd = PGD(BPDASine(model), eps=0.3, steps=3, restarts=3, judge=Oracle())
    orig = pgd._one_run
    pgd._one_run = lambda a, b: calls.append(len(a)) or orig(a, b)
    pgd(x, y)
    assert calls == [8, 8, 8]  # never fooled per the judge -> every restart runs on every image


def test_autoattack_is_at_published_strength():
    model = build_classifier(ClassifierConfig(image_size=8))
    aa = AutoAttackStandard(model, eps=0.3, n_classes=10)
    apgd, apgdt, fab, square = aa.attacks
    assert isinstance(apgd, torchattacks.APGD) and apgd.steps == 100 and apgd.loss == "ce"
    assert isinstance(apgdt, torchattacks.APGDT) and apgdt.steps == 100 and apgdt.n_target_classes == 9
    assert isinstance(fab, torchattacks.FAB) and fab.steps == 100 and fab.multi_targeted and fab.n_target_classes == 9
    assert isinstance(square, torchattacks.Square) and square.n_queries == 5000
    label, full = describe("autoattack", AttackParams())
    assert full and "REDUCED" not in label
    label, full = describe("autoattack", AttackParams(apgd_steps=10))
    assert not full and "REDUCED" in label


def test_autoattack_records_which_component_fooled(digits_runs, digits_data):
    model = _model(digits_runs["standard"])
    x, y = digits_data[0][:24], digits_data[1][:24]
    aa = AutoAttackStandard(model, eps=0.3, n_classes=10, apgd_steps=5, fab_steps=5, square_queries=20, n_targets=2)
    adv = aa(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
        wrong_clean = model(x).argmax(1) != y
    by = aa.success_by
    assert torch.equal(by == -2, wrong_clean)
    assert torch.equal(fooled & ~wrong_clean, by >= 0)


# -- sanity checks: they must fire on a gradient-masking model and stay quiet on a plain one --------------
class InputQuantised(nn.Module):
    """A classic gradient-masking defence: binarise the input (torch.round: zero gradient everywhere)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.head, self.name = model, model.cfg, model.head, "masked"

    def forward(self, x):
        return self.model(torch.round(x))


SANITY = RobustnessConfig(dataset="digits", n_eval=120, n_eval_expensive=40, eps=[0.1, 0.3, 0.5], expensive_eps=[0.3],
                          attacks=["fgsm", "pgd-ce", "pgd-margin", "square"], pgd_steps=10, pgd_restarts=1,
                          square_queries=300, batch_size=120)


def test_sanity_checks_fire_on_a_gradient_masking_model(digits_runs, tmp_path):
    masked = InputQuantised(_model(digits_runs["standard"])).eval()
    s = evaluate_robustness([masked], SANITY, tmp_path)
    checks = s["models"]["Standard CNN"]["checks"]
    assert checks["zero_gradients"]["passed"] is False and checks["zero_gradients"]["value"] > 0.9
    assert checks["black_box_vs_white_box"]["passed"] is False
    assert checks["chance_at_eps_0.5"]["passed"] is False
    assert "**FAIL**" in (tmp_path / "robustness.md").read_text()


def test_sanity_checks_pass_on_a_plain_model(digits_runs, tmp_path):
    s = evaluate_robustness([digits_runs["standard"]], SANITY, tmp_path)
    checks = s["models"]["Standard CNN"]["checks"]
    assert {k: c["passed"] for k, c in checks.items()} == {k: True for k in checks}, checks
    assert "**FAIL**" not in (tmp_path / "robustness.md").read_text()


def test_monotone_and_iterative_checks_fire_on_doctored_results():
    from eegsine.bench.robustness.evaluate import sanity_checks

    t = lambda *v: {"robust": torch.tensor(v * 5, dtype=torch.bool)}  # noqa: E731 - 20 images: 5 copies of 4
    res = {"clean": {0.0: t(1, 1, 1, 1)},
           "fgsm": {0.1: t(1, 0, 0, 0), 0.2: t(0, 0, 0, 0)},
           "pgd-ce": {0.1: t(1, 1, 1, 0), 0.2: t(0, 0, 0, 0), 0.5: t(0, 0, 0, 0)}}
    res["fgsm"][0.3] = t(1, 1, 1, 1)  # the single run at 0.3 misses all 20 images that 0.2 broke
    cfg = RobustnessConfig()
    c = sanity_checks(res, 0.25, 20, 20, 0.0, cfg)
    assert c["monotone_in_eps"]["passed"] is False and "fgsm" in c["monotone_in_eps"]["detail"]
    assert c["monotone_in_eps"]["value"] == [{"attack": "fgsm", "eps": 0.3, "missed": 20, "attacked": 20, "share": 1.0}]
    # pgd-ce at 0.1 misses the 10 images FGSM broke and breaks none FGSM missed: one-sided exact McNemar p = 2^-10
    assert c["iterative_vs_single_step"]["passed"] is False and "pgd-ce" in c["iterative_vs_single_step"]["detail"]
    assert c["chance_at_eps_0.5"]["passed"] is True

    # at most the stated share of the attacked images missed passes; one more image fails (1,000 attacked images)
    clean = torch.ones(1000, dtype=torch.bool)
    k = int(cfg.monotone_max_share * 1000)
    for missed, ok in ((k, True), (k + 1, False)):
        at_03 = torch.zeros(1000, dtype=torch.bool)
        at_03[:missed] = True
        c = sanity_checks({"clean": {0.0: {"robust": clean}}, "pgd-ce": {0.2: {"robust": ~clean},
                                                                          0.3: {"robust": at_03}}},
                          0.1, 1000, 1000, 0.0, cfg)
        assert c["monotone_in_eps"]["passed"] is ok, (missed, c["monotone_in_eps"])
    # the other checks judge the reported, nested results: PGD's own run at 0.3 misses every image FGSM broke there,
    # but PGD broke them all at 0.2 (the monotone diagnostic reports that run instead)
    res = {"clean": {0.0: t(1, 1, 1, 1)}, "fgsm": {0.2: t(0, 0, 0, 0), 0.3: t(0, 0, 0, 0)},
           "pgd-ce": {0.2: t(0, 0, 0, 0), 0.3: t(1, 1, 1, 1)}}
    c = sanity_checks(res, 0.25, 20, 20, 0.0, cfg)
    assert c["iterative_vs_single_step"]["passed"] is True and c["monotone_in_eps"]["passed"] is False


def test_attack_cli_both_heads_and_outputs(digits_runs, tmp_path, capsys):
    out = tmp_path / "rob"
    rc = main(["attack", "--run", str(digits_runs["standard"]), "--run", str(digits_runs["sine"]), "--out", str(out),
               "--preset", "tiny", "--n-eval", "40", "--n-eval-expensive", "10", "--square-queries", "50",
               "--pgd-steps", "5", "--apgd-steps", "5", "--eps", "0.1", "0.3",
               "--transfer-from", str(digits_runs["standard"])])
    assert rc == 0
    summary = json.loads((out / "robustness.json").read_text())
    assert set(summary["models"]) == {"Standard CNN", "Sine"}
    assert summary["eps_units"].startswith("L-inf, [0, 1] pixel")
    sine = summary["models"]["Sine"]["results"]
    assert {"bpda-pgd", "presine-pgd", "transfer"} <= set(sine)
    assert not {"bpda-pgd", "transfer"} & set(summary["models"]["Standard CNN"]["results"])  # no self-transfer
    for a, v in summary["models"]["Sine"]["images_per_s"].items():
        assert v is not None and v > 0, a
    md = (out / "robustness.md").read_text()
    assert "| Attack | eps | Standard CNN | Sine | n |" in md and "REDUCED strength" in md
    # the paired comparison: Sine - Standard on the same images, per attack and per-example worst case
    paired = {(r["attack"], r["eps"]): r for r in summary["paired"]}
    fgsm = paired[(summary["attacks"]["fgsm"]["label"], 0.3)]
    assert (fgsm["a"], fgsm["b"], fgsm["n"]) == ("Sine", "Standard CNN", 40)
    res = {lb: summary["models"][lb]["results"]["fgsm"]["0.3"]["accuracy"] for lb in ("Sine", "Standard CNN")}
    assert fgsm["diff"] == pytest.approx(res["Sine"] - res["Standard CNN"])
    worst = paired[("Worst case per example over every attack", 0.3)]
    assert {"bpda-pgd", "presine-pgd", "transfer", "fgsm"} <= set(worst["attacks_used"]["Sine"])
    assert worst["n"] == 10  # the prefix the expensive attacks reached
    expensive = [a for a, m in summary["attacks"].items() if m["subset"] == 10 and "0.3" in sine.get(a, {})]
    assert expensive  # the worst case on that prefix is no better than any one attack there
    assert worst["acc_a"] <= min(sine[a]["0.3"]["accuracy"] for a in expensive) + 1e-9
    assert "### Paired comparison on the same images: Sine - Standard CNN" in md and "McNemar" in md
    for f in ("acc_vs_eps.png", "logits.png", "metrics.json"):
        assert (out / f).stat().st_size > 0


def test_attack_cli_bad_inputs(digits_runs, tmp_path, capsys):
    rc = main(["attack", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such folder" in capsys.readouterr().err
    rc = main(["attack", "--run", str(digits_runs["standard"]), "--out", str(tmp_path / "o"), "--eps", "8"])
    assert rc == 2 and "pixel units" in capsys.readouterr().err
    # a digits (8x8) model evaluated on MNIST-shaped images: wrong shape, one line, exit 2
    from eegsine.data import get_spec

    if get_spec("mnist").available():
        rc = main(["attack", "--run", str(digits_runs["standard"]), "--out", str(tmp_path / "o"), "--dataset", "mnist",
                   "--n-eval", "4", "--attacks", "fgsm"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("eegsine: error")]
        assert rc == 2 and len(err) == 1 and "expects (N, 1, 8, 8)" in err[0]


def test_tiny_preset_is_labelled_reduced_and_has_no_autoattack():
    cfg = robustness_preset("tiny")
    assert "autoattack" not in cfg.attacks
    assert not describe("square", cfg.params)[1] and not describe("apgd-dlr", cfg.params)[1]


@pytest.mark.parametrize("head", ["linear", "sine"])
def test_evaluate_on_cifar_format_folder(tmp_path, head):
    from test_classifier import write_cifar_folder

    root = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    cfg = ClassifierTrainConfig(dataset="cifar10", data_root=str(root), mode="natural", eps=8 / 255, epochs=1,
                                batch_size=32, n_val_eval=6, val_pgd_steps=2, grad_log_steps=0,
                                model=ClassifierConfig(arch="preact_resnet18", base_width=4, head=head, init="siren"))
    train_classifier(cfg, tmp_path / "run")
    rcfg = RobustnessConfig(n_eval=12, n_eval_expensive=4, attacks=["fgsm", "pgd-ce"], pgd_steps=3, pgd_restarts=1)
    s = evaluate_robustness([tmp_path / "run"], rcfg, tmp_path / "rob")
    label = next(iter(s["models"]))
    eps = sorted(v["eps"] for v in s["models"][label]["results"]["fgsm"].values())
    assert eps == pytest.approx([2 / 255, 4 / 255, 8 / 255, 16 / 255])  # the CIFAR grid
    assert "16/255" in (tmp_path / "rob" / "robustness.md").read_text()


def test_evaluation_resumes_from_its_cache(digits_runs, tmp_path, monkeypatch):
    import eegsine.bench.robustness.evaluate as rb

    cfg = RobustnessConfig(n_eval=60, attacks=["fgsm"], eps=[0.05, 0.3], batch_size=60, pgd_steps=5, pgd_restarts=1)
    first = evaluate_robustness([digits_runs["standard"]], cfg, tmp_path)
    res = first["models"]["Standard CNN"]["results"]["fgsm"]
    # one cached result per eps, not one for all (exact by design, unlike comparing two seeded runs' accuracies)
    assert sorted(p.name for p in tmp_path.glob("cache/*/fgsm__eps*.safetensors")) == [
        "fgsm__eps0.05.safetensors", "fgsm__eps0.3.safetensors"]

    def boom(*a, **k):
        raise AssertionError("attack re-run although cached")

    monkeypatch.setattr(rb, "run_attack", boom)
    again = evaluate_robustness([digits_runs["standard"]], cfg, tmp_path)
    assert again["models"]["Standard CNN"]["results"]["fgsm"] == res


def test_attack_device_is_checked_before_anything_runs():
    from eegsine.bench.robustness.configs import RobustnessConfig
    from eegsine.errors import UserError

    with pytest.raises(UserError, match="RobustnessConfig.device: 'gpu' is not auto, cpu, cuda or cuda:N"):
        RobustnessConfig(device="gpu")
    assert RobustnessConfig(device="cuda:1").device == "cuda:1"
