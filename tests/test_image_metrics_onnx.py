"""Standard image metrics from local ONNX files (issue #14, part 5), tested with stand-in networks.

The real Inception-v3 / LPIPS-AlexNet / ImageNet classifiers need torchvision, which does not
import beside the CPU torch here; small torch networks exported with the same contract (names,
metadata) stand in for them. Each figure from the ONNX path must equal the same formula applied
to the torch stand-in's outputs on the documented preparation (repeat the channel, bilinear
resize, map [0, 1] to the declared range).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.data import EEGSet, load_images
from eegsine.errors import UserError
from eegsine.metrics.images import bootstrap_ci, frechet_distance, inception_score, score_set
from eegsine.metrics.image_nets import StandardNets, load_image_net

SIZE = 12        # the stand-ins' input H x W (the digits are 8 x 8: the resize is exercised)
D, K, K_CLF = 48, 7, 13


class FeatNet(nn.Module):
    """Inception stand-in: (N, 3, 12, 12) -> features (N, 48) (or pool3-like (N, 48, 1, 1)), logits (N, 7)."""

    def __init__(self, pool4d: bool = False, logits: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(128, D), nn.Linear(D, K)
        self.pool4d, self.logits = pool4d, logits

    def forward(self, x):
        f = 4.0 * self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4).flatten(1))
        out = f[:, :, None, None] if self.pool4d else f
        return (out, 20.0 * self.head(f)) if self.logits else out  # x20: IS 1.22 on the noisy digits, not 1.00


class LpipsNet(nn.Module):
    """LPIPS stand-in: two images -> per-pair distance (N, 1, 1, 1), like the lpips package."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, a, b):
        fa, fb = F.normalize(self.conv(a), dim=1), F.normalize(self.conv(b), dim=1)
        return ((fa - fb) ** 2).sum(1).mean(dim=(1, 2))[:, None, None, None]


class ClfNet(nn.Module):
    """Classifier stand-in: (N, 3, 12, 12) -> logits (N, 13), more logits than the data set has classes."""

    def __init__(self, k: int = K_CLF):
        super().__init__()
        torch.manual_seed(2)
        self.fc = nn.Linear(3 * SIZE * SIZE, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def export(module: nn.Module, path: Path, inputs: dict[str, tuple], outputs: list[str], meta: dict[str, str],
           dynamic_batch: bool = True) -> Path:
    import onnx

    args = tuple(torch.rand(s) for s in inputs.values())
    axes = {n: {0: "batch"} for n in [*inputs, *outputs]} if dynamic_batch else None
    torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=outputs,
                      dynamic_axes=axes, dynamo=False, opset_version=17)
    m = onnx.load(str(path))
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


def prep(x: np.ndarray, lo: float = -1.0) -> torch.Tensor:
    """The documented preparation, spelled out: 1 -> 3 channels, bilinear resize, [0, 1] -> [lo, 1]."""
    t = torch.from_numpy(x).float().repeat(1, 3, 1, 1)
    t = F.interpolate(t, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return t * (1.0 - lo) + lo


DIGITS = [str(c) for c in range(10)]
CLASS_MAP = {str(c): int(v) for c, v in zip(range(10), [12, 3, 0, 7, 9, 1, 11, 4, 6, 2])}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    img = {"images": (2, 3, SIZE, SIZE)}
    (d / "classes.json").write_text(json.dumps({**CLASS_MAP, "n99999999": 5}))  # extra keys are fine
    return {
        "feature": export(FeatNet(), d / "inc.onnx", img, ["features", "logits"],
                          {"eegsine.name": "standin-inception", "eegsine.input_range": "-1,1"}),
        "feature01": export(FeatNet(pool4d=True, logits=False), d / "pool3_fixed.onnx", {"images": (1, 3, SIZE, SIZE)},
                            ["features"], {"eegsine.input_range": "0,1"}, dynamic_batch=False),
        "lpips": export(LpipsNet(), d / "lp.onnx", {"in0": img["images"], "in1": img["images"]}, ["distance"],
                        {"eegsine.name": "standin-lpips"}),
        "classifier": export(ClfNet(), d / "clf.onnx", img, ["logits"], {"eegsine.name": "standin-clf"}),
        "classes": d / "classes.json",
    }


@pytest.fixture(scope="module")
def digits():
    im = load_images("digits")
    x, y = im.test_x[:60], im.test_y[:60].astype(np.int64)
    noisy = np.clip(x + np.random.default_rng(0).normal(scale=0.3, size=x.shape), 0, 1).astype(np.float32)
    return x, noisy, y


def _nets(files) -> StandardNets:
    return StandardNets.load(feature_net=files["feature"], lpips_net=files["lpips"], classifier_net=files["classifier"],
                             classifier_classes=files["classes"])


# -- (a) the ONNX path equals the formulas on the torch stand-ins' outputs ----------------------------------
def test_onnx_figures_equal_the_formulas_on_the_torch_standins(files, digits):
    x, noisy, y = digits
    nets = _nets(files).bind(DIGITS, x)
    std = nets.per_trial(noisy, x, y)
    assert list(std) == ["fid_standin-inception", "is_standin-inception", "lpips_standin-lpips", "acc_standin-clf"]
    n, rng = len(y), np.random.default_rng(3)
    dom = {"features": rng.normal(size=(n, 4)), "probs": np.full((n, 10), 0.1)}  # domain figures are not under test
    r = score_set(dom, dom, y, np.zeros(n), np.ones(n), n_boot=40, seed=0, std=std)
    with torch.no_grad():
        fg, lg = FeatNet()(prep(noisy))
        fr, _ = FeatNet()(prep(x))
        lp = LpipsNet()(prep(noisy), prep(x)).flatten()
        pred = ClfNet()(prep(noisy))[:, [CLASS_MAP[c] for c in DIGITS]].argmax(1)
    fg, fr = fg.double().numpy(), fr.double().numpy()
    probs = F.softmax(lg.double(), dim=1).numpy()
    ref = {"fid_standin-inception": lambda i: frechet_distance(fg[i], fr[i]),
           "is_standin-inception": lambda i: inception_score(probs[i]),
           "lpips_standin-lpips": lambda i: float(lp.double().numpy()[i].mean()),
           "acc_standin-clf": lambda i: float((pred.numpy()[i] == y[i]).mean())}
    for k, (key, fn) in enumerate(ref.items()):
        assert r[key] == pytest.approx(fn(np.arange(n)), rel=1e-5, abs=1e-9), key
        # the same bootstrap: the standard figures follow the 5 domain figures' seeds
        assert r[key + "_ci"] == pytest.approx(list(bootstrap_ci(fn, n, 40, 5 + k)), rel=1e-4, abs=1e-9), key
        lo, hi = r[key + "_ci"]
        assert lo <= r[key] <= hi, key
    assert 0 < r["fid_standin-inception"] and 1 <= r["is_standin-inception"] <= K and r["lpips_standin-lpips"] > 0
    same = nets.per_trial(x, x, y)
    assert same["lpips_standin-lpips"][0] == pytest.approx(np.zeros(n), abs=1e-6)
    assert frechet_distance(*same["fid_standin-inception"]) == pytest.approx(0.0, abs=1e-6)


def test_fixed_batch_pool3_shape_and_zero_one_range(files, digits):
    """A graph with batch 1, (N, D, 1, 1) features, input range 0,1 and no logits: FID only, named by its stem."""
    x, _, y = digits
    nets = StandardNets.load(feature_net=files["feature01"])
    assert nets.feature.batch == 1 and nets.feature.name == "pool3-fixed"
    out = nets.outputs(x[:5])
    with torch.no_grad():
        want = FeatNet(pool4d=True, logits=False)(prep(x[:5], lo=0.0)).flatten(1).double().numpy()
    np.testing.assert_allclose(out["features"], want, rtol=1e-5, atol=1e-6)
    assert "probs" not in out and list(nets.per_trial(x[:5], x[:5], y[:5])) == ["fid_pool3-fixed"]


def test_fid_in_trial_space_equals_the_eigenvalue_formula():
    """Fewer samples than dimensions: the nuclear-norm route gives the eigenvalue formula's number."""
    rng = np.random.default_rng(0)
    for n1, n2, d in ((12, 12, 48), (30, 20, 200), (5, 9, 64)):
        f1, f2 = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 1.3 + 0.2
        s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
        tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
        want = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
        assert frechet_distance(f1, f2) == pytest.approx(want, rel=1e-6)


# -- (b) evaluate_generation: the names reach metrics.json and the table -------------------------------------
def _eeg_set() -> EEGSet:
    im = load_images("digits")
    rng = np.random.default_rng(0)
    n = 40
    labels = im.train_y[:n].astype(np.int64)
    part = np.array(["train", "train", "val", "test"])[np.arange(n) % 4]
    return EEGSet(name="digits-vep", x=rng.normal(size=(n, 4, 32)).astype(np.float32), y=labels,
                  subject=np.zeros(n, np.int64), image=np.arange(n), sfreq=64.0, ch_names=[f"c{i}" for i in range(4)],
                  classes=DIGITS, splits={s: np.flatnonzero(part == s) for s in ("train", "val", "test")},
                  images=im.train_x[:n], image_labels=labels).check()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A diffusion run with random weights (the metrics' plumbing is under test, not image quality)."""
    import export_helpers as h
    from eegsine.metrics.images import DomainCNN, DomainCNNConfig

    model = h.tiny_diffusion()
    path = tmp_path_factory.mktemp("gen") / "run"
    model.eval().save_pretrained(path / "model")
    domain = DomainCNN(DomainCNNConfig(dataset="digits", image_size=8, width=4, feat_dim=8)).eval()
    return path, _eeg_set(), domain


def test_evaluate_generation_names_each_network_in_metrics_and_table(run, files):
    from eegsine.metrics.images import evaluate_generation

    path, ds, domain = run
    r = evaluate_generation(path, ds, domain=domain, domain_name="domain-cnn-digits", max_trials=8, n_boot=5,
                            standard=_nets(files))
    keys = ["fid_standin-inception", "is_standin-inception", "lpips_standin-lpips", "acc_standin-clf"]
    assert r["metric_keys"][5:] == keys
    saved = json.loads((path / "metrics.json").read_text())["generation"]
    for row in [*saved["conditions"].values(), *saved["per_class"]["eeg"].values()]:
        for k in keys:
            assert k in row and k + "_ci" in row and row["n"] >= 1, k
    assert all(np.isfinite(saved["conditions"][c][k]) for c in saved["conditions"] for k in keys)
    assert "fid_standin-inception_class_mean" in saved["conditions"]["eeg"]
    assert 0 <= saved["ground_truth"]["acc_standin-clf"] <= 1 and "is_standin-inception" in saved["ground_truth"]
    nets = saved["standard_networks"]
    assert nets["feature"]["name"] == "standin-inception" and nets["feature"]["input"] == [3, SIZE, SIZE]
    assert nets["feature"]["input_range"] == "-1,1" and len(nets["lpips"]["sha256"]) == 64
    assert nets["classifier"]["class_map"] == str(files["classes"])
    md = (path / "generation.md").read_text()
    header = [line for line in md.splitlines() if line.startswith("| condition |")][0]
    assert all(f" {k} " in header for k in keys) and "| n |" in header
    assert "**standin-inception** (local ONNX file `inc.onnx`" in md and "**standin-lpips**" in md
    assert "**standin-clf**" in md and "Per-class fid_standin-inception mean" in md


# -- (c) bad files are one-line UserErrors ---------------------------------------------------------------------
def _one_line(excinfo, *needles) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg


@pytest.mark.parametrize("case, role, message", [
    ("not-onnx", "feature", "not a loadable ONNX model"),
    ("missing", "feature", "does not exist"),
    ("no-features", "feature", "needs an output named 'features'"),
    ("rank-2", "feature", "of rank 2"),
    ("range", "feature", "eegsine.input_range='0,255'"),
    ("one-input", "lpips", "takes 2 image input(s)"),
    ("no-logits", "classifier", "needs an output named 'logits'"),
])
def test_bad_network_files_are_one_line_errors(tmp_path, case, role, message):
    f = tmp_path / f"{case}.onnx"
    img = {"images": (2, 3, SIZE, SIZE)}
    if case == "not-onnx":
        f.write_bytes(b"these are not the bytes of an ONNX model\n" * 4)
    elif case == "no-features":
        export(FeatNet(), f, img, ["feats", "logits"], {})
    elif case == "rank-2":
        export(nn.Linear(10, D), f, {"images": (2, 10)}, ["features"], {})
    elif case == "range":
        export(FeatNet(), f, img, ["features", "logits"], {"eegsine.input_range": "0,255"})
    elif case in ("one-input", "no-logits"):
        export(ClfNet(), f, img, ["scores"], {})
    with pytest.raises(UserError) as e:
        load_image_net(f, role)
    _one_line(e, f, message)


def test_bad_class_maps_are_one_line_errors(files, tmp_path, digits):
    x = digits[0]
    cases = {"lacks": ({k: v for k, v in CLASS_MAP.items() if k != "9"}, "lacks 1 of the data set's 10 classes"),
             "range": ({**CLASS_MAP, "9": K_CLF}, f"outside the classifier's {K_CLF} logits"),
             "shared": ({**CLASS_MAP, "9": CLASS_MAP["0"]}, "share one logit index"),
             "list": ([1, 2, 3], "expected a JSON object")}
    for name, (content, message) in cases.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(content))
        with pytest.raises(UserError) as e:
            StandardNets.load(classifier_net=files["classifier"], classifier_classes=f).bind(DIGITS, x)
        _one_line(e, f, message)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError) as e:
        StandardNets.load(classifier_net=files["classifier"], classifier_classes=tmp_path / "bad.json")
    _one_line(e, tmp_path / "bad.json", "not a JSON file")
    with pytest.raises(UserError) as e:  # 13 logits, 10 classes, no map
        StandardNets.load(classifier_net=files["classifier"]).bind(DIGITS, x)
    _one_line(e, files["classifier"], "13 logits for 10 classes", "--classifier-classes")
    # K == number of classes: logit i is class i
    f10 = export(ClfNet(k=10), tmp_path / "clf10.onnx", {"images": (2, 3, SIZE, SIZE)}, ["logits"], {})
    assert StandardNets.load(classifier_net=f10).bind(DIGITS, x).class_index.tolist() == list(range(10))


def test_class_map_is_checked_before_anything_is_generated(run, files, tmp_path):
    import shutil

    from eegsine.metrics.images import evaluate_generation

    path, ds, domain = run
    fresh = tmp_path / "run"
    shutil.copytree(path / "model", fresh / "model")
    f = tmp_path / "short.json"
    f.write_text(json.dumps({"0": 1}))
    with pytest.raises(UserError, match="lacks 9 of"):
        evaluate_generation(fresh, ds, domain=domain, max_trials=4, n_boot=2,
                            standard=StandardNets.load(classifier_net=files["classifier"], classifier_classes=f))
    assert not (fresh / "metrics.json").exists() and not (fresh / "generation.md").exists()


# -- (d) the CLI flags reach it -----------------------------------------------------------------------------
def test_generate_cli_flags_reach_the_standard_metrics(run, files, tmp_path, monkeypatch, capsys):
    import shutil

    import eegsine.training.generate as G
    from eegsine.commands.main import main

    path, ds, domain = run
    fresh = tmp_path / "run"
    shutil.copytree(path / "model", fresh / "model")
    monkeypatch.setattr(G, "load_run_data", lambda run: ds)
    monkeypatch.setattr(G, "domain_for_run", lambda run, ds, logger=None: (domain, "domain-cnn-digits", {}))
    base = ["generate", "--run", str(fresh), "--split", "test", "--samples", "1", "--max-trials", "2", "--steps", "1",
            "--out", str(tmp_path / "gen")]
    flags = ["--feature-net", str(files["feature"]), "--lpips-net", str(files["lpips"]),
             "--classifier-net", str(files["classifier"]), "--classifier-classes", str(files["classes"])]
    # a bad file fails in one line before any image is written; the flags need --evaluate
    rc = main([*base, "--evaluate", "--feature-net", str(tmp_path / "nothing.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nothing.onnx: feature network file does not exist" in err, err
    assert not (tmp_path / "gen").exists()
    rc = main([*base, *flags])
    err = capsys.readouterr().err
    assert rc == 2 and "--feature-net scores images; it needs --evaluate" in err and not (tmp_path / "gen").exists()
    assert main([*base, "--evaluate", "--eval-trials", "6", "--n-boot", "3", *flags]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{"):])
    keys = ["fid_standin-inception", "is_standin-inception", "lpips_standin-lpips", "acc_standin-clf"]
    assert all(k in printed["eeg"] for k in keys), printed["eeg"]
    saved = json.loads((fresh / "metrics.json").read_text())["generation"]
    assert saved["n_trials"] == 6 and saved["metric_keys"][5:] == keys
    assert saved["standard_networks"]["lpips"]["file"] == str(files["lpips"])
