"""Completeness (braindecode style): every registered model and data set runs through the real path.

Models: each registry entry's example configs -> save_pretrained / from_pretrained (through a run
folder's ``model/``) round trip exact, then every module ``export_modules`` returns -> ONNX -> ORT
parity. Known exceptions (``deploys == ()``), commented in :data:`NOT_DEPLOYED`.
Data sets: each registered name loads a format-exact stand-in written here (or the real, offline data).
Attacks: every entry of ``eegsine.attacks.registry.REGISTRY`` (evaluated and training attacks) builds and
runs in ``tests/test_attacks.py::test_every_registered_attack_stays_in_the_eps_ball``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eegsine.data import REGISTRY as DATA
from eegsine.models.protocol import Provenance, load_pretrained
from eegsine.models.registry import REGISTRY

# models that export nothing on their own, and why
NOT_DEPLOYED = {
    "eeg-encoder": "exported inside eeg-diffusion's eeg_encoder contract, fused with its token mapper",
    "image-encoder": "training only: the image side of the alignment",
    "domain-cnn": "evaluation only: the feature network of the *_domain metrics",
}

CASES = [(kind, i) for kind, e in REGISTRY.items() for i in range(len(e.examples()))]


def _inputs(model, cfg) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if cfg.KIND == "eeg-encoder":
        return torch.randn(3, cfg.n_chans, cfg.n_times, generator=g)
    c = getattr(cfg, "in_channels", getattr(cfg, "in_chans", 1))
    return torch.rand(3, c, cfg.image_size, cfg.image_size, generator=g)


def test_every_model_kind_has_examples_and_says_what_it_deploys():
    from eegsine.runtime.contracts import CONTRACTS

    for kind, e in REGISTRY.items():
        assert e.examples(), kind
        assert all(cfg.KIND == kind for cfg in e.examples()), kind
        assert e.config().KIND == kind
        assert set(e.deploys) <= set(CONTRACTS), kind
        assert bool(e.deploys) != (kind in NOT_DEPLOYED), f"{kind}: deploys nothing and is not a listed exception"


@pytest.mark.parametrize("kind, i", CASES)
def test_model_round_trip_export_and_ort_parity(kind, i, tmp_path):
    from eegsine.export.onnx_export import export_onnx, parity

    torch.manual_seed(i)
    e = REGISTRY[kind]
    cfg = e.examples()[i]
    prov = Provenance(trained_by="test", data="digits", data_options={"seed": i}, seed=i)

    def modules(m):
        if kind == "eeg-diffusion":
            return {"vae": m.vae, "unet": m.unet, "token_mapper": m.token_mapper, "eeg": m.eeg_encoder}
        return {"model": m}

    if kind == "eeg-diffusion":  # a diffusers pipeline (not an nn.Module) that deploys its EEG encoder too
        enc = REGISTRY["eeg-encoder"].model_class().from_config(REGISTRY["eeg-encoder"].examples()[0]).eval()
        model = e.model_class().from_config(cfg, encoder=enc)
    else:
        model = e.model_class().from_config(cfg).eval()
    with torch.no_grad():  # move BatchNorm statistics off their init so the round trip compares real buffers
        for mod in modules(model).values():
            saved = mod.state_dict()
            for name, b in mod.named_buffers():
                if name in saved and b.dtype.is_floating_point:  # persistent ones (mean/std come from the config)
                    b.add_(torch.rand_like(b))
    model.save_pretrained(tmp_path / "run" / "model", provenance=prov)
    back = load_pretrained(tmp_path / "run")  # a run folder resolves to its model/
    assert type(back) is type(model) and back.cfg == cfg and back.provenance == prov
    for name, mod in modules(back).items():
        a, b = modules(model)[name].state_dict(), mod.state_dict()
        assert not mod.training and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    if kind == "eeg-diffusion":
        x = torch.randn(2, enc.cfg.n_chans, enc.cfg.n_times, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(back(eeg=x, seed=3).images, model(eeg=x, seed=3).images, rtol=0, atol=0)
    else:
        x = _inputs(model, cfg)
        with torch.no_grad():
            torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    mods = back.export_modules(max_batch=4)
    assert set(mods) == set(e.deploys)
    for name, (contract, module) in mods.items():
        err = parity(module, contract, export_onnx(module, contract, tmp_path / f"{name}.onnx"))
        assert max(v for k, v in err.items() if k.endswith("max_abs")) <= 1e-4, (name, err)


def test_from_pretrained_refuses_another_kind_and_a_half_written_folder(tmp_path):
    from eegsine.errors import UserError
    from eegsine.models.classifier import Classifier
    from eegsine.models.eeg_encoder import EEGEncoder

    enc = REGISTRY["eeg-encoder"].model_class().from_config(REGISTRY["eeg-encoder"].examples()[0])
    enc.save_pretrained(tmp_path / "enc")
    with pytest.raises(UserError, match="eeg-encoder"):
        Classifier.from_pretrained(tmp_path / "enc")
    (tmp_path / "enc" / "config.json").unlink()  # config.json is written last: without it the folder is incomplete
    with pytest.raises(UserError, match="not a model folder"):
        EEGEncoder.from_pretrained(tmp_path / "enc")


# -- data sets ------------------------------------------------------------------------------------
def _data_case(name: str, tmp_path) -> tuple[str, dict]:
    """(registry name to load, options) on a stand-in in the data set's real format, or its real offline data."""
    import export_helpers as h
    from test_data_eeg import make_cvpr, write_ts_problem
    from test_data_images import make_cifar_py, make_idx_set

    if name in ("mnist", "fashion-mnist"):
        make_idx_set(tmp_path / name, gz=name == "fashion-mnist")
        return name, {"root": str(tmp_path / name)}
    if name == "digits":
        return name, {}
    if name == "cifar10":
        make_cifar_py(tmp_path / "cifar-10-batches-py")
        return name, {"root": str(tmp_path / "cifar-10-batches-py")}
    if name == "synthetic-vep":
        return name, {"image_set": "digits", "n_chans": 8, "n_times": 64, "sfreq": 128.0, "n_images_per_class": 4,
                      "n_subjects": 2, "progress": False}
    if name == "eegcvpr40":
        return name, {"root": str(make_cvpr(tmp_path / "cvpr")), "bandpass": None}
    if name == "uea":
        write_ts_problem(tmp_path)
        return "uea:Tiny", {"root": str(tmp_path), "sfreq": 50.0, "val_fraction": 0.25}
    if name == "raw":
        return f"raw:{h.recording('fif')}", {"tmin": 0.0, "tmax": 0.25}
    raise AssertionError(f"data set {name!r} is registered but has no completeness case here: add one")


@pytest.mark.parametrize("name", sorted(DATA))
def test_every_data_set_loads_through_the_registry(name, tmp_path):
    from eegsine.data import load_eeg, load_images

    spec_name, opts = _data_case(name, tmp_path)
    if DATA[name].kind == "image":
        s = load_images(spec_name, **opts)
        n, c, hh, ww = s.train_x.shape
        assert n > 0 and hh == ww and s.train_x.dtype == np.float32 and 0.0 <= s.train_x.min() <= s.train_x.max() <= 1.0
        assert len(s.train_y) == n and s.test_x.shape[1:] == (c, hh, ww) and int(s.train_y.max()) < len(s.classes)
    else:
        ds = load_eeg(spec_name, **opts).check()
        assert ds.x.ndim == 3 and len(ds.x) == len(ds.y) and ds.sfreq > 0 and np.isfinite(ds.x).all()
        assert {"train", "test"} <= set(ds.splits) and ds.preprocessing is not None
