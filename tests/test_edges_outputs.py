"""Output paths, temporaries and the user's local model folders at the edges (issue #27, items 6 and 7).

* An OS error on an output path (read-only storage, a file where a folder must go, a folder where
  a file must go) is one :class:`UserError` line naming the path, found before the work it would
  waste: ``export --out``, ``generate --out``, a run's ``.lock``, any atomic write.
* Every temporary the project creates is one the next run sweeps: safetensors' own ``.tmpXXXXXX``
  (left by a kill inside ``save_file``) and a killed export's staging folder beside the bundle.
* A malformed local Stable Diffusion (``SD/vae``, ``SD/unet``) or CLIP folder is refused by the
  project, naming the file, before diffusers or transformers read it.

The read-only disk is real where possible: a read-only tmpfs (as root), a 0555 folder (not root);
else EROFS is raised at the OS calls that create files and folders.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import export_helpers as h
from eegsine.errors import UserError


def _one_line(e: BaseException, *needles: str) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def _cli_one_line_exit_2(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# -- a folder no file can be created in -----------------------------------------------------------------
@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """(folder, the words of its error): a read-only tmpfs as root, a 0555 folder otherwise, EROFS simulated
    at os.open/os.mkdir where root cannot mount."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d, "permission denied"
        d.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True)
    if done.returncode == 0:
        try:
            yield d, "read-only file system"
        finally:
            subprocess.run(["umount", str(d)], check=True)
        return

    def refuse(fn):
        def wrapped(path, *a, **kw):
            if str(path).startswith(str(d)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return fn(path, *a, **kw)
        return wrapped

    monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))
    monkeypatch.setattr(os, "open", refuse(os.open))
    yield d, "read-only file system"


# -- OS errors on output paths ----------------------------------------------------------------------------
PATH_CASES = {  # where the file should go -> the words of the error
    "its folder is a file": (lambda t: t / "taken" / "out.json", "a file is in the way of a folder"),
    "a folder above is a file": (lambda t: t / "taken" / "sub" / "out.json", "a part of its path is a file"),
    "it is a folder": (lambda t: t / "folder.json", "it is a folder, not a file"),
}


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_atomic_write_onto_a_path_in_the_way_is_one_line(tmp_path, case):
    from eegsine.io import atomic_write_text

    (tmp_path / "taken").write_text("a file")
    (tmp_path / "folder.json").mkdir()
    where, words = PATH_CASES[case]
    with pytest.raises(UserError) as e:
        atomic_write_text(where(tmp_path), "{}")
    _one_line(e.value, str(where(tmp_path)), words)
    assert (tmp_path / "taken").read_text() == "a file" and (tmp_path / "folder.json").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "taken"]  # no temp file left


def test_run_lock_that_is_a_folder_is_one_line(tmp_path):
    from eegsine.runs.folder import LOCK_FILE, RunFolder

    (tmp_path / LOCK_FILE).mkdir()
    with pytest.raises(UserError) as e:
        with RunFolder(tmp_path):
            pass
    _one_line(e.value, str(tmp_path / LOCK_FILE), "it is a folder")
    assert (tmp_path / LOCK_FILE).is_dir()  # the user's folder is not removed


def test_export_onto_read_only_storage_exits_2_before_the_work(read_only, capsys, monkeypatch):
    from eegsine.commands.main import main
    import eegsine.export.bundle as B

    ro, words = read_only
    monkeypatch.setattr(B, "export_onnx", lambda *a, **k: pytest.fail("exported before the output was checked"))
    rc = main(["export", "--classifier", str(h.classifier_run()), "--out", str(ro / "bundle")])
    _cli_one_line_exit_2(capsys, rc, str(ro), words)


GENERATE_OUT = {  # --out -> the words of the error
    "a file": (lambda t, ro: t / "grid.png", "exists and is not a folder"),
    "under a file": (lambda t, ro: t / "grid.png" / "out", "a part of its path is a file"),
    "read-only storage": (lambda t, ro: ro / "generated", None),
}


@pytest.mark.parametrize("case", list(GENERATE_OUT))
def test_generate_out_that_cannot_be_written_is_refused_before_sampling(tmp_path, read_only, case):
    from eegsine.training.generate import generate

    ro, ro_words = read_only
    model = h.tiny_diffusion()
    sampled = []
    real = model.sample
    model.sample = lambda *a, **k: sampled.append(1) or real(*a, **k)
    (tmp_path / "grid.png").write_bytes(b"not a folder")
    eeg = tmp_path / "eeg.npy"
    np.save(eeg, np.random.default_rng(0).standard_normal((1, 4, 32)).astype(np.float32))
    where, words = GENERATE_OUT[case]
    out = where(tmp_path, ro)
    with pytest.raises(UserError) as e:
        generate(tmp_path / "run", eeg_file=eeg, out_dir=out, samples=1, steps=2, model=model)
    _one_line(e.value, str(out), words or ro_words)
    assert not sampled  # found before the images were computed
    assert (tmp_path / "grid.png").read_bytes() == b"not a folder"


STREAM_LOG = {  # --log -> the words of the error
    "under a file": (lambda t, ro: t / "grid.png" / "events.jsonl", "a file is in the way of a folder"),
    "a folder": (lambda t, ro: t, "it is a folder, not a file"),
    "read-only storage": (lambda t, ro: ro / "events.jsonl", None),
    "a full disk": (lambda t, ro: Path("/dev/full"), "no space left on device (errno ENOSPC)"),  # every write
}


@pytest.mark.parametrize("case", list(STREAM_LOG))
def test_stream_log_that_cannot_be_written_is_one_line_exit_2(tmp_path, read_only, capsys, case):
    """`eegsine stream --log PATH`: opening it (before the bundle) and every line written mid-stream."""
    from eegsine.commands.main import main

    if case == "a full disk" and not os.path.exists("/dev/full"):
        pytest.skip("this OS has no /dev/full")
    ro, ro_words = read_only
    (tmp_path / "grid.png").write_bytes(b"not a folder")
    log = STREAM_LOG[case][0](tmp_path, ro)
    rec = h.recording("fif", 3)
    rc = main(["stream", "--source", f"file:{rec}", "--bundle", str(h.stream_bundle()), "--fast",
               "--log", str(log)])
    _cli_one_line_exit_2(capsys, rc, str(log), STREAM_LOG[case][1] or ro_words)
    assert (tmp_path / "grid.png").read_bytes() == b"not a folder"


# -- temporaries: every one the next run sweeps ------------------------------------------------------------
KILLED_SAVE = r"""
import os, signal, sys, threading, time
import numpy as np
from safetensors.numpy import save_file
folder = sys.argv[1]
data = {"w": np.zeros(48 << 18, np.float32)}  # 48 MB: the write outlasts the watcher's first look
def kill_once_the_temp_file_appears():
    while not any(n.startswith(".tmp") for n in os.listdir(folder)):
        time.sleep(0.0002)
    os.kill(os.getpid(), signal.SIGKILL)
threading.Thread(target=kill_once_the_temp_file_appears, daemon=True).start()
save_file(data, os.path.join(folder, "ckpt-2.safetensors"))
sys.exit(3)  # the write ended before the watcher saw its temp file: no kill to test
"""


def test_safetensors_temp_file_of_a_killed_save_is_swept_by_the_next_run(tmp_path):
    """safetensors' save_file writes through ``.tmpXXXXXX`` (Rust's tempfile crate) beside the target."""
    from eegsine.runs.checkpoint import load_checkpoint, save_checkpoint
    from eegsine.runs.folder import RunFolder

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(run)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p for p in run.iterdir() if p.name.startswith(".tmp")]
    assert len(left) == 1 and len(left[0].name) == 10 and left[0].stat().st_size > 0, left  # the kill's leftover
    shutil.copy(left[0], run / "model" / ".tmpK1lLed")  # one deeper in the tree, as save_pretrained leaves it
    m = torch.nn.Linear(3, 2)
    with RunFolder(run) as folder:
        save_checkpoint(run, {"model": m}, {}, {"step": 1})
    assert sorted(p.name for p in folder.swept) == sorted([".tmpK1lLed", left[0].name])
    assert not [p for p in run.rglob(".tmp*")]
    fresh = torch.nn.Linear(3, 2)
    assert load_checkpoint(run, {"model": fresh}, {}) == {"step": 1} and torch.equal(fresh.weight, m.weight)


HOLD = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_killed_export_staging_is_swept_and_every_temporary_is_recognised(tmp_path, monkeypatch):
    """A kill leaves ``.<bundle>.XXXX.tmp`` beside the bundle (and the old bundle moved aside by --overwrite);
    the next export of that name removes them, leaves a live export's folder alone, and names every
    temporary it creates itself so that a sweep recognises it, beside its output (not in /tmp)."""
    from eegsine.export.bundle import classifier_item, export_bundle
    from eegsine.io import sha256_file
    from eegsine.runs.folder import is_temporary

    out = tmp_path / "bundles" / "clf"
    dead = [out.parent / ".clf.k3j2h1x0.tmp", out.parent / ".clf.old-4242.tmp"]
    for d in dead:
        (d / "golden").mkdir(parents=True)
        (d / "classifier.fp32.onnx").write_bytes(b"half an onnx file")
    live = out.parent / ".clf.l1vel1ve.tmp"
    live.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(live)], stdout=subprocess.PIPE, text=True)
    made: list[str] = []
    for fn in ("mkdtemp", "mkstemp"):
        monkeypatch.setattr(tempfile, fn, _recording(made, getattr(tempfile, fn)))
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = h.small_cfg(int8=True, golden_eval=16)
        export_bundle([classifier_item(h.classifier_run(), cfg)], out, cfg, log=lambda *a: None)
        assert not any(d.exists() for d in dead) and live.is_dir()
    finally:
        holder.kill()
        holder.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"fp32", "int8"} <= set(manifest["models"]["classifier"]["files"])
    for rel, entry in manifest["files"].items():  # the bundle is whole
        assert sha256_file(out / rel) == entry["sha256"], rel
    assert made and all(is_temporary(Path(p).name) for p in made), made
    assert all(Path(p).is_relative_to(out.parent) for p in made), made  # beside the output, where sweeps look
    assert sorted(p.name for p in out.parent.iterdir()) == [".clf.l1vel1ve.tmp", "clf"]


def _recording(made: list[str], real):
    """``real`` (tempfile.mkdtemp / mkstemp), noting the names eegsine's own calls create (a library's are its own)."""
    def wrapped(*a, **k):
        got = real(*a, **k)
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") == "tempfile":  # TemporaryDirectory -> mkdtemp
            frame = frame.f_back
        if frame is not None and str(frame.f_globals.get("__name__", "")).startswith("eegsine"):
            made.append(got if isinstance(got, str) else got[1])
        return got
    return wrapped


# -- the user's local model folders -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """The paper test's tiny SD folder and CLIP tower, plus a UNet whose in/out channels are 8 (weights to match)."""
    from diffusers import UNet2DConditionModel

    from test_paper_path import write_clip, write_sd

    root = tmp_path_factory.mktemp("stand_ins")
    write_sd(root / "sd")
    write_clip(root / "clip")
    torch.manual_seed(0)
    unet8 = dict(UNet2DConditionModel.load_config(root / "sd" / "unet"), in_channels=8, out_channels=8)
    UNet2DConditionModel.from_config(unet8).save_pretrained(root / "unet8")
    return root


def _edit(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))


VAE_CFG, UNET_CFG = "sd/vae/config.json", "sd/unet/config.json"
VAE_W, UNET_W = "sd/vae/diffusion_pytorch_model.safetensors", "sd/unet/diffusion_pytorch_model.safetensors"
SD_BREAKS = {  # name -> (break the copy in folder t, the file the error names, its words)
    "vae config not JSON": (lambda t: (t / VAE_CFG).write_text("{\"latent"), VAE_CFG, "not valid JSON"),
    "vae config a list": (lambda t: (t / VAE_CFG).write_text("[4]"), VAE_CFG, "expected a JSON object"),
    "vae latent_channels missing": (lambda t: _edit(t / VAE_CFG, latent_channels=...), VAE_CFG, "latent_channels"),
    "vae latent_channels a string": (lambda t: _edit(t / VAE_CFG, latent_channels="4"), VAE_CFG, "latent_channels"),
    "vae latent_channels 8": (lambda t: _edit(t / VAE_CFG, latent_channels=8), VAE_W, "encoder.conv_out.weight"),
    "vae no weights": (lambda t: (t / VAE_W).unlink(), VAE_W, "missing"),
    "vae weights not safetensors": (lambda t: (t / VAE_W).write_bytes(b"\x07"), VAE_W, "not a readable safetensors"),
    "vae only pickled weights": (lambda t: (t / VAE_W).rename(t / "sd/vae/diffusion_pytorch_model.bin"), VAE_W,
                                 "never unpickles"),
    "unet of another class": (lambda t: _edit(t / UNET_CFG, _class_name="AutoencoderKL"), UNET_CFG, "AutoencoderKL"),
    "unet no weights": (lambda t: (t / UNET_W).unlink(), UNET_W, "missing"),
    "unet cross_attention_dim missing": (lambda t: _edit(t / UNET_CFG, cross_attention_dim=...), UNET_CFG,
                                         "cross_attention_dim"),
    "unet cross_attention_dim wrong": (lambda t: _edit(t / UNET_CFG, cross_attention_dim=32), UNET_W, "attn2.to_k"),
    "unet cross_attention_dim a string": (lambda t: _edit(t / UNET_CFG, cross_attention_dim="768"), UNET_CFG,
                                          "cross_attention_dim"),
    "unet cross_attention_dim per block": (lambda t: _edit(t / UNET_CFG, cross_attention_dim=[24, 24]), UNET_CFG,
                                           "single int"),
    "unet in_channels a bool": (lambda t: _edit(t / UNET_CFG, in_channels=True), UNET_CFG, "in_channels"),
    "unet in_channels 8": (lambda t: _edit(t / UNET_CFG, in_channels=8), UNET_W, "conv_in.weight"),
    "unet of SDXL": (lambda t: _edit(t / UNET_CFG, addition_embed_type="text_time"), UNET_CFG, "SDXL"),
    "unet without cross-attention": (lambda t: _edit(t / UNET_CFG, down_block_types=["DownBlock2D"] * 2,
                                                     up_block_types=["UpBlock2D"] * 2, mid_block_type=None),
                                     UNET_CFG, "cannot read the EEG tokens"),
    "unet not the vae's pair": (lambda t: (shutil.rmtree(t / "sd/unet"), shutil.copytree(t / "unet8", t / "sd/unet")),
                                UNET_CFG, "latent_channels=4"),
}


@pytest.mark.parametrize("case", list(SD_BREAKS))
def test_malformed_stable_diffusion_folder_is_one_line_naming_the_file(stand_ins, tmp_path, case):
    from eegsine.models.diffusion import DiffusionConfig, build_diffusion

    shutil.copytree(stand_ins, tmp_path, dirs_exist_ok=True)
    brk, culprit, words = SD_BREAKS[case]
    brk(tmp_path)
    cfg = DiffusionConfig(image_size=16, native_size=16, emb_dim=8, pretrained_vae=str(tmp_path / "sd"),
                          pretrained_unet=str(tmp_path / "sd" / "unet"))
    with pytest.raises(UserError) as e:
        build_diffusion(cfg)
    _one_line(e.value, str(tmp_path / culprit), words)


CLIP_CFG, CLIP_W = "clip/config.json", "clip/model.safetensors"
CLIP_BREAKS = {
    "config not JSON": (lambda t: (t / CLIP_CFG).write_text("{"), CLIP_CFG, "not valid JSON"),
    "no model_type": (lambda t: _edit(t / CLIP_CFG, model_type=...), CLIP_CFG, "model_type"),
    "hidden_size a string": (lambda t: _edit(t / CLIP_CFG, hidden_size="32"), CLIP_CFG, "hidden_size"),
    "projection_dim wrong": (lambda t: _edit(t / CLIP_CFG, projection_dim=64), CLIP_W, "visual_projection.weight"),
    "hidden_size wrong": (lambda t: _edit(t / CLIP_CFG, hidden_size=48), CLIP_W, "is [32]"),
    "no weights": (lambda t: (t / CLIP_W).unlink(), CLIP_W, "missing"),
    "only pickled weights": (lambda t: (t / CLIP_W).rename(t / "clip/pytorch_model.bin"), CLIP_W, "never unpickles"),
    "clip without vision_config": (lambda t: _edit(t / CLIP_CFG, model_type="clip"), CLIP_CFG, "vision_config"),
}


@pytest.mark.parametrize("case", list(CLIP_BREAKS))
def test_malformed_clip_folder_is_one_line_naming_the_file(stand_ins, tmp_path, case):
    from eegsine.models.configs import ImageEncoderConfig
    from eegsine.models.image_encoder import build_image_encoder

    shutil.copytree(stand_ins / "clip", tmp_path / "clip")
    brk, culprit, words = CLIP_BREAKS[case]
    brk(tmp_path)
    with pytest.raises(UserError) as e:
        build_image_encoder(ImageEncoderConfig(source="hf", hf_path=str(tmp_path / "clip"), emb_dim=32))
    _one_line(e.value, str(tmp_path / culprit), words)


def test_sd_folder_is_checked_before_any_training_stage_and_good_folders_pass(stand_ins, tmp_path, capsys,
                                                                             monkeypatch):
    """A malformed SD folder ends ``train diffusion`` before stage one (hours on the paper preset); the checks
    refuse nothing real: the stand-ins load, the CLIP tower embeds, the SD pair builds and samples."""
    from eegsine.commands.main import main
    from eegsine.models.configs import ImageEncoderConfig
    from eegsine.models.diffusion import DiffusionConfig, build_diffusion
    from eegsine.models.image_encoder import build_image_encoder
    import eegsine.training.diffusion as D

    enc = build_image_encoder(ImageEncoderConfig(source="hf", hf_path=str(stand_ins / "clip"), emb_dim=32))
    assert enc(torch.rand(2, 3, 16, 16)).shape == (2, 32)
    model, cfg = build_diffusion(DiffusionConfig(image_size=16, native_size=16, emb_dim=8,
                                                 pretrained_vae=str(stand_ins / "sd"),
                                                 pretrained_unet=str(stand_ins / "sd" / "unet")))
    assert cfg.cross_attention_dim == 24 and model.sample(torch.randn(1, 8), steps=1).shape == (1, 1, 16, 16)
    capsys.readouterr()  # the libraries' progress bars

    monkeypatch.setattr(D, "_train", lambda *a, **k: pytest.fail("a stage ran before the SD folder was checked"))
    shutil.copytree(stand_ins / "sd", tmp_path / "sd")
    _edit(tmp_path / UNET_CFG, cross_attention_dim=32)
    sd = tmp_path / "sd"
    rc = main(["train", "diffusion", "--run", str(tmp_path / "run"),
               "--model-pretrained-vae", str(sd), "--model-pretrained-unet", str(sd / "unet")])
    _cli_one_line_exit_2(capsys, rc, str(tmp_path / UNET_W), "attn2.to_k")
