"""Lock files: ``flock`` plus the holder's PID, host and process start written in the file.

A dead holder's lock (its PID gone, or reused by another process) is taken over; a live one's is not.
:class:`eegsine.runs.folder.RunFolder` refuses a folder another process holds; :func:`locked` waits for a
short read-modify-write (``eegsine-verify`` appends its record to a bundle's ``verifications.json`` under it,
so concurrent verifies all land). Torch-free: the device runtime uses it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from eegsine.errors import UserError
from eegsine.io import disk_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the PID check alone
    fcntl = None  # type: ignore[assignment]



# -- who holds a lock --------------------------------------------------------------------------
def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3 of stat(5)
    return None if fields[0] == "Z" else int(fields[19])  # a zombie has exited: counts as dead


def _alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: cannot check, assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if Path("/proc").is_dir():
        start = _proc_start(pid)
        return start is not None and holder.get("proc_start") in (None, start)
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


# -- taking a lock file ----------------------------------------------------------------------------
class LockHeld(Exception):
    """The lock file is held by a live process (``holder``: what it wrote in the file)."""

    def __init__(self, holder: dict[str, Any]):
        super().__init__(holder)
        self.holder = holder


def _write_holder(fd: int) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)


def take_lock(path: Path) -> tuple[int, dict[str, Any]] | None:
    """One try at the lock file ``path``: (its fd, the dead holder taken over or {}), or None if it changed hands
    meanwhile (try again); raises :class:`LockHeld` while a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
    except FileExistsError:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None  # released meanwhile
        created = False
    taken = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(_read_holder(fd)) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                holder = {} if created else _read_holder(fd)
                if holder and holder.get("pid") != os.getpid() and _alive(holder):
                    raise LockHeld(holder)
                _write_holder(fd)
                taken = True
                return fd, holder
        return None  # the holder removed this file after we opened it: try again with the new one
    finally:
        if not taken:
            os.close(fd)


def give_back_lock(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # before closing: a waiter then retries on a fresh file
    os.close(fd)


@contextlib.contextmanager
def locked(path: str | Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold the lock file ``path`` for a short read-modify-write, waiting while another process holds it.

    The run folder's lock (flock + PID, a dead holder's lock taken over, removed on release), but
    waiting instead of refusing: ``eegsine-verify`` appends its record to a bundle's
    ``verifications.json`` under it, so concurrent verifies all land. After ``timeout`` seconds of
    a live holder: a one-line :class:`UserError` naming its PID.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = take_lock(path)
        except LockHeld as held:
            if time.monotonic() > deadline:
                raise UserError(f"{path}: still held by PID {held.holder.get('pid', '?')} on "
                                f"{held.holder.get('host', '?')} after {timeout:g} s; is that process hung?") from None
            got = None
        except OSError as e:
            user = disk_error(path, e)
            if user is None:
                raise
            raise user from None
        if got is not None:
            break
        time.sleep(0.01)
    try:
        yield
    finally:
        give_back_lock(path, got[0])
