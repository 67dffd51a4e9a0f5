"""The torch-free runtime: bundle loading and its refusals, numpy DDIM vs diffusers, generation, classification."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import export_helpers as h
from eegsine.errors import UserError
from eegsine.runtime import DDIM, Bundle, EEGToImage, SineClassifier, select_providers


def _rewrite_manifest(bundle: Path, mutate) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    mutate(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_runtime_imports_no_torch():
    code = "import eegsine.runtime, sys; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_runtime_generates_and_classifies_in_a_torch_free_process():
    code = (
        "import sys, numpy as np\n"
        "from eegsine.runtime import EEGToImage, SineClassifier\n"
        f"g = EEGToImage({str(h.eeg_bundle())!r}, precision='int8', threads=1)\n"
        f"img = g(np.zeros((2, {h.N_CHANS}, {h.N_TIMES}), np.float32), num_inference_steps=3, generator=0).images\n"
        f"c = SineClassifier({str(h.clf_bundle())!r}, precision='int8')\n"
        "y = c.predict(np.full((3, 1, 8, 8), 0.5, np.float32))\n"
        "assert 'torch' not in sys.modules\n"
        "print(img.shape, float(img.min()) >= 0.0, float(img.max()) <= 1.0, y.shape)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(2, 1, 8, 8) True True (3,)"


# -- DDIM -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing",
     "clip_sample": False, "set_alpha_to_one": False},
    {"beta_schedule": "linear", "timestep_spacing": "leading", "steps_offset": 1, "clip_sample": True},
    {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "prediction_type": "v_prediction",
     "clip_sample": False},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "sample",
     "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": True, "clip_sample_range": 1.5},
])
@pytest.mark.parametrize("steps", [7, 25])
def test_numpy_ddim_matches_diffusers(cfg, steps):
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(num_train_timesteps=1000, **cfg)
    ref.set_timesteps(steps)
    mine = DDIM(dict(ref.config))
    ts = mine.set_timesteps(steps)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    xt = torch.from_numpy(x.copy())
    w = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    for t in ts:  # a deterministic stand-in model output that depends on x and t
        out = 0.7 * x + 0.3 * np.sin(w + t / 100.0).astype(np.float32)
        x = mine.step(out, int(t), x)
        xt = ref.step(torch.from_numpy(0.7 * xt.numpy() + 0.3 * np.sin(w + t / 100.0).astype(np.float32)),
                      int(t), xt).prev_sample
    np.testing.assert_allclose(x, xt.numpy(), rtol=1e-4, atol=1e-5)


def test_generate_matches_diffusers_pipeline_on_the_same_unet():
    """FP32 bundle vs the torch model (diffusers DDIMScheduler, same latents, same guidance, same null tokens)."""
    from eegsine.models.diffusion import EEGDiffusion

    model = EEGDiffusion.from_pretrained(h.diffusion_run())
    eeg = h.eeg_set().x[:3]
    gen = EEGToImage(h.eeg_bundle(), "fp32")
    lat = gen.initial_latents(3, seed=5)
    got = gen.generate(eeg, steps=6, guidance=2.0, latents=lat).images  # the older keyword names still work
    with torch.no_grad():
        ref = model.sample(model.embed(torch.from_numpy(eeg)), steps=6, guidance=2.0, sampler="ddim",
                           latents=torch.from_numpy(lat)).numpy()
    assert got.shape == ref.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(got, ref, atol=2e-4)
    assert np.abs(ref - ref.mean(0)).max() > 1e-3  # different trials give different images


# fp32 ONNX Runtime vs torch on the same tiny models and latents differ only in kernel summation order (fp32 eps
# 1.2e-7 per op): after 6 DDIM steps of UNet + guidance + the VAE decoder the images (in [0, 1]) differed by at most
# 4.8e-7 (seeds 0, 1, 2, 5; Intel Xeon, 1 thread). 1e-5 leaves 20x for other CPUs' kernels and batch-size-dependent
# kernel choices, and is 4 orders below what a different seed changes (max 0.48-0.64, mean 0.13-0.16, measured).
SEED_ATOL = 1e-5


def test_same_seed_same_images_in_torch_and_runtime():
    """One seed, one image: the torch pipeline and the runtime draw the same initial latents
    (eegsine.runtime.noise), per image, so the images agree within fp32 tolerance."""
    from eegsine.models.diffusion import EEGDiffusion

    model = EEGDiffusion.from_pretrained(h.diffusion_run())
    pipe = model.pipeline("ddim")
    pipe.set_progress_bar_config(disable=True)
    eeg = h.eeg_set().x[:3]
    gen = EEGToImage(h.eeg_bundle(), "fp32")
    np.testing.assert_array_equal(pipe.initial_latents(3, 5).numpy(), gen.initial_latents(3, 5))
    with torch.no_grad():
        ref = pipe(eeg=torch.from_numpy(eeg), num_inference_steps=6, guidance_scale=2.0, generator=5).images.numpy()
    got = gen(eeg, num_inference_steps=6, guidance_scale=2.0, generator=5)
    np.testing.assert_allclose(got.images, ref, atol=SEED_ATOL)
    assert np.abs(gen(eeg, num_inference_steps=6, guidance_scale=2.0, generator=6).images - ref).max() > 1e-2
    # batch composition does not change an image's noise: the first two of three == the two alone
    two = gen(eeg[:2], num_inference_steps=6, guidance_scale=2.0, seed=5).images
    np.testing.assert_allclose(two, got.images[:2], atol=SEED_ATOL)
    # a numpy Generator is drawn from as given, in both
    rt = gen(eeg, num_inference_steps=6, guidance_scale=2.0, generator=np.random.default_rng(9)).images
    with torch.no_grad():
        tg = pipe(eeg=torch.from_numpy(eeg), num_inference_steps=6, guidance_scale=2.0,
                  generator=np.random.default_rng(9)).images.numpy()
    np.testing.assert_allclose(rt, tg, atol=SEED_ATOL)


def test_eegsine_generate_draws_the_runtimes_noise(tmp_path, monkeypatch):
    """`eegsine generate --seed S` (training.generate.generate) gives the images the runtime gives for seed S."""
    import eegsine.training.generate as tg
    from eegsine.models.diffusion import EEGDiffusion

    eeg = h.eeg_set().x[:2]
    np.save(tmp_path / "eeg.npy", eeg)
    written = {}
    monkeypatch.setattr(tg, "save_png", lambda path, img: written.__setitem__(Path(path).name, img))
    model = EEGDiffusion.from_pretrained(h.diffusion_run()).requires_grad_(False)
    tg.generate(h.diffusion_run(), eeg_file=tmp_path / "eeg.npy", out_dir=tmp_path / "out", samples=2, steps=6,
                guidance=2.0, sampler="ddim", seed=4, model=model)
    # sample j of trial i is image i * samples + j of the batch: the runtime's for the trials repeated
    got = EEGToImage(h.eeg_bundle(), "fp32")(np.repeat(eeg, 2, axis=0), num_inference_steps=6, guidance_scale=2.0,
                                             generator=4).images
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(written[f"trial{i:03d}_s{j}.png"], got[2 * i + j], atol=SEED_ATOL)


def test_output_object_bare_array_and_latents():
    gen = EEGToImage(h.eeg_bundle(), "fp32")
    eeg = h.eeg_set().x[:2]
    out = gen(eeg, num_inference_steps=3)
    (bare,) = gen(eeg, num_inference_steps=3, return_dict=False)
    np.testing.assert_array_equal(out.images, bare)
    np.testing.assert_array_equal(gen.generate(eeg, steps=3, seed=0).images, bare)  # default seed 0; old names
    lat = gen(eeg, num_inference_steps=3, output_type="latent").images
    assert lat.shape == (2,) + gen.latent_shape
    np.testing.assert_allclose(gen.decode(lat), bare, atol=1e-6)
    with pytest.raises(UserError, match="not both"):
        gen(eeg, num_inference_steps=3, steps=3)
    with pytest.raises(UserError, match="not both"):
        gen(eeg, generator=1, seed=1)
    with pytest.raises(UserError, match="guidance_scale must be a finite number"):
        gen(eeg, guidance_scale="x")
    with pytest.raises(UserError, match="output_type must be np or latent"):
        gen(eeg, output_type="pil")


def test_providers_on_every_runtime_class():
    from eegsine.runtime import EEGDecoder, ImageClassifier

    cpu = ["CPUExecutionProvider"]
    assert SineClassifier is ImageClassifier
    for obj in (ImageClassifier(h.clf_bundle(), providers=cpu), EEGDecoder(h.eeg_bundle(), providers=cpu),
                EEGToImage(h.eeg_bundle(), providers=cpu)):
        assert obj.bundle.providers == cpu
    clf = ImageClassifier(h.clf_bundle(), providers=cpu)
    clf.predict(np.zeros((1, 1, 8, 8), np.float32))
    assert clf.bundle.session("classifier", "fp32").get_providers() == cpu
    with pytest.raises(UserError, match="providers must be a non-empty list"):
        EEGDecoder(h.eeg_bundle(), providers="CPUExecutionProvider")
    with pytest.raises(UserError, match="none of the providers"):  # at construction, not at the first call
        EEGToImage(h.eeg_bundle(), providers=["NoSuchExecutionProvider"])
    with pytest.raises(UserError, match="with an open Bundle"):
        ImageClassifier(Bundle(h.clf_bundle()), providers=cpu)


def test_int8_generation_close_to_fp32():
    from eegsine.export.quantize import sqnr

    eeg = h.eeg_set().x[:2]
    a, b = EEGToImage(h.eeg_bundle(), "fp32"), EEGToImage(h.eeg_bundle(), "int8")
    lat = a.initial_latents(2, seed=1)
    i32, i8 = a(eeg, num_inference_steps=6, latents=lat).images, b(eeg, num_inference_steps=6, latents=lat).images
    assert sqnr(i32, i8) > 15.0  # measured 27 dB on this tiny model


def test_classifier_runtime_matches_torch():
    from eegsine.data import load_images
    from eegsine.models.classifier import Classifier

    model = Classifier.from_pretrained(h.classifier_run())
    x = load_images("digits").test_x[:200]
    clf = SineClassifier(h.clf_bundle(), "fp32", threads=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clf.scores(x), ref, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(x), ref.argmax(1))
    assert clf.bundle.session("classifier", "fp32").get_session_options().intra_op_num_threads == 1
    agree = (SineClassifier(h.clf_bundle(), "int8").predict(x) == ref.argmax(1)).mean()
    assert agree >= 0.97


def test_provider_selection_on_this_machine():
    import onnxruntime as ort

    chosen = select_providers()
    assert chosen[-1] == "CPUExecutionProvider" and set(chosen) <= set(ort.get_available_providers())
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="none of the providers"):
            select_providers(["CUDAExecutionProvider"])


# -- bad input: clear error, nothing executed -----------------------------------------------------------
@pytest.mark.parametrize("eeg, msg", [
    (np.zeros((2, h.N_CHANS + 1, h.N_TIMES), np.float32), "expected shape"),
    (np.zeros((2, h.N_CHANS, h.N_TIMES)), "expected float32"),
    (np.zeros((h.N_CHANS, h.N_TIMES), np.float32), "expected shape"),
    (np.where(np.arange(2 * h.N_CHANS * h.N_TIMES).reshape(2, h.N_CHANS, h.N_TIMES) == 70, np.nan,
              0.0).astype(np.float32),
     r"1 trial\(s\) contain NaN/inf \(first: trial 0\)"),
    ([[0.0]], "expected a numpy array"),
])
def test_generate_rejects_bad_eeg_before_running_anything(eeg, msg):
    gen = EEGToImage(h.eeg_bundle(), "fp32")
    with pytest.raises(UserError, match=msg):
        gen.generate(eeg, steps=2)
    assert gen.bundle._sessions == {}


def test_classifier_rejects_bad_images():
    clf = SineClassifier(h.clf_bundle())
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        clf.predict(np.full((1, 1, 8, 8), 2.0, np.float32))
    with pytest.raises(UserError, match="shape"):
        clf.predict(np.zeros((1, 3, 8, 8), np.float32))
    assert clf.bundle._sessions == {}


def test_hash_mismatch_is_refused(tmp_path):
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    data = bytearray((b / "classifier.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "classifier.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"classifier\.int8\.onnx: sha256 .* does not match"):
        Bundle(b)


def test_truncated_onnx_with_matching_hash_gives_clear_error(tmp_path):
    from eegsine.io import sha256_file

    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    p = b / "classifier.fp32.onnx"
    p.write_bytes(p.read_bytes()[:1000])
    _rewrite_manifest(b, lambda m: m["files"]["classifier.fp32.onnx"].update(sha256=sha256_file(p)))
    clf = SineClassifier(b, "fp32")
    with pytest.raises(UserError, match="classifier.fp32.onnx: not a loadable ONNX model"):
        clf.predict(np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx", "link.onnx"])
def test_manifest_paths_escaping_the_bundle_are_refused(tmp_path, rel):
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    (tmp_path / "outside.onnx").write_bytes((b / "classifier.fp32.onnx").read_bytes())
    if rel == "link.onnx":
        os.symlink(tmp_path / "outside.onnx", b / "link.onnx")

    def mutate(m):
        m["files"][rel] = m["files"].pop("classifier.fp32.onnx")
        m["models"]["classifier"]["files"]["fp32"] = rel

    _rewrite_manifest(b, mutate)
    with pytest.raises(UserError, match="escapes the bundle folder|relative to the bundle folder|resolves outside"):
        Bundle(b)


def test_missing_or_foreign_manifest(tmp_path):
    with pytest.raises(UserError, match="not an eegsine bundle"):
        Bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "eegsine-bundle", "version": 99, "files": {}}))
    with pytest.raises(UserError, match="version 99"):
        Bundle(tmp_path)


def test_missing_precision_named():
    b = Bundle(h.eeg_bundle())
    with pytest.raises(UserError, match="bundle has no classifier"):
        SineClassifier(b)
    with pytest.raises(UserError, match="precision must be one of"):
        b.model_path("unet", "fp8")


# -- a device install: numpy + onnxruntime only --------------------------------------------------------
def _without(blocked: set[str], body: str, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    """``body`` run in a process where the ``blocked`` packages cannot be imported (as if not installed)."""
    code = ("import sys, importlib.abc\n"
            f"BLOCK = {sorted(blocked)!r}\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in BLOCK:\n"
            "            raise ImportError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Block())\n" + body)
    return subprocess.run([sys.executable, "-P", "-c", code, *args], capture_output=True, text=text, timeout=120)


TOOLKIT_AND_STREAM = {"torch", "diffusers", "scipy", "sklearn", "tqdm", "matplotlib", "mne", "pylsl", "brainflow",
                      "edfio", "threadpoolctl"}


def test_progress_without_tqdm_is_one_plain_line():
    body = ("import numpy as np\n"
            "from eegsine.runtime import EEGToImage\n"
            "g = EEGToImage(sys.argv[1], threads=1)\n"
            f"out = g(np.zeros((1, {h.N_CHANS}, {h.N_TIMES}), np.float32), num_inference_steps=3, progress=True)\n"
            "print(out.images.shape, 'tqdm' in sys.modules)\n")
    r = _without(TOOLKIT_AND_STREAM, body, str(h.eeg_bundle()), text=False)  # bytes: \r as written
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == b"(1, 1, 8, 8) False"
    assert r.stderr == b"\rDDIM step 1/3\rDDIM step 2/3\rDDIM step 3/3\n"  # one line, rewritten in place


def test_every_optional_runtime_import_is_one_line_naming_its_extra(tmp_path):
    """Each package the device wing imports only when asked (mne, BrainFlow, pylsl, scipy, onnxruntime): missing,
    it is one UserError line naming the package and the pip extra that brings it."""
    (tmp_path / "rec.fif").write_bytes(b"x")
    body = ("from eegsine.errors import UserError\n"
            "from eegsine.runtime import preprocessing, recordings, sources, stream, select_providers\n"
            "calls = {\n"
            "    'mne': lambda: recordings.read_recording(sys.argv[1]),\n"
            "    'montage': lambda: preprocessing.standard_montage(),\n"
            "    'brainflow': lambda: recordings.import_brainflow(),\n"
            "    'pylsl': lambda: sources.LSLSource('eeg'),\n"
            "    'lsl-clock': lambda: stream._lsl_clock(),\n"
            "    'scipy': lambda: preprocessing.PreprocessingSpec.design(250.0, ['Cz'], l_freq=1.0),\n"
            "    'onnxruntime': lambda: select_providers(),\n"
            "}\n"
            "for k, f in calls.items():\n"
            "    try:\n"
            "        f()\n"
            "        print(k, 'RAN')\n"
            "    except UserError as e:\n"
            "        print(k, '|', str(e).replace(chr(10), ' NEWLINE '))\n")
    r = _without(TOOLKIT_AND_STREAM | {"onnxruntime"}, body, str(tmp_path / "rec.fif"))
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    want = {"mne": ("MNE-Python", '".[stream]"'), "montage": ("MNE-Python", '".[stream]"'),
            "brainflow": ("BrainFlow", '".[stream]"'), "pylsl": ("pylsl", '".[stream]"'),
            "lsl-clock": ("pylsl", '".[stream]"'), "scipy": ("scipy", '".[cpu]"'),
            "onnxruntime": ("onnxruntime", '".[runtime]"')}
    assert set(got) == set(want), r.stdout
    for k, (package, extra) in want.items():
        assert got[k].startswith("| ") and "NEWLINE" not in got[k], (k, got[k])
        assert f"needs {package}, which is not installed here" in got[k] and extra in got[k], (k, got[k])
