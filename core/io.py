"""Atomic files, JSON, sha256 and run logs.

A run killed at any moment leaves either the old file or the new one, never a truncated
one: every write goes to a temp file ``.<name>.*.tmp`` in the same folder, is fsync-ed,
then renamed (a killed writer's temp files are swept by :mod:`eegsine.runs.folder`). A full,
read-only or forbidden disk, or a file or folder in the way of the path, is a :class:`UserError`
naming the file, with the old file intact. A folder written whole (an export bundle) is built in
:func:`staging_dir` beside its final name, whose leftovers the next writer of that name sweeps.
Torch-free (the runtime and ``eegsine-verify`` import this module on a device without torch):
safetensors weights and resumable training checkpoints live in :mod:`eegsine.runs.checkpoint`.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from eegsine.errors import UserError
from eegsine.progress import mode

METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"


# errors of the disk or of the path the user named, not of the program: one line naming the file
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}
PATH_ERRORS = {errno.ENOTDIR: "a part of its path is a file, not a folder",
               errno.EISDIR: "it is a folder, not a file", errno.EEXIST: "a file is in the way of a folder"}


def disk_error(path: str | Path, e: OSError, atomic: bool = True) -> UserError | None:
    """The one-line :class:`UserError` for a disk- or path-side ``OSError`` (None for any other error).
    ``atomic=False`` for a file written in place (a log): it does not claim the previous file is unchanged."""
    reason = DISK_ERRORS.get(e.errno) or PATH_ERRORS.get(e.errno)  # type: ignore[arg-type]
    if reason is None:
        return None
    # which part of the path is in the way (a temp file's name would only be noise)
    where = (f" ({e.filename})" if e.errno in (errno.ENOTDIR, errno.EEXIST) and e.filename
             and Path(str(e.filename)) != Path(path) else "")
    tail = "; the previous file, if any, is unchanged" if atomic and e.errno in DISK_ERRORS else ""
    return UserError(f"{path}: cannot write: {reason}{where} (errno {errno.errorcode[e.errno]}){tail}")


@contextlib.contextmanager
def one_line_os_errors(path: str | Path, atomic: bool = True) -> Iterator[None]:
    """Turn a disk- or path-side ``OSError`` in the block into :func:`disk_error`'s one line naming ``path``."""
    try:
        yield
    except OSError as e:
        user = disk_error(path, e, atomic)
        if user is None:
            raise
        raise user from None


def writable_dir(path: str | Path) -> Path:
    """Create the folder ``path`` (and its parents) and prove that a file can be created in it.

    For commands that write their output at the end of a long computation: a read-only, full
    or forbidden disk, or a file in the way, is found before the work, as one line.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    with one_line_os_errors(path):
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync and rename it over ``path``.

    A disk- or path-side ``OSError`` (full, read-only, forbidden, a file or folder in the way)
    raised here or by the caller's writes becomes a one-line :class:`UserError` naming ``path``;
    the temp file is removed.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        with one_line_os_errors(path):
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
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def scratch_dir(path: str | Path) -> tempfile.TemporaryDirectory:
    """A scratch folder ``.<name>.XXXX.tmp`` beside ``path``, for a library's intermediate files.

    Beside, not in the system's temp folder: a killed writer's scratch lies in the folder it
    wrote (an export's staging folder, a run folder), where the next sweep removes it.
    """
    path = Path(path)
    with one_line_os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def _flock(fd: int) -> bool | None:
    """Take ``fd``'s exclusive flock without waiting: True, False (another process holds it), None (no flock here)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None  # a file system without flock: cannot tell a live writer from a dead one
    return True


def _sweep_staging(out: Path) -> list[Path]:
    """Remove ``.<out name>.*.tmp`` folders beside ``out`` that no live process holds (killed writers')."""
    removed = []
    for p in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # gone meanwhile, or not a folder
        try:
            if _flock(fd):  # held while it is removed: a writer that has just created it sees it vanish
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def staging_dir(out: str | Path) -> Iterator[Path]:
    """A temp folder ``.<out name>.XXXX.tmp`` beside ``out`` to build a folder in, then rename to ``out``.

    The folder is flock-ed while the block runs, so the kernel marks it free the instant its
    writer dies: entering first sweeps the staging folders of killed writers of the same name
    (a folder a live writer holds is left alone). On an exception the folder is removed; a
    folder renamed into place by the block is kept. Disk- and path-side ``OSError`` in the block
    are :func:`disk_error`'s one line naming ``out``.
    """
    out = Path(out)
    with one_line_os_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        _sweep_staging(out)
        while True:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            if _flock(fd) is not False and tmp.exists():
                break
            os.close(fd)  # a sweeper took it between mkdtemp and flock: take another name
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(fd)


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
    except (IsADirectoryError, PermissionError) as e:  # a folder of that name, a file we may not read
        raise UserError(f"{path}: cannot read: {e.strerror} (errno {errno.errorcode[e.errno]})") from None


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


class _ConsoleHandler(logging.StreamHandler):
    """stderr, through tqdm's ``write`` when bars are redrawn in place: a status line never glues onto a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # a device with the runtime only: no bars to keep apart
            tqdm = None
        if tqdm is None or mode(self.stream) != "bars":
            return super().emit(record)
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own contract: a failed emit goes to handleError
            self.handleError(record)


def quiet_logger(name: str = "eegsine") -> logging.Logger:
    """The logger of a process other than the main one under ``accelerate launch``: silent (the main one logs)."""
    logger = logging.getLogger(f"{name}.other-process")
    logger.propagate = False
    logger.disabled = True
    return logger


def run_logger(run_dir: str | Path, name: str = "eegsine") -> logging.Logger:
    """A logger writing to ``run_dir/log.txt`` (appending, so a resumed run keeps history)."""
    run_dir = Path(run_dir)
    logger = logging.getLogger(f"{name}.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        with one_line_os_errors(run_dir / LOG_FILE):
            run_dir.mkdir(parents=True, exist_ok=True)
            fh = _RunLogHandler(run_dir / LOG_FILE)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
        sh = _ConsoleHandler()
        sh.setFormatter(logging.Formatter("[%(name)s] %(message)s".replace("%(name)s", name)))
        logger.addHandler(sh)
    return logger
