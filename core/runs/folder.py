"""The run protocol every trainer (and ``eegsine attack``) follows on its output folder.

``with RunFolder(run_dir) as run:``

* takes the folder's lock file ``.lock`` (created with O_CREAT|O_EXCL semantics, holds the
  PID, host and start time): a second writer gets a one-line :class:`UserError` naming the
  holder's PID; a lock left by a dead process is taken over. The lock is also ``flock``-ed
  while held, so the kernel drops it the instant its holder dies and two processes taking
  over the same stale lock cannot both win; the PID check covers file systems without flock;
* sweeps the temporaries of dead writers (``.*.tmp`` files and folders from
  :func:`eegsine.io.atomic_path` and ``mkdtemp``) in the folder tree, skipping nested run
  folders that have their own lock;
* :meth:`RunFolder.write_config` writes ``config.json`` only once the caller has started
  successfully (data loaded, model built), so an attempt that fails on a bad flag does not
  block the corrected retry; a folder that holds results of another configuration is
  refused with the differing keys (``lr: 0.001 -> 0.002``); so is a stored ``config.json`` that
  its config class does not read (a missing or float ``version``, a bool for an int, a future
  version), never compared field by field with Python's ``True == 1``.

:func:`eegsine.locks.locked` is the same lock, waiting for the holder instead of refusing, around a short
read-modify-write of one shared file (``eegsine-verify``'s records in a bundle).

Under ``accelerate launch`` only the main process (``lock=True``) locks and writes.
Hand-written: no library in the stack locks a run folder (accelerate, diffusers and
huggingface_hub's ``filelock`` use blocking, PID-less locks).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from eegsine.errors import UserError
from eegsine.io import disk_error
from eegsine.locks import give_back_lock, LockHeld, take_lock

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
NOT_RESULTS = {CONFIG_FILE, "log.txt", LOCK_FILE}  # what a failed attempt leaves behind


def is_temporary(name: str) -> bool:
    """``.*.tmp`` (eegsine's own), or ``.tmpXXXXXX``: safetensors' ``save_file`` (so diffusers'
    ``save_pretrained`` too) writes through a temp file of Rust's tempfile crate, ``.tmp`` + 6
    alphanumerics, in the target's folder, which a kill mid-write leaves there."""
    rust_tempfile = len(name) == 10 and name.startswith(".tmp") and name[4:].isascii() and name[4:].isalnum()
    return rust_tempfile or (name.startswith(".") and name.endswith(".tmp"))


def main_process() -> bool:
    """Rank 0 of ``accelerate launch`` / torchrun (they set RANK), or a plain process."""
    return os.environ.get("RANK", "0") == "0"


def _busy(run_dir: Path, holder: dict[str, Any]) -> UserError:
    return UserError(f"{run_dir}: in use by another eegsine process (PID {holder.get('pid', '?')} on "
                     f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to finish "
                     "or use another --run folder")


# -- config comparison -------------------------------------------------------------------------------
def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every differing (nested: dotted) key."""
    out = []
    for k in list(new) + [k for k in old if k not in new]:
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


class RunFolder:
    """A run folder held by this process (see the module docstring)."""

    def __init__(self, path: str | Path, lock: bool = True):
        self.path = Path(path)
        self.lock = lock
        self.swept: list[Path] = []
        self.notes: list[str] = []  # what the start did to the folder, for the run's log
        self._fd: int | None = None

    # -- lock ----------------------------------------------------------------------------------
    def __enter__(self) -> RunFolder:
        if not self.lock:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except OSError as e:
            user = disk_error(self.path / LOCK_FILE, e)
            if user is None:
                raise
            raise user from None
        self.swept = self.sweep()
        if self.swept:
            shown = ", ".join(str(p.relative_to(self.path)) for p in self.swept[:3])
            self.notes.append(f"removed {len(self.swept)} temporaries of a killed writer ({shown}"
                              f"{', ...' if len(self.swept) > 3 else ''})")
        return self

    def log_notes(self, logger: Any) -> None:
        for note in self.notes:
            logger.info(f"{self.path}: {note}")

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire(self) -> None:
        path = self.path / LOCK_FILE
        for _ in range(10):
            try:
                got = take_lock(path)
            except LockHeld as held:
                raise _busy(self.path, held.holder) from None
            if got is not None:
                self._fd, dead = got
                if dead:
                    self.notes.append(f"took over the lock of dead process {dead.get('pid', '?')} "
                                      f"(started {dead.get('started', '?')})")
                return
        raise UserError(f"{path}: could not take the lock (it keeps changing hands)")

    def release(self) -> None:
        if self._fd is None:
            return
        give_back_lock(self.path / LOCK_FILE, self._fd)
        self._fd = None

    # -- temporaries -----------------------------------------------------------------------------------
    def sweep(self) -> list[Path]:
        """Remove ``.*.tmp`` files and folders left by dead writers (call only under the lock)."""
        removed = []
        for root, dirs, files in os.walk(self.path):
            here = Path(root)
            for name in [d for d in dirs if is_temporary(d)]:
                shutil.rmtree(here / name, ignore_errors=True)
                removed.append(here / name)
                dirs.remove(name)
            dirs[:] = [d for d in dirs if not (here / d / LOCK_FILE).exists()]  # another run's folder
            for name in files:
                if is_temporary(name):
                    with contextlib.suppress(FileNotFoundError):
                        (here / name).unlink()
                    removed.append(here / name)
        return removed

    # -- config ------------------------------------------------------------------------------------------
    def holds_results(self) -> bool:
        """Anything beyond what a failed attempt leaves (config.json, log.txt, the lock, temporaries)."""
        return any(p.name not in NOT_RESULTS and not is_temporary(p.name) for p in self.path.iterdir())

    def check_config(self, cfg: Any) -> None:
        """Refuse a config that differs from the one whose results this folder holds (naming the keys)."""
        path = self.path / CONFIG_FILE
        if not path.exists() or not self.holds_results():
            return
        try:  # the typed config a new run goes through: a file it does not read is never compared or rewritten
            old = type(cfg).load(path).to_dict()
        except UserError as e:
            raise UserError(f"{self.path}: holds results, but its config is not one this eegsine reads ({e}); "
                            "use another --run folder, or delete this one to start over") from None
        diff = config_diff(old, json.loads(json.dumps(cfg.to_dict())))
        if diff:
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise UserError(f"{self.path}: holds a run with a different configuration ({shown}); "
                            "use another --run folder, or delete this one to start over")

    def write_config(self, cfg: Any) -> Path:
        """Check, then write ``config.json``: call once the run has started successfully."""
        self.check_config(cfg)
        return cfg.save(self.path)
