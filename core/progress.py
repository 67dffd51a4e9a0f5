"""Progress bars that read well on a terminal and in a log file.

On a terminal, :func:`tqdm` is tqdm's bar, redrawn in place. Where the output is not a terminal (a log file,
a pipe, CI) or ``EEGSINE_PROGRESS=lines`` (each of the pipeline's side-by-side stages), the same bar is
written as a whole line at most every :data:`LINE_SECONDS` (nothing for a bar done sooner), never as
carriage-return redraws: a log holds one readable line per update instead of thousands of overwritten bars
glued to the status lines. ``EEGSINE_PROGRESS=bars`` forces redraws, ``off`` hides bars.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, TextIO

LINE_SECONDS = 30.0
_CURSOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm's cursor moves for nested bars


class _Lines:
    """A stream for tqdm that turns each redraw into one newline-terminated line (blank clears dropped)."""

    def __init__(self, stream: TextIO):
        self.stream, self.last = stream, ""

    def write(self, s: str) -> int:
        for part in _CURSOR.sub("", s).replace("\r", "\n").split("\n"):
            part = part.rstrip()
            key = part.rsplit(" [", 1)[0]  # the bar and its count, without the times
            if part.strip() and key != self.last:  # tqdm redraws its last state on close: one line of it
                self.stream.write(part + "\n")
                self.last = key
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


def mode(stream: TextIO | None = None) -> str:
    """``bars``, ``lines`` or ``off``: ``EEGSINE_PROGRESS`` if set, else bars on a terminal and lines elsewhere."""
    env = os.environ.get("EEGSINE_PROGRESS", "").strip().lower()
    if env in ("bars", "lines", "off"):
        return env
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "bars" if isatty is not None and isatty() else "lines"


@functools.lru_cache(maxsize=None)
def _line_bar_class() -> type:
    """tqdm whose redraws wait for its delay and come at most every ``mininterval`` (``set_postfix`` redraws too)."""
    from tqdm.auto import tqdm as _tqdm

    class LineBar(_tqdm):
        _last_line = float("-inf")

        def refresh(self, *args: Any, **kwargs: Any) -> Any:
            if self.disable:  # a disabled tqdm has no clock (set_postfix still calls refresh)
                return None
            now = self._time()
            if now - self.start_t < self.delay or now - self._last_line < self.mininterval:
                return None
            self._last_line = now
            return super().refresh(*args, **kwargs)

    return LineBar


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm`` with this module's line mode (same arguments). tqdm is imported here, not with the
    module: the torch-free runtime reads :func:`mode` on a device that may not have it."""
    from tqdm.auto import tqdm as _tqdm

    how = mode(kwargs.get("file"))
    if how == "off":
        kwargs["disable"] = True
    elif how == "lines":
        kwargs["file"] = _Lines(kwargs.get("file") or sys.stderr)
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.0)), LINE_SECONDS)
        kwargs["delay"] = max(float(kwargs.get("delay", 0.0)), LINE_SECONDS)  # a bar done sooner prints nothing
        kwargs.setdefault("ncols", 100)
        return _line_bar_class()(*args, **kwargs)
    return _tqdm(*args, **kwargs)
