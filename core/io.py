"""Atomic files, safetensors weights, checkpoints and run folders.

A run killed at any moment leaves either the old file or the new one, never a truncated
one: every write goes to a temp file in the same folder, is fsync-ed, then renamed.
Weights are safetensors only; training state (optimizer, RNG) is a safetensors file of
tensors plus a JSON sidecar, so nothing a user hands us is ever unpickled.
Does not import torch at module level (the runtime imports this module).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from eegsine.errors import UserError

METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # directory fsync is best effort (not on every FS)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean_nan(o: Any) -> Any:
    """JSON has no NaN: write null so every reader parses the file."""
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean_nan(v) for v in o]
    return o


def write_json(path: str | Path, obj: Any) -> Path:
    obj = json.loads(json.dumps(obj, default=_json_default))
    return atomic_write_text(path, json.dumps(_clean_nan(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def update_metrics(run_dir: str | Path, section: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` under ``section`` into the run's metrics.json (atomically)."""
    path = Path(run_dir) / METRICS_FILE
    data = read_json(path) if path.exists() else {}
    data[section] = values
    return write_json(path, data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- safetensors ------------------------------------------------------------------------
def save_weights(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Save a flat dict of torch tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)
    return Path(path)


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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


# -- checkpoints (resumable training) -----------------------------------------------------
def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    import torch

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


def _unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | Path, modules: dict[str, Any], optimizers: dict[str, Any],
                    progress: dict[str, Any]) -> Path:
    """Write a resumable checkpoint: ``ckpt.safetensors`` + ``ckpt.json`` (JSON written last).

    The JSON file is the commit record: a checkpoint counts only once its JSON names the
    safetensors file's hash, so a crash between the two writes leaves the previous one valid.
    """
    import torch

    directory = Path(directory)
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"progress": progress, "optimizers": {}}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"model.{name}.{k}"] = v
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(opt.state_dict())
        tensors.update({f"{name}.{k}": v for k, v in t.items()})
        meta["optimizers"][name] = m
    meta["rng_torch"] = torch.get_rng_state().tolist()
    save_weights(directory / "ckpt.safetensors", tensors)
    meta["sha256"] = sha256_file(directory / "ckpt.safetensors")
    write_json(directory / "ckpt.json", meta)
    return directory / "ckpt.json"


def load_checkpoint(directory: str | Path, modules: dict[str, Any], optimizers: dict[str, Any]) -> dict[str, Any] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; return its progress or None."""
    import torch

    directory = Path(directory)
    meta_path = directory / "ckpt.json"
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    wpath = directory / "ckpt.safetensors"
    if not wpath.exists() or sha256_file(wpath) != meta.get("sha256"):
        raise UserError(f"{wpath}: checkpoint does not match {meta_path.name} (hash differs); delete both to restart")
    tensors = load_weights(wpath)
    for name, mod in modules.items():
        pre = f"model.{name}."
        mod.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
    for name, opt in optimizers.items():
        pre = f"{name}."
        t = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        opt.load_state_dict(_unflatten_optimizer(t, meta["optimizers"][name]))
    torch.set_rng_state(torch.tensor(meta["rng_torch"], dtype=torch.uint8))
    return meta["progress"]


# -- run folders ---------------------------------------------------------------------------
def run_logger(run_dir: str | Path, name: str = "eegsine") -> logging.Logger:
    """A logger writing to ``run_dir/log.txt`` (appending, so a resumed run keeps history)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"{name}.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        fh = logging.FileHandler(run_dir / LOG_FILE)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
        sh = logging.StreamHandler()
        sh.setFormatter(logging.Formatter("[%(name)s] %(message)s".replace("%(name)s", name)))
        logger.addHandler(sh)
    return logger
