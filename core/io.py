"""Atomic files, JSON, sha256 and run logs.

A run killed at any moment leaves either the old file or the new one, never a truncated
one: every write goes to a temp file ``.<name>.*.tmp`` in the same folder, is fsync-ed,
then renamed (a killed writer's temp files are swept by :mod:`eegsine.run_folder`). A full,
read-only or forbidden disk is a :class:`UserError` naming the file, with the old file intact.
Torch-free (the runtime and ``eegsine-verify`` import this module on a device without torch):
safetensors weights and resumable training checkpoints live in :mod:`eegsine.checkpoint`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from eegsine.errors import UserError

METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"


# errors of the disk, not of the program: one line naming the file instead of a traceback
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}


def disk_error(path: str | Path, e: OSError) -> UserError | None:
    """The one-line :class:`UserError` for a disk-side ``OSError`` (None for any other error)."""
    if e.errno not in DISK_ERRORS:
        return None
    return UserError(f"{path}: cannot write: {DISK_ERRORS[e.errno]} (errno {errno.errorcode[e.errno]}); "
                     "the previous file, if any, is unchanged")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync and rename it over ``path``.

    A disk-side ``OSError`` (full, read-only, forbidden) raised here or by the caller's
    writes becomes a one-line :class:`UserError` naming ``path``; the temp file is removed.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
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
    except OSError as e:
        user = disk_error(path, e)
        if user is None:
            raise
        raise user from None
    finally:
        if tmp_path is not None and tmp_path.exists():
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


# -- run folders ---------------------------------------------------------------------------
class _RunLogHandler(logging.FileHandler):
    """log.txt that never prints a traceback: a full disk must not bury the run's one-line error."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not getattr(self, "_warned", False):
            self._warned = True
            err = sys.exc_info()[1]
            print(f"eegsine: warning: cannot append to {self.baseFilename} ({err}); logging to the console only",
                  file=sys.stderr)


def run_logger(run_dir: str | Path, name: str = "eegsine") -> logging.Logger:
    """A logger writing to ``run_dir/log.txt`` (appending, so a resumed run keeps history)."""
    run_dir = Path(run_dir)
    logger = logging.getLogger(f"{name}.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fh = _RunLogHandler(run_dir / LOG_FILE)
        except OSError as e:
            user = disk_error(run_dir / LOG_FILE, e)
            if user is None:
                raise
            raise user from None
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
        sh = logging.StreamHandler()
        sh.setFormatter(logging.Formatter("[%(name)s] %(message)s".replace("%(name)s", name)))
        logger.addHandler(sh)
    return logger
