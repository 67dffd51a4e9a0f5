"""Safetensors weights, and resumable training checkpoints that survive a SIGKILL at any instant.

A checkpoint is a weights file under a new name, ``ckpt-<serial>.safetensors`` (model and
optimizer tensors), plus the record ``ckpt.json`` (progress, optimizer metadata, torch RNG
state, the weights file's name and sha256). The commit order is:

1. write ``ckpt-<n+1>.safetensors`` (temp file, fsync, rename);
2. rename the new ``ckpt.json`` over the old one: **the commit**;
3. only then delete the older weights files.

A kill before 2 leaves the old record naming the old weights file, which still exists; a
kill after 2 leaves the new pair, plus orphans that the next commit deletes. Today's code
replaced ``ckpt.safetensors`` in place before writing ``ckpt.json``, so a kill between the
two left a pair whose hashes disagreed and the run could not resume; that layout (a record
without ``weights``) is still read. A record of a newer ``format`` is refused, and a resume
checks the record's progress against a fresh run's (keys, types, a step within the run) before
loading anything. Nothing is unpickled: tensors are safetensors, the rest JSON.

Test hook: ``EEGSINE_FAULT=<point>[:<n>]`` SIGKILLs this process at ``<point>`` of its
``n``-th checkpoint (default 1), ``<point>`` one of :data:`FAULT_POINTS`; tests/test_faults.py
uses it to kill a real training between the weights and the record.

The safetensors helpers every model folder uses (:func:`save_weights`, :func:`load_weights`,
:func:`load_state_into`) are here too, not in :mod:`eegsine.io`, so that io stays torch-free for
the runtime. Weights are safetensors only, so nothing a user hands us is ever unpickled.

Hand-written: accelerate's ``save_state`` pickles optimizer and RNG state and overwrites its
folder in place, which is neither of the two properties above.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from eegsine.errors import UserError
from eegsine.io import atomic_path, read_json, sha256_file, write_json

RECORD = "ckpt.json"
LEGACY_WEIGHTS = "ckpt.safetensors"   # the single, overwritten weights file of today's runs
WEIGHTS_RE = re.compile(r"^ckpt-(\d+)\.safetensors$")
FORMAT = 2
FAULT_ENV = "EEGSINE_FAULT"
FAULT_POINTS = ("mid-weights", "after-weights", "after-record")
_saves = 0  # checkpoints written by this process (what EEGSINE_FAULT's <n> counts)


def _fault(point: str) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name == point and _saves == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# -- safetensors weights ----------------------------------------------------------------------
def write_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file`` (not atomic: write into an :func:`atomic_path` temp file).

    safetensors reports a failed write as ``SafetensorError("... (os error 28)")``; it is
    raised again as the ``OSError`` it is, so :func:`atomic_path` names the disk problem.
    """
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        save_file(contiguous, str(path), metadata=metadata)
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def save_weights(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Save a flat dict of torch tensors as safetensors, atomically."""
    with atomic_path(path) as tmp:
        write_safetensors(tmp, tensors, metadata)
    return Path(path)


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: weights file does not exist")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def load_state_into(module: Any, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``module`` with a one-line error on mismatch."""
    state = load_weights(path)
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise UserError(f"{path}: weights do not fit {type(module).__name__} ({detail[:300]})") from None


# -- optimizer state <-> tensors + JSON -------------------------------------------------------
def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                name = f"opt.{pid}.{k}"
                tensors[name] = v
                entry[k] = {"tensor": name}
            else:
                entry[k] = v
        meta["state"][str(pid)] = entry
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


# -- write ------------------------------------------------------------------------------------
def _serial(directory: Path) -> int:
    """The serial of the committed weights file (0: none or the legacy layout)."""
    if not (directory / RECORD).exists():
        return 0
    try:
        m = WEIGHTS_RE.match(str(read_json(directory / RECORD).get("weights", "")))
    except (UserError, AttributeError):
        return 0  # a damaged record is replaced by the next commit
    return int(m.group(1)) if m else 0


def save_checkpoint(directory: str | Path, modules: dict[str, Any], optimizers: dict[str, Any],
                    progress: dict[str, Any]) -> Path:
    """Write and commit a resumable checkpoint of ``modules``, ``optimizers``, ``progress`` and the RNG."""
    global _saves
    _saves += 1
    directory = Path(directory)
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"format": FORMAT, "progress": progress, "optimizers": {}}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"model.{name}.{k}"] = v
    for name, opt in optimizers.items():
        t, m = flatten_optimizer(opt.state_dict())
        tensors.update({f"{name}.{k}": v for k, v in t.items()})
        meta["optimizers"][name] = m
    meta["rng_torch"] = torch.get_rng_state().tolist()
    weights = directory / f"ckpt-{_serial(directory) + 1}.safetensors"
    with atomic_path(weights) as tmp:
        write_safetensors(tmp, tensors)
        meta["sha256"] = sha256_file(tmp)
        _fault("mid-weights")
    _fault("after-weights")
    meta["weights"] = weights.name
    try:
        write_json(directory / RECORD, meta)  # the commit
    except BaseException:
        weights.unlink(missing_ok=True)  # uncommitted: free its space, the old pair stays valid
        raise
    _fault("after-record")
    for p in directory.iterdir():
        if p.name != weights.name and (WEIGHTS_RE.match(p.name) or p.name == LEGACY_WEIGHTS):
            p.unlink(missing_ok=True)
    return directory / RECORD


# -- read -------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _damaged(path: Path, what: str) -> UserError:
    return UserError(f"{path}: damaged checkpoint record ({what}); delete {path.parent} to restart")


def _check_record(path: Path) -> dict[str, Any]:
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise _damaged(path, f"a JSON {type(meta).__name__}, not an object")
    fmt = meta.get("format", 1)  # no 'format': the legacy layout (format 1)
    if type(fmt) is not int or fmt < 1:
        raise _damaged(path, f"'format' is {fmt!r}, not a format number")
    if fmt > FORMAT:
        raise UserError(f"{path}: checkpoint record format {fmt} is newer than this eegsine reads (up to {FORMAT}); "
                        f"resume with the eegsine that wrote it, or delete {path.parent} to restart")
    for key, tp in (("progress", dict), ("optimizers", dict), ("rng_torch", list), ("sha256", str)):
        if key not in meta:
            raise _damaged(path, f"missing key {key!r}")
        if not isinstance(meta[key], tp):
            raise _damaged(path, f"{key!r} is a {type(meta[key]).__name__}, expected {tp.__name__}")
    name = meta.get("weights", LEGACY_WEIGHTS)
    if not isinstance(name, str) or not (WEIGHTS_RE.match(name) or name == LEGACY_WEIGHTS):
        raise _damaged(path, f"'weights' names {name!r}, not a ckpt-<n>.safetensors file beside it")
    return meta


def _check_progress(path: Path, progress: dict[str, Any], fresh: dict[str, Any], count: str | None,
                    total: int | None) -> None:
    """The record's progress has every key of a fresh run's, of the same JSON type; ``count`` in [0, total]."""
    for key, like in fresh.items():
        if key not in progress:
            raise _damaged(path, f"progress has no {key!r}")
        v = progress[key]
        if like is None:
            continue
        ok = (type(v) is int if type(like) is int else
              type(v) in (int, float) if type(like) is float else isinstance(v, type(like)))
        if not ok:
            raise _damaged(path, f"progress.{key} is a {type(v).__name__} {v!r:.40}, expected {type(like).__name__}")
    if count is not None:
        n = progress.get(count)
        if type(n) is not int or n < 0 or (total is not None and n > total):
            span = f"in [0, {total}] (this run has {total} {count}s)" if total is not None else ">= 0"
            raise _damaged(path, f"progress.{count} is {n!r:.40}, not a count {span}")


def load_checkpoint(directory: str | Path, modules: dict[str, Any], optimizers: dict[str, Any],
                    fresh: dict[str, Any] | None = None, count: str | None = None,
                    total: int | None = None) -> dict[str, Any] | None:
    """Restore the committed checkpoint in ``directory`` into ``modules`` / ``optimizers`` / the RNG.

    Returns its progress, or None when there is none. Anything that does not fit (a damaged
    record, a record of a newer format, a weights file whose hash differs, another architecture's
    checkpoint) is a one-line :class:`UserError` naming the file. With ``fresh`` (a new run's
    progress) the record's progress must have its keys and JSON types, and ``progress[count]``
    must be an int in ``[0, total]``, before anything is loaded.
    """
    directory = Path(directory)
    meta_path = directory / RECORD
    if not meta_path.exists():
        return None
    meta = _check_record(meta_path)
    _check_progress(meta_path, meta["progress"], fresh or {}, count, total)
    wpath = directory / meta.get("weights", LEGACY_WEIGHTS)
    if not wpath.exists():
        raise UserError(f"{wpath}: missing, but {meta_path.name} names it; delete {directory} to restart")
    if sha256_file(wpath) != meta["sha256"]:
        raise UserError(f"{wpath}: checkpoint does not match {meta_path.name} (hash differs); "
                        f"delete {directory} to restart")
    try:
        rng = torch.tensor(meta["rng_torch"], dtype=torch.uint8)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise _damaged(meta_path, f"'rng_torch' is not a byte list: {_first_line(e)}") from None
    tensors = load_weights(wpath)
    for name, mod in modules.items():
        pre = f"model.{name}."
        state = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        try:
            mod.load_state_dict(state)
        except RuntimeError as e:
            detail = " ".join(line.strip() for line in str(e).strip().splitlines()[:3])
            raise UserError(f"{wpath}: weights do not fit {type(mod).__name__} (another model's checkpoint?): "
                            f"{detail[:300]}") from None
    for name, opt in optimizers.items():
        if name not in meta["optimizers"]:
            raise _damaged(meta_path, f"no state for optimizer {name!r}")
        pre = f"{name}."
        t = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        try:
            opt.load_state_dict(unflatten_optimizer(t, meta["optimizers"][name]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _damaged(meta_path, f"optimizer {name!r} state does not fit: "
                                      f"{type(e).__name__} {_first_line(e)}") from None
    try:
        torch.set_rng_state(rng)
    except (RuntimeError, ValueError, TypeError) as e:
        raise _damaged(meta_path, f"'rng_torch' is not a torch RNG state: {_first_line(e)}") from None
    return meta["progress"]
