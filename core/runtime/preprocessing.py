"""EEG preprocessing that travels with a model: the typed spec and the one filter implementation.

:class:`PreprocessingSpec` says what an encoder's input went through: sampling rate, channel
names in order, units and scale, reference, the epoch window relative to the stimulus marker,
and the filters (high-pass ``l_freq`` / low-pass ``h_freq`` Butterworth of ``order``, notches,
``phase`` "causal" or "zero-phase") together with their second-order sections (``sos``).
Data set loaders produce it, the encoder run saves it (``encoder/preprocessing.json``), the
bundle carries it (``models.eeg_encoder.preprocessing`` in ``manifest.json``) and the stream
runtime applies it. The spec is designed once with scipy (:meth:`PreprocessingSpec.design`,
training time); applying it needs numpy only, so a device reads the stored coefficients.

Filters: :class:`SOSFilter` is a stateful causal cascade of biquads in direct form II
transposed (scipy's ``sosfilt`` state layout, one state per row/channel). It evaluates the
recursion in blocks through the section's state-space matrices (a lower-triangular Toeplitz
of the impulse response plus the state's free response), which is the same arithmetic as the
per-sample recursion up to float64 rounding, but runs as BLAS matrix products: a Python loop
per sample was the alternative (~6 numpy calls per sample and section). Streaming a signal
chunk by chunk gives the output of one offline call (tests: < 1e-10). Both start from the
steady state of the first sample (scipy's ``sosfilt_zi`` x ``x[0]``), so a DC offset does not
ring. :func:`zero_phase_filter` is forward-backward (``sosfiltfilt``'s odd padding) with the
same sections; it is offline only, and a model trained on it is recorded as such (the stream
runtime then warns: it can only filter causally).

Hand-written: scipy designs the filters, but the runtime must not need scipy, and MNE's and
BrainFlow's filters are offline or keep no state a caller can carry across chunks.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from eegsine.config import Config
from eegsine.errors import UserError, require

UNITS = ("V", "uV", "a.u.")
_TO_VOLTS = {"V": 1.0, "uV": 1e-6}
SPEC_FILE = "preprocessing.json"


def unit_factor(source: str, target: str) -> float:
    """Multiply a signal in ``source`` units by this to get ``target`` units ("a.u." converts as 1)."""
    for u in (source, target):
        if u not in UNITS:
            raise UserError(f"units must be one of {list(UNITS)}, got {u!r}")
    if "a.u." in (source, target):
        return 1.0
    return _TO_VOLTS[source] / _TO_VOLTS[target]


@dataclasses.dataclass
class PreprocessingSpec(Config):
    """What an EEG encoder's input went through, from the amplifier's samples to the model's epoch."""

    KIND = "eeg-preprocessing"
    VERSION = 1

    sfreq: float = dataclasses.field(default=0.0, metadata={"help": "sampling rate (Hz); no resampling at run time"})
    ch_names: list[str] = dataclasses.field(default_factory=list, metadata={"help": "channels, in the model's order"})
    units: Literal["V", "uV", "a.u."] = dataclasses.field(default="uV", metadata={
        "help": "units of the model's input (a.u.: the data set carries no units; a source must match its scale)"})
    scale: float = dataclasses.field(default=1.0, metadata={"help": "model input = scale x (signal in units)"})
    reference: str = dataclasses.field(default="as-recorded", metadata={
        "help": "as-recorded | average (common average) | a channel name (subtracted from every channel)"})
    tmin: float = dataclasses.field(default=0.0, metadata={"help": "epoch start relative to the marker (s)"})
    tmax: float = dataclasses.field(default=0.0, metadata={"help": "epoch end relative to the marker (s, exclusive)"})
    l_freq: float = dataclasses.field(default=0.0, metadata={"help": "high-pass edge (Hz), 0 = none (MNE naming)"})
    h_freq: float = dataclasses.field(default=0.0, metadata={"help": "low-pass edge (Hz), 0 = none"})
    order: int = dataclasses.field(default=4, metadata={"help": "Butterworth order"})
    notch: list[float] = dataclasses.field(default_factory=list, metadata={"help": "notch frequencies (Hz)"})
    notch_q: float = 30.0
    phase: Literal["causal", "zero-phase"] = dataclasses.field(default="causal", metadata={
        "help": "causal (what a stream can do) or zero-phase (forward-backward, offline only)"})
    sos: list[list[float]] = dataclasses.field(default_factory=list, metadata={
        "help": "second-order sections [b0, b1, b2, 1, a1, a2] of the filters above (designed, not hand-set)"})
    source: str = dataclasses.field(default="", metadata={"help": "who produced the spec (data set, notes)"})

    @property
    def n_chans(self) -> int:
        return len(self.ch_names)

    @property
    def n_times(self) -> int:
        return int(round((self.tmax - self.tmin) * self.sfreq))

    @property
    def offset(self) -> int:
        """First epoch sample relative to the marker's sample."""
        return int(round(self.tmin * self.sfreq))

    @property
    def has_filters(self) -> bool:
        return bool(self.sos)

    def sos_array(self) -> np.ndarray:
        return np.asarray(self.sos, np.float64).reshape(-1, 6)

    def expected_sections(self) -> int:
        n = len(self.notch)
        if self.l_freq > 0 and self.h_freq > 0:
            n += self.order                       # a band-pass of order N has 2N poles
        elif self.l_freq > 0 or self.h_freq > 0:
            n += (self.order + 1) // 2
        return n

    def validate(self) -> None:
        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise UserError(f"PreprocessingSpec.{field} must be {what}, got {getattr(self, field)!r}")

        need(self.sfreq > 0, "sfreq", "> 0 Hz")
        need(len(self.ch_names) >= 1, "ch_names", "a non-empty list")
        need(len(set(self.ch_names)) == len(self.ch_names), "ch_names", "unique")
        need(self.scale != 0, "scale", "non-zero")
        need(self.tmax > self.tmin, "tmax", f"> tmin ({self.tmin})")
        need(self.n_times >= 1, "tmax", f"at least one sample after tmin at {self.sfreq:g} Hz")
        need(bool(self.reference.strip()), "reference", "'as-recorded', 'average' or a channel name")
        nyq = self.sfreq / 2
        need(0 <= self.l_freq < nyq, "l_freq", f"in [0, {nyq:g}) Hz (0 = no high-pass)")
        need(0 <= self.h_freq < nyq, "h_freq", f"in [0, {nyq:g}) Hz (0 = no low-pass)")
        need(not (self.l_freq > 0 and self.h_freq > 0) or self.l_freq < self.h_freq, "h_freq",
             f"> l_freq ({self.l_freq})")
        need(1 <= self.order <= 16, "order", "in [1, 16]")
        need(all(0 < f < nyq for f in self.notch), "notch", f"frequencies in (0, {nyq:g}) Hz")
        need(self.notch_q > 0, "notch_q", "> 0")
        for i, row in enumerate(self.sos):
            if len(row) != 6 or not all(math.isfinite(v) for v in row) or row[3] != 1.0:
                raise UserError(f"PreprocessingSpec.sos[{i}] must be 6 finite numbers [b0, b1, b2, 1, a1, a2], "
                                f"got {row!r}")
            if np.abs(np.roots([1.0, row[4], row[5]])).max(initial=0.0) >= 1.0:
                raise UserError(f"PreprocessingSpec.sos[{i}] is unstable (a pole on or outside the unit circle)")
        want = self.expected_sections()
        if len(self.sos) != want:
            raise UserError(f"PreprocessingSpec.sos has {len(self.sos)} sections, the declared filters (l_freq="
                            f"{self.l_freq:g}, h_freq={self.h_freq:g}, order={self.order}, notch={self.notch}) need "
                            f"{want}; build the spec with PreprocessingSpec.design(...)")

    # -- design (training time: scipy) --------------------------------------------------------
    @classmethod
    def design(cls, sfreq: float, ch_names: list[str], *, l_freq: float = 0.0, h_freq: float = 0.0, order: int = 4,
               notch: list[float] | tuple[float, ...] = (), notch_q: float = 30.0,
               phase: str = "causal", **fields: Any) -> "PreprocessingSpec":
        """A spec whose ``sos`` are designed with scipy: Butterworth high/low/band-pass, then iirnotch sections."""
        signal = require("scipy.signal", "designing a filter (PreprocessingSpec.design)")
        butter, iirnotch, tf2sos = signal.butter, signal.iirnotch, signal.tf2sos

        nyq = sfreq / 2
        for name, f in (("l_freq", l_freq), ("h_freq", h_freq)):
            if not 0 <= f < nyq:
                raise UserError(f"{name}={f:g}: must be in [0, {nyq:g}) Hz "
                                f"(0 = off; Nyquist at {sfreq:g} Hz is {nyq:g})")
        if l_freq > 0 and h_freq > 0 and not l_freq < h_freq:
            raise UserError(f"band-pass {l_freq:g}-{h_freq:g} Hz: the low edge must be below the high edge")
        sections = []
        if l_freq > 0 and h_freq > 0:
            sections.append(butter(order, [l_freq, h_freq], btype="bandpass", fs=sfreq, output="sos"))
        elif l_freq > 0:
            sections.append(butter(order, l_freq, btype="highpass", fs=sfreq, output="sos"))
        elif h_freq > 0:
            sections.append(butter(order, h_freq, btype="lowpass", fs=sfreq, output="sos"))
        for f in notch:
            if not 0 < f < nyq:
                raise UserError(f"notch={f:g} Hz: must be in (0, {nyq:g}) Hz")
            sections.append(tf2sos(*iirnotch(f, notch_q, fs=sfreq)))
        sos = np.concatenate(sections) if sections else np.zeros((0, 6))
        sos = sos / sos[:, 3:4] if len(sos) else sos
        return cls(sfreq=float(sfreq), ch_names=list(ch_names), l_freq=float(l_freq), h_freq=float(h_freq),
                   order=int(order), notch=[float(f) for f in notch], notch_q=float(notch_q), phase=phase,  # type: ignore[arg-type]
                   sos=sos.tolist(), **fields)

    def describe(self) -> str:
        parts = []
        if self.l_freq > 0 or self.h_freq > 0:
            band = (f"{self.l_freq:g}-{self.h_freq:g} Hz band-pass" if self.l_freq > 0 and self.h_freq > 0 else
                    f"{self.l_freq:g} Hz high-pass" if self.l_freq > 0 else f"{self.h_freq:g} Hz low-pass")
            parts.append(f"{band} (Butterworth order {self.order})")
        if self.notch:
            parts.append("notch " + ", ".join(f"{f:g}" for f in self.notch) + " Hz")
        filt = (", ".join(parts) + f", {self.phase}") if parts else "no filter"
        return (f"{self.n_chans} ch @ {self.sfreq:g} Hz, {self.units} x {self.scale:g}, reference {self.reference}, "
                f"epoch {self.tmin:g}..{self.tmax:g} s ({self.n_times} samples), {filt}")

    def mne_info(self, montage: bool = True) -> Any:
        """``mne.Info`` of these channels (EEG), with 10-05 positions (:func:`standard_montage`) where names match."""
        mne = require("mne", "channel positions (mne.Info)")

        info = mne.create_info(list(self.ch_names), self.sfreq, ch_types="eeg")
        if montage:
            info.set_montage(standard_montage(), on_missing="ignore", match_case=False)
        return info


def standard_montage() -> Any:
    """MNE's 10-05 montage: ``colin27_1005`` where this MNE has it (it deprecates ``standard_1005``, same positions)."""
    mne = require("mne", "the 10-05 montage")

    names = mne.channels.get_builtin_montages()
    return mne.channels.make_standard_montage("colin27_1005" if "colin27_1005" in names else "standard_1005")


# -- filters (numpy only) --------------------------------------------------------------------
def _check_sos(sos: np.ndarray) -> np.ndarray:
    sos = np.asarray(sos, np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6:
        raise UserError(f"sos must have shape (n_sections, 6), got {sos.shape}")
    if len(sos) and not np.allclose(sos[:, 3], 1.0):
        sos = sos / sos[:, 3:4]
    return sos


def _state_space(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DF2T biquad as x' = A x + B u, y = x[0] + b0 u."""
    b0, b1, b2, _, a1, a2 = s
    return np.array([[-a1, 1.0], [-a2, 0.0]]), np.array([b1 - a1 * b0, b2 - a2 * b0]), float(b0)


def steady_state(sos: np.ndarray) -> np.ndarray:
    """(n_sections, 2) DF2T states of the cascade after a long constant input of 1 (scipy's ``sosfilt_zi``)."""
    sos = _check_sos(sos)
    zi = np.zeros((len(sos), 2))
    gain = 1.0
    for k, s in enumerate(sos):
        A, B, _ = _state_space(s)
        zi[k] = np.linalg.solve(np.eye(2) - A, B) * gain
        gain *= s[:3].sum() / s[3:].sum()
    return zi


class SOSFilter:
    """Causal SOS cascade with per-row state: ``y = f(x)`` for chunks ``x`` (rows, n) in time order.

    The first call starts from the steady state of its first sample (``init="steady"``) or from
    zero (``init="zero"``). Output float64.
    """

    # block 32: 0.12 s for 8,192 rows x 500 samples of a 4-section band-pass on this 2-core machine
    # (block 8: 0.24 s, 64: 0.17 s, 128: 0.20 s; scipy's C sosfilt: 0.03 s); a 32-sample chunk of 128
    # channels takes 0.08 ms
    def __init__(self, sos: np.ndarray, block: int = 32, init: Literal["steady", "zero"] = "steady"):
        self.sos = _check_sos(sos)
        self.block = int(block)
        self.init = init
        self.zi = steady_state(self.sos) if len(self.sos) else np.zeros((0, 2))
        self.state: np.ndarray | None = None      # (n_sections, rows, 2)
        self._mats = [self._matrices(s) for s in self.sos]

    def _matrices(self, s: np.ndarray) -> dict[str, np.ndarray]:
        A, B, d = _state_space(s)
        n = self.block
        powers = np.empty((n + 1, 2, 2))
        powers[0] = np.eye(2)
        for i in range(n):
            powers[i + 1] = A @ powers[i]
        h = np.empty(n)
        h[0] = d
        h[1:] = powers[: n - 1, 0, :] @ B                     # C A^(m-1) B
        idx = np.arange(n)
        lag = idx[:, None] - idx[None, :]
        T = np.where(lag >= 0, h[np.clip(lag, 0, None)], 0.0)  # (n, n) lower-triangular Toeplitz
        return {"T": T, "O": powers[:n, 0, :].copy(), "P": powers, "Q": powers[:n] @ B}

    def reset(self) -> None:
        self.state = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise UserError(f"SOSFilter: expected (rows, n_samples), got shape {x.shape}")
        if not len(self.sos) or x.shape[1] == 0:
            return x.copy()
        if self.state is None:
            first = x[:, 0] if self.init == "steady" else np.zeros(len(x))
            self.state = self.zi[:, None, :] * first[None, :, None]
        if self.state.shape[1] != len(x):
            raise UserError(f"SOSFilter: got {len(x)} rows, the filter's state has {self.state.shape[1]}")
        y = x
        for k, m in enumerate(self._mats):
            out = np.empty_like(y)
            z = self.state[k]
            for a in range(0, y.shape[1], self.block):
                xb = y[:, a:a + self.block]
                L = xb.shape[1]
                out[:, a:a + L] = xb @ m["T"][:L, :L].T + z @ m["O"][:L].T
                z = z @ m["P"][L].T + xb @ m["Q"][:L][::-1]
            self.state[k] = z
            y = out
        return y


def causal_filter(x: np.ndarray, sos: np.ndarray, axis: int = -1,
                  init: Literal["steady", "zero"] = "steady") -> np.ndarray:
    """One offline call of :class:`SOSFilter` along ``axis`` (every other axis is an independent row)."""
    x = np.asarray(x)
    moved = np.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    y = SOSFilter(sos, init=init)(flat)
    return np.moveaxis(y.reshape(moved.shape), -1, axis)


def zero_phase_filter(x: np.ndarray, sos: np.ndarray, axis: int = -1) -> np.ndarray:
    """Forward-backward filtering with odd-extension padding (the defaults of scipy's ``sosfiltfilt``)."""
    sos = _check_sos(sos)
    moved = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    if not len(sos):
        return np.moveaxis(flat.reshape(moved.shape).copy(), -1, axis)
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    pad = 3 * ntaps
    n = flat.shape[1]
    if n <= pad:
        raise UserError(f"zero-phase filter: {n} samples is too short for {len(sos)} sections (needs > {pad})")
    left = 2 * flat[:, :1] - flat[:, pad:0:-1]
    right = 2 * flat[:, -1:] - flat[:, -2:-pad - 2:-1]
    ext = np.concatenate([left, flat, right], axis=1)
    fwd = SOSFilter(sos)(ext)                                 # steady state x first sample = sosfilt_zi * x[0]
    back = SOSFilter(sos)(fwd[:, ::-1])[:, ::-1]
    y = back[:, pad:pad + n]
    return np.moveaxis(y.reshape(moved.shape), -1, axis)


def apply_filters(x: np.ndarray, spec: PreprocessingSpec, axis: int = -1) -> np.ndarray:
    """The spec's filters, offline, in its phase; float32 out (identity without filters)."""
    if not spec.has_filters:
        return np.asarray(x, np.float32)
    f = causal_filter if spec.phase == "causal" else zero_phase_filter
    return f(x, spec.sos_array(), axis=axis).astype(np.float32)


def apply_filters_batched(x: np.ndarray, spec: PreprocessingSpec, rows: int = 64) -> np.ndarray:
    """:func:`apply_filters` over trials (N, C, T), ``rows`` trials at a time (bounded float64 scratch)."""
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), rows):
        out[i:i + rows] = apply_filters(x[i:i + rows], spec)
    return out


def rereference(x: np.ndarray, reference: str, ch_names: list[str], axis: int = -2) -> np.ndarray:
    """Apply the spec's reference along the channel ``axis``: as-recorded (no-op), average, or a channel."""
    if reference == "as-recorded":
        return x
    if reference == "average":
        return x - x.mean(axis=axis, keepdims=True)
    if reference not in ch_names:
        raise UserError(f"reference channel {reference!r} is not among the channels ({', '.join(ch_names[:8])}...)")
    i = ch_names.index(reference)
    return x - np.take(x, [i], axis=axis)


def load_spec(directory: Any) -> PreprocessingSpec | None:
    """``directory/preprocessing.json`` if there (an encoder folder), else None."""
    from pathlib import Path

    path = Path(directory) / SPEC_FILE
    return PreprocessingSpec.load(path) if path.is_file() else None


__all__ = ["PreprocessingSpec", "SOSFilter", "causal_filter", "zero_phase_filter", "apply_filters",
           "apply_filters_batched", "steady_state", "unit_factor", "rereference", "load_spec", "SPEC_FILE"]
