"""``eegcvpr40``: the 40-class EEG-ImageNet set of Spampinato et al. (CVPR 2017), from the user's local files.

Format (the files as distributed): ``eeg_*.pth`` = ``torch.save`` of a dict with
``dataset`` (list of ``{eeg: FloatTensor[128, T], image: int, label: int, subject: int}``),
``labels`` (40 WordNet ids) and ``images`` (names such as ``n02951358_31190``); the splits
file ``block_splits_by_image_*.pth`` = ``{splits: [{train: [...], val: [...], test: [...]}, ...]}``.
Both are read with ``torch.load(weights_only=True)``: a file carrying any other pickled object
is refused, never executed.

Like the reference loaders: keep trials with ``450 <= T <= 600`` (the rest are dropped, counted in
``info["dropped_trials"]``, and their split entries with them), use samples ``20:460`` (440 at 1 kHz).
A kept trial with ``450 <= T < 460`` is a few samples short of 460: its window still starts at sample 20
and its missing tail (at most 10 samples, 10 ms) repeats its last filtered sample (edge padding). Padding
rather than resampling: a resample would stretch that trial's time axis by up to 2.2 % and move its
evoked components against every other trial's; the pad keeps every sample's latency after onset exact
and touches only the last <= 10 ms of the window (``info["padded_trials"]`` counts them). ``subject``
filters first, and a ``*_single*`` splits file counts its indices within that subject's trials (the
original convention), an ``*_all*`` file within the full list. Split membership is by image.

Known confound (Li et al., TPAMI 2020): the block design leaves slow drifts that make raw
data look far more decodable (0.98) than band-passed data (~0.48). So the default is a
5-95 Hz Butterworth band-pass (order 4) of each whole trial; ``bandpass=None`` logs a warning. It is
causal by default (``phase="causal"``, :mod:`eegsine.runtime.preprocessing`, the filter the stream runtime runs;
each trial starts from the steady state of its first sample), ``phase="zero-phase"`` is forward-backward
(offline only, recorded as such in the spec and the bundle). The files' own "5_95" variants were
band-passed by their authors (zero-phase, outside our control): the spec cannot describe that.
Stimulus images do not ship with the EEG. Without ``images_root``: ``images`` is None, ``image`` is
the stimulus index and ``info["image_names"]`` names each stimulus. With ``images_root=DIR`` (the
ImageNet photos the subjects saw, ``DIR/<wnid>/<image name>.JPEG`` as in ImageNet's train folders, or
flat ``DIR/<image name>.JPEG``) every stimulus a kept trial shows is read and brought to
``image_size`` x ``image_size`` RGB by one transform, the ImageNet evaluation one: resize the shorter
side to ``image_size`` (bicubic, antialiased), then centre-crop; ``images`` is (M, 3, S, S) in [0, 1]
(stimuli no kept trial shows stay zero and are counted in ``info["unused_images"]``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from eegsine.progress import tqdm
from eegsine.data.base import EEGSet, data_root
from eegsine.data.options import DataOptions
from eegsine.errors import DataMissingError, UserError
from eegsine.runtime.preprocessing import PreprocessingSpec, apply_filters

if TYPE_CHECKING:
    from eegsine.runtime.preprocessing import PreprocessingSpec

log = logging.getLogger(__name__)

N_CHANS = 128
T_MIN, T_MAX = 450, 600           # kept trial lengths (samples), inclusive
T_LOW, T_HIGH = 20, 460           # samples used (a trial shorter than 460 is edge-padded at its end)
IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")
SFREQ = 1000.0
HOW_TO_GET = ("place your eeg_*.pth (e.g. eeg_5_95_std.pth or eeg_signals_raw_with_mean_std.pth) and "
              "block_splits_by_image_all.pth in $EEGSINE_EEGCVPR40_DIR (default ~/.cache/eegsine/data/eegcvpr40) "
              "or pass --root FOLDER (eegsine does not download them: they come with the EEG data release of "
              "Spampinato et al., CVPR 2017)")
EEG_PREFERENCE = ("eeg_signals_raw_with_mean_std.pth", "eeg_5_95_std.pth", "eeg_14_70_std.pth", "eeg_55_95_std.pth")


@dataclasses.dataclass
class EEGCVPR40Options(DataOptions):
    """``eegcvpr40``'s loader options (:func:`load_eegcvpr40`'s keyword arguments)."""

    KIND = "eegcvpr40-options"

    root: str | None = dataclasses.field(default=None, metadata={
        "help": "folder of the .pth files (None: $EEGSINE_DATA/eegcvpr40)"})
    eeg_file: str | None = dataclasses.field(default=None, metadata={
        "help": "the EEG .pth file (None: the first of the known names in root)"})
    splits_file: str | None = dataclasses.field(default=None, metadata={
        "help": "the splits .pth file (None: block_splits_by_image_all.pth, or _single for subject=N)"})
    split_index: int = dataclasses.field(default=0, metadata={"help": "which of the file's splits"})
    subject: int = dataclasses.field(default=0, metadata={"help": "keep only this subject's trials (0: all)"})
    loso_subject: int = dataclasses.field(default=0, metadata={
        "help": "leave-one-subject-out: this subject is the test split (0: off)"})
    bandpass: list[float] | None = dataclasses.field(default_factory=lambda: [5.0, 95.0], metadata={
        "help": "[low, high] Hz applied to each whole trial before samples 20:460 (None: as stored)"})
    sfreq: float = dataclasses.field(default=SFREQ, metadata={"help": "sampling rate of the files (Hz)"})
    phase: Literal["causal", "zero-phase"] = dataclasses.field(default="causal", metadata={
        "help": "the band-pass: causal (what a stream runs) or zero-phase (the original's filter)"})
    images_root: str | None = dataclasses.field(default=None, metadata={
        "help": "folder of the stimulus photos to pair the trials with (None: no images)"})
    image_size: int = dataclasses.field(default=64, metadata={"help": "paired images' side (px)"})


def default_dir() -> Path:
    return Path(os.environ.get("EEGSINE_EEGCVPR40_DIR", data_root() / "eegcvpr40"))


def available() -> bool:
    d = default_dir()
    return d.is_dir() and any(d.glob("eeg_*.pth")) and any(d.glob("block_splits_by_image_*.pth"))


def _torch_load(path: Path) -> object:
    import torch

    if not path.is_file():
        raise DataMissingError(f"eegcvpr40: {path} does not exist; {HOW_TO_GET}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; its one informative line names the blocked global or opcode
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")
        raise UserError(f"{path}: refused by torch.load(weights_only=True), nothing executed: the file holds more "
                        f"than tensors and plain containers ({detail[:160]})") from None
    except Exception as e:  # noqa: BLE001 - any other failure is a corrupt/foreign file; name it in one line
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{path}: not a readable torch file ({type(e).__name__}: {msg})") from None


def _resolve_files(root: str | os.PathLike | None, eeg_file: str | os.PathLike | None,
                   splits_file: str | os.PathLike | None, subject: int) -> tuple[Path, Path]:
    folder = Path(root) if root else default_dir()
    if eeg_file is None and folder.is_file():     # --root pointing at the .pth itself
        eeg_file, folder = folder, folder.parent
    if eeg_file is None:
        if not folder.is_dir():
            raise DataMissingError(f"eegcvpr40: {folder} does not exist; {HOW_TO_GET}")
        cands = sorted(p for p in folder.glob("eeg_*.pth"))
        if not cands:
            raise DataMissingError(f"eegcvpr40: no eeg_*.pth in {folder}; {HOW_TO_GET}")
        pref = [folder / n for n in EEG_PREFERENCE if (folder / n) in cands]
        if pref:
            eeg_file = pref[0]
        elif len(cands) == 1:
            eeg_file = cands[0]
        else:
            raise UserError(f"eegcvpr40: several EEG files in {folder} ({', '.join(p.name for p in cands)}); "
                            "pick one with eeg_file=")
    eeg_path = Path(eeg_file)
    if splits_file is None:
        base = eeg_path.parent
        order = ["block_splits_by_image_all.pth"] + (["block_splits_by_image_single.pth"] if subject else [])
        found = [base / n for n in order if (base / n).is_file()]
        if not found:
            raise DataMissingError(f"eegcvpr40: no block_splits_by_image_all.pth next to {eeg_path}; {HOW_TO_GET}")
        splits_file = found[0]
    return eeg_path, Path(splits_file)


def _check_dataset(path: Path, obj: object) -> tuple[list, list, list]:
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict with 'dataset', 'labels', 'images', got {type(obj).__name__}")
    for key in ("dataset", "labels", "images"):
        if key not in obj:
            raise UserError(f"{path}: missing key {key!r} (have: {', '.join(map(str, obj))})")
    dataset, labels, images = obj["dataset"], obj["labels"], obj["images"]
    for key, v in (("dataset", dataset), ("labels", labels), ("images", images)):
        if not isinstance(v, (list, tuple)):
            raise UserError(f"{path}: {key!r} must be a list, got {type(v).__name__}")
    if not dataset:
        raise UserError(f"{path}: 'dataset' is empty")
    if not all(isinstance(s, str) for s in labels) or not all(isinstance(s, str) for s in images):
        raise UserError(f"{path}: 'labels' and 'images' must be lists of strings (WordNet ids / image names)")
    return list(dataset), list(labels), list(images)


def _trial(path: Path, i: int, d: object, n_labels: int, n_images: int):
    import torch

    if not isinstance(d, dict):
        raise UserError(f"{path}: dataset[{i}] must be a dict, got {type(d).__name__}")
    for key in ("eeg", "image", "label", "subject"):
        if key not in d:
            raise UserError(f"{path}: dataset[{i}] has no {key!r}")
    eeg = d["eeg"]
    if not isinstance(eeg, torch.Tensor) or eeg.ndim != 2 or not eeg.is_floating_point():
        what = (f"{eeg.dtype} tensor of shape {tuple(eeg.shape)}" if isinstance(eeg, torch.Tensor)
                else type(eeg).__name__)
        raise UserError(f"{path}: dataset[{i}]['eeg'] must be a float tensor [128, T], got {what}")
    if eeg.shape[0] != N_CHANS:
        raise UserError(f"{path}: dataset[{i}]['eeg'] has {eeg.shape[0]} channels, expected {N_CHANS} "
                        f"(shape {tuple(eeg.shape)})")
    ints = []
    for key, hi in (("image", n_images), ("label", n_labels), ("subject", None)):
        v = d[key]
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise UserError(f"{path}: dataset[{i}][{key!r}] must be an int, got {type(v).__name__}")
        if v < 0 or (hi is not None and v >= hi):
            raise UserError(f"{path}: dataset[{i}][{key!r}]={v} out of range [0, {hi if hi is not None else 'inf'})")
        ints.append(int(v))
    return eeg, ints[0], ints[1], ints[2]


def _check_splits(path: Path, obj: object, split_index: int) -> dict[str, list[int]]:
    if not isinstance(obj, dict) or "splits" not in obj:
        raise UserError(f"{path}: expected a dict with 'splits' (list of {{train, val, test}})")
    splits = obj["splits"]
    if not isinstance(splits, (list, tuple)) or not splits:
        raise UserError(f"{path}: 'splits' must be a non-empty list")
    if not 0 <= split_index < len(splits):
        raise UserError(f"eegcvpr40: split_index={split_index} out of range ({path} has {len(splits)} splits)")
    sp = splits[split_index]
    out = {}
    for key in ("train", "val", "test"):
        if not isinstance(sp, dict) or key not in sp:
            raise UserError(f"{path}: splits[{split_index}] has no {key!r} list")
        v = sp[key]
        items = v.tolist() if hasattr(v, "tolist") else (list(v) if isinstance(v, (list, tuple)) else [v])
        # ints only: np.asarray(..., int64) would truncate 1.7 to 1 and read True as 1 without a word
        bad = [i for i in items if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
        if bad:
            raise UserError(f"{path}: splits[{split_index}][{key!r}] must be a list of ints, found {bad[0]!r}")
        out[key] = np.asarray(items, dtype=np.int64).reshape(-1)
    if not any(len(v) for v in out.values()):  # loads as a 0-trial set that trains and scores nothing
        raise UserError(f"{path}: splits[{split_index}] has empty train, val and test lists")
    return out


def bandpass_filter(x: np.ndarray, sfreq: float, band: Sequence[float], order: int = 4,
                    phase: str = "causal") -> np.ndarray:
    """Butterworth band-pass along the last axis (:mod:`eegsine.runtime.preprocessing`, causal or zero-phase);
    float32 out."""
    lo, hi = float(band[0]), float(band[1])
    if not 0 < lo < hi < sfreq / 2:
        raise UserError(f"bandpass={tuple(band)} must satisfy 0 < low < high < Nyquist ({sfreq / 2:g} Hz)")
    spec = PreprocessingSpec.design(sfreq, ["x"], l_freq=lo, h_freq=hi, order=order, phase=phase,
                                    tmin=0.0, tmax=x.shape[-1] / sfreq)
    return apply_filters(x, spec)


def _window(block: np.ndarray) -> np.ndarray:
    """(n, 128, T) -> (n, 128, 440): samples 20:460, the tail of a T < 460 trial edge-padded (module docstring)."""
    w = block[:, :, T_LOW:T_HIGH]
    short = (T_HIGH - T_LOW) - w.shape[-1]
    return np.pad(w, ((0, 0), (0, 0), (0, short)), mode="edge") if short > 0 else w


def find_stimulus(root: Path, name: str) -> Path | None:
    """``root/<wnid>/<name>.JPEG`` (ImageNet layout) or ``root/<name>.JPEG`` (flat); other common suffixes too."""
    wnid = name.split("_")[0]
    for folder in (root / wnid, root):
        for sfx in IMAGE_SUFFIXES:
            if (folder / (name + sfx)).is_file():
                return folder / (name + sfx)
    return None


def stimulus_transform(path: Path, size: int) -> np.ndarray:
    """One photo -> (3, size, size) float32 in [0, 1]: shorter side to ``size`` (bicubic), centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_stimuli(images_root: str | os.PathLike, names: list[str], used: np.ndarray, size: int) -> np.ndarray:
    """(len(names), 3, size, size): every stimulus in ``used`` read from ``images_root``; a missing one is an error."""
    root = Path(images_root)
    if not root.is_dir():
        raise DataMissingError(f"eegcvpr40: images_root {root} is not a folder (the ImageNet stimulus photos, "
                               "<root>/<wnid>/<name>.JPEG or <root>/<name>.JPEG)")
    paths = {int(i): find_stimulus(root, names[int(i)]) for i in used}
    missing = [names[i] for i, p in paths.items() if p is None]
    if missing:
        raise DataMissingError(f"eegcvpr40: {len(missing)} of {len(paths)} stimulus images not found under {root} "
                               f"(first: {missing[0]}; looked for <root>/{missing[0].split('_')[0]}/{missing[0]}.JPEG "
                               f"and <root>/{missing[0]}.JPEG)")
    out = np.zeros((len(names), 3, size, size), np.float32)
    for i, p in tqdm(sorted(paths.items()), desc="stimulus images", unit="img", disable=len(paths) < 200, leave=False):
        out[i] = stimulus_transform(p, size)
    return out


def _check_args(sfreq: float, bandpass, subject: int, loso_subject: int, image_size: int):
    """The loader's own option checks -> the band-pass as (low, high) or None."""
    if not (isinstance(sfreq, (int, float)) and math.isfinite(sfreq) and sfreq > 0):
        raise UserError(f"eegcvpr40: sfreq={sfreq!r}: must be a finite sampling rate > 0 Hz")
    if isinstance(bandpass, str):
        if bandpass.strip().lower() not in ("none", "off", "raw"):
            raise UserError(f"eegcvpr40: bandpass={bandpass!r}: give [low, high] in Hz or None")
        bandpass = None
    if bandpass is not None and (len(bandpass) != 2 or not 0 < float(bandpass[0]) < float(bandpass[1]) < sfreq / 2):
        raise UserError(f"eegcvpr40: bandpass={bandpass!r}: give [low, high] Hz with 0 < low < high < "
                        f"{sfreq / 2:g} (Nyquist), or None")
    if loso_subject and subject:
        raise UserError("eegcvpr40: subject= and loso_subject= exclude each other (LOSO needs every subject)")
    if not 8 <= image_size <= 1024:
        raise UserError(f"eegcvpr40: image_size={image_size}: must be in [8, 1024] px")
    return bandpass


def _select(eeg_path: Path, splits_path: Path, trials: list, sp: dict, split_index: int, subject: int,
            loso_subject: int, single: bool) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(what the split indices count in, kept trials' file indices, file index -> kept index or -1)."""
    subjects = sorted({t[3] for t in trials})
    pool = [i for i, t in enumerate(trials) if subject == 0 or t[3] == subject]
    if not pool:
        raise UserError(f"eegcvpr40: no trials of subject {subject} in {eeg_path} (subjects: {subjects})")
    if loso_subject and loso_subject not in subjects:
        raise UserError(f"eegcvpr40: loso_subject={loso_subject} not in {eeg_path} (subjects: {subjects})")
    ref = pool if single else list(range(len(trials)))     # what the split indices count in
    for key, idx in sp.items():
        bad_idx = idx[(idx < 0) | (idx >= len(ref))]
        if len(bad_idx):
            raise UserError(f"{splits_path}: splits[{split_index}][{key!r}] has index {int(bad_idx[0])} outside the "
                            f"{len(ref)} trials it indexes ({'subject ' + str(subject) if single else 'all'})")
    in_pool = np.zeros(len(trials), bool)
    in_pool[pool] = True
    length_ok = np.array([T_MIN <= t[0].shape[1] <= T_MAX for t in trials])
    keep = np.flatnonzero(in_pool & length_ok)   # file indices of kept trials
    if len(keep) == 0:
        raise UserError(f"{eeg_path}: no trial has {T_MIN} <= T <= {T_MAX} samples")
    new_of = np.full(len(trials), -1, np.int64)
    new_of[keep] = np.arange(len(keep))
    return ref, keep, new_of


def _windows(eeg_path: Path, trials: list, keep: np.ndarray, bandpass, sfreq: float, phase: str) -> np.ndarray:
    """(kept, 128, 440): each trial filtered whole (grouped by length), then its 20:460 window."""
    x = np.empty((len(keep), N_CHANS, T_HIGH - T_LOW), dtype=np.float32)
    by_len: dict[int, list[int]] = {}
    for j, i in enumerate(keep):
        by_len.setdefault(trials[i][0].shape[1], []).append(j)
    for T, js in tqdm(sorted(by_len.items()), desc="eegcvpr40", unit="length", disable=len(keep) < 2000, leave=False):
        block = np.stack([trials[keep[j]][0].detach().to("cpu").float().numpy() for j in js])   # (n, 128, T)
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~np.isfinite(block.sum(axis=(1, 2), dtype=np.float64))     # finite iff every sample is
        if bad.any():
            first = int(keep[js[int(np.argmax(bad))]])
            raise UserError(f"{eeg_path}: dataset[{first}]['eeg'] contains NaN/inf ({int(bad.sum())} trial(s) of "
                            f"length {T})")
        if bandpass is not None:
            for a in range(0, len(block), 64):  # 64 trials at a time: bounded float64 scratch
                block[a:a + 64] = bandpass_filter(block[a:a + 64], sfreq, bandpass, phase=phase)
        x[js] = _window(block)
    if bandpass is None:
        log.warning("eegcvpr40: no band-pass (bandpass=None). Raw block-design EEG carries slow drifts that "
                    "inflate accuracy (0.98 raw vs ~0.48 band-passed, Li et al., TPAMI 2020); "
                    "report band-passed results.")
    return x


def _splits(splits_path: Path, split_index: int, sp: dict, ref: list[int], new_of: np.ndarray, subj: np.ndarray,
            image: np.ndarray, loso_subject: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The file's split in kept-trial indices (entries of dropped trials dropped and counted), LOSO applied."""
    splits: dict[str, np.ndarray] = {}
    dropped = {}
    for key, idx in sp.items():
        new = new_of[np.asarray(ref, np.int64)[idx]]
        dropped[key] = int((new < 0).sum())
        splits[key] = np.unique(new[new >= 0])
    if not any(len(v) for v in splits.values()):
        raise UserError(f"{splits_path}: splits[{split_index}] keeps no trial: its {sum(dropped.values())} entries "
                        f"all name dropped trials (length outside {T_MIN}..{T_MAX} samples, or another subject's)")
    a, b, c = (set(splits[k].tolist()) for k in ("train", "val", "test"))
    if a & b or a & c or b & c:
        raise UserError(f"{splits_path}: splits[{split_index}] puts the same trial in two of train/val/test")
    if loso_subject:
        held = np.flatnonzero(subj == loso_subject)
        splits = {"train": splits["train"][subj[splits["train"]] != loso_subject],
                  "val": splits["val"][subj[splits["val"]] != loso_subject], "test": held}
        for key in ("train", "test"):  # a fold that tests (or trains) on nothing scores nothing
            if len(splits[key]) == 0:
                raise UserError(f"eegcvpr40: loso_subject={loso_subject} leaves 0 {key} trials (subject "
                                f"{loso_subject}'s kept trials: {len(held)} of {T_MIN}..{T_MAX} samples)")
    shared = set(image[splits["train"]].tolist()) & set(image[splits["test"]].tolist())
    if shared and not loso_subject:
        log.warning("eegcvpr40: %d image(s) appear in both train and test of %s", len(shared), splits_path.name)
    return splits, dropped


def load_eegcvpr40(root: str | os.PathLike | None = None, eeg_file: str | os.PathLike | None = None,
                   splits_file: str | os.PathLike | None = None, split_index: int = 0, subject: int = 0,
                   loso_subject: int = 0, bandpass: Sequence[float] | str | None = (5.0, 95.0),
                   sfreq: float = SFREQ, phase: Literal["causal", "zero-phase"] = "causal",
                   images_root: str | os.PathLike | None = None, image_size: int = 64) -> EEGSet:
    """Load EEGCVPR40. ``subject`` 0 = all; ``loso_subject`` k > 0: subject k is the test split.

    ``bandpass`` is applied to each whole trial before cutting samples 20:460 (fewer edge effects);
    ``images_root`` pairs the trials with their stimulus photos at ``image_size`` px (module docstring).
    """
    bandpass = _check_args(sfreq, bandpass, subject, loso_subject, image_size)
    eeg_path, splits_path = _resolve_files(root, eeg_file, splits_file, subject)
    single = "single" in splits_path.name
    if single and not subject:
        raise UserError(f"{splits_path}: a *_single* splits file counts within one subject's trials; pass subject=N "
                        "or use block_splits_by_image_all.pth")
    dataset, labels, image_names = _check_dataset(eeg_path, _torch_load(eeg_path))
    sp = _check_splits(splits_path, _torch_load(splits_path), split_index)
    # subject filter first (like the original), then split indices count within that list or the full one
    trials = [_trial(eeg_path, i, d, len(labels), len(image_names)) for i, d in enumerate(dataset)]
    ref, keep, new_of = _select(eeg_path, splits_path, trials, sp, split_index, subject, loso_subject, single)
    x = _windows(eeg_path, trials, keep, bandpass, sfreq, phase)
    y = np.array([trials[i][2] for i in keep], np.int64)
    image = np.array([trials[i][1] for i in keep], np.int64)
    subj = np.array([trials[i][3] for i in keep], np.int64)
    splits, dropped = _splits(splits_path, split_index, sp, ref, new_of, subj, image, loso_subject)
    wnid = {w: k for k, w in enumerate(labels)}
    image_labels = np.array([wnid.get(n.split("_")[0], -1) for n in image_names], np.int64)  # -1: not a class id
    used = np.unique(image)
    images = load_stimuli(images_root, image_names, used, image_size) if images_root else None
    lengths = np.array([trials[i][0].shape[1] for i in keep])
    n_pool = sum(1 for t in trials if subject == 0 or t[3] == subject)
    info = {
        "eeg_file": str(eeg_path), "splits_file": str(splits_path), "split_index": split_index,
        "subject": subject, "loso_subject": loso_subject, "bandpass_hz": list(bandpass) if bandpass else None,
        "bandpass_phase": phase if bandpass else None,
        "samples": [T_LOW, T_HIGH], "kept_trials": int(len(keep)), "file_trials": len(trials),
        "dropped_trials": int(n_pool - len(keep)), "padded_trials": int((lengths < T_HIGH).sum()),
        "images_root": str(images_root) if images_root else None, "image_size": image_size if images_root else None,
        "unused_images": int(len(image_names) - len(used)) if images_root else None,
        "dropped_split_entries": dropped, "image_names": image_names, "units": "as stored in the file",
        "channel_names_note": "the files carry no channel names; E1..E128 in file order",
    }
    return EEGSet(name="eegcvpr40", x=x, y=y, subject=subj, image=image, sfreq=float(sfreq),
                  ch_names=[f"E{i + 1}" for i in range(N_CHANS)], classes=list(labels), splits=splits,
                  images=images, image_labels=image_labels, info=info,
                  preprocessing=_spec(sfreq, bandpass, phase)).check()


def _spec(sfreq: float, bandpass: Sequence[float] | None, phase: str) -> "PreprocessingSpec":
    """The loader's preprocessing: E1..E128 as stored, the file's units, samples 20:460 after onset, the band-pass."""
    lo, hi = (float(bandpass[0]), float(bandpass[1])) if bandpass is not None else (0.0, 0.0)
    return PreprocessingSpec.design(
        sfreq, [f"E{i + 1}" for i in range(N_CHANS)], l_freq=lo, h_freq=hi, order=4, phase=phase,
        units="a.u.", reference="as-recorded", tmin=T_LOW / sfreq, tmax=T_HIGH / sfreq,
        source="eegcvpr40: trials start at stimulus onset; filtered per whole trial, then samples 20:460")
