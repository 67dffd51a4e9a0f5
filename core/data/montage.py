"""10-20 / 10-10 / 10-5 electrode names and idealised spherical positions.

Hand-written (MNE's ``standard_1005`` would need mne, not a dependency here). Used by
``synthetic-vep`` to give channels real names and smooth scalp topographies; the
positions are an *idealised* sphere, good for spatial smoothness, not for source
localisation.

Geometry (Oostenveld & Praamstra 2001 naming): a row is a step ``u`` along the midline in
10 % units of the nasion-inion arc (18 degrees; Cz = 0, Fz = 2, Pz = -2, half rows such as
FFC = 1.5); a column is a step ``c`` from the midline (z = 0, 1/2 = 1, 3/4 = 2, 5/6 = 3,
7/8 = 4 on the 10 % ring, 9/10 = 5 on the 0 % ring; ``h`` = half a step). Points with
``c <= 4`` lie on the great circle from the midline point to the 10 % ring point of their
row; Fp, O, OI and I rows carry their ``1/2`` on the ring (Fp1 sits where F7's row would
put column 7).
"""
from __future__ import annotations

import re

import numpy as np

from eegsine.errors import UserError

ROW_U = {"Fp": 4.0, "AFp": 3.5, "AF": 3.0, "AFF": 2.5, "F": 2.0, "FFC": 1.5, "FC": 1.0, "FCC": 0.5, "C": 0.0,
         "CCP": -0.5, "CP": -1.0, "CPP": -1.5, "P": -2.0, "PPO": -2.5, "PO": -3.0, "POO": -3.5, "O": -4.0,
         "OI": -4.5, "I": -5.0,
         # temporal names of the same rows (ring columns 7/8 and beyond)
         "FFT": 1.5, "FT": 1.0, "FTT": 0.5, "T": 0.0, "TTP": -0.5, "TP": -1.0, "TPP": -1.5}
RING_ROWS = {"Fp", "O", "OI", "I"}  # their column 1/2 is on the ring (c = 4), 1h/2h halfway

# The classic 21 positions of the 10-20 system (T7/T8/P7/P8 in 10-10 naming).
TEN_TWENTY = ["Fp1", "Fpz", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
              "P7", "P3", "Pz", "P4", "P8", "O1", "Oz", "O2"]
# 10-10 positions (55 more), then 10-5 additions (52), in front-to-back rows: 21 + 55 + 52 = 128.
TEN_TEN = ["AF7", "AF3", "AFz", "AF4", "AF8", "F9", "F5", "F1", "F2", "F6", "F10",
           "FT9", "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8", "FT10",
           "T9", "C5", "C1", "C2", "C6", "T10",
           "TP9", "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8", "TP10",
           "P9", "P5", "P1", "P2", "P6", "P10", "PO9", "PO7", "PO3", "POz", "PO4", "PO8", "PO10",
           "I1", "Iz", "I2"]
TEN_FIVE = ["AFp3", "AFp4", "AFF5h", "AFF1h", "AFF2h", "AFF6h",
            "FFT9h", "FFT7h", "FFC5h", "FFC3h", "FFC1h", "FFC2h", "FFC4h", "FFC6h", "FFT8h", "FFT10h",
            "FTT9h", "FTT7h", "FCC5h", "FCC3h", "FCC1h", "FCC2h", "FCC4h", "FCC6h", "FTT8h", "FTT10h",
            "TTP7h", "CCP5h", "CCP3h", "CCP1h", "CCP2h", "CCP4h", "CCP6h", "TTP8h",
            "TPP7h", "CPP5h", "CPP3h", "CPP1h", "CPP2h", "CPP4h", "CPP6h", "TPP8h",
            "PPO9h", "PPO5h", "PPO1h", "PPO2h", "PPO6h", "PPO10h", "POO1", "POO2", "OI1h", "OI2h"]
ALL_128 = TEN_TWENTY + TEN_TEN + TEN_FIVE

_NAME = re.compile(r"^(AFp|AFF|AF|FFC|FFT|FCC|FC|FTT|FT|Fp|F|CCP|CPP|CP|C|TTP|TPP|TP|T|PPO|POO|PO|P|OI|O|I)(z|\d+)(h?)$")


def _parse(name: str) -> tuple[float, float, int, str]:
    """name -> (row u, column c, side -1 left / +1 right / 0 midline, row prefix)."""
    m = _NAME.match(name)
    if not m:
        raise UserError(f"montage: {name!r} is not a 10-5 electrode name")
    row, col, half = m.groups()
    if col == "z":
        return ROW_U[row], 0.0, 0, row
    n = int(col)
    side = -1 if n % 2 else 1
    c = float((n + 1) // 2) - (0.5 if half else 0.0)
    if row in RING_ROWS:
        c *= 4.0  # 1 -> ring (4), 1h -> 2
    return ROW_U[row], c, side, row


def _sph(theta_deg: float, psi_deg: float) -> np.ndarray:
    """Polar angle from the vertex and azimuth from the nose towards the right ear -> (x right, y front, z up)."""
    t, p = np.deg2rad(theta_deg), np.deg2rad(psi_deg)
    return np.array([np.sin(t) * np.sin(p), np.sin(t) * np.cos(p), np.cos(t)])


def position(name: str) -> np.ndarray:
    """Unit vector (3,) of an electrode on the idealised sphere."""
    u, c, side, _ = _parse(name)
    mid = _sph(18.0 * abs(u), 0.0 if u >= 0 else 180.0)
    ring_theta = 72.0 + 18.0 * max(abs(u) - 4.0, 0.0)
    ring_psi = 90.0 - 18.0 * float(np.clip(u, -4.0, 4.0))
    if side == 0:
        return mid
    if c > 4.0:  # below the 10 % ring (columns 9/10)
        return _sph(ring_theta + 18.0 * (c - 4.0), side * ring_psi)
    ring = _sph(ring_theta, side * ring_psi)
    omega = np.arccos(np.clip(mid @ ring, -1.0, 1.0))
    f = c / 4.0
    return (np.sin((1 - f) * omega) * mid + np.sin(f * omega) * ring) / np.sin(omega)  # slerp


def positions(names: list[str]) -> np.ndarray:
    return np.stack([position(n) for n in names]).astype(np.float64)  # (C, 3)


def montage(n_chans: int) -> list[str]:
    """``n_chans`` real electrode names, spread over the head, in front-to-back order.

    The 10-20 set first, then 10-10, then 10-5 positions; within the tier that is cut,
    electrodes are picked by farthest-point sampling so a 64- or 32-channel montage still
    covers the scalp evenly.
    """
    if not 1 <= n_chans <= len(ALL_128):
        raise UserError(f"n_chans must be in [1, {len(ALL_128)}] (10-5 montage), got {n_chans}")
    chosen: list[str] = []
    for tier in (TEN_TWENTY, TEN_TEN, TEN_FIVE):
        need = n_chans - len(chosen)
        if need <= 0:
            break
        if need >= len(tier):
            chosen += tier
            continue
        pos = positions(tier)
        if chosen:
            d = np.min(np.arccos(np.clip(pos @ positions(chosen).T, -1, 1)), axis=1)
        else:  # start from the tier's most posterior point (visual cortex first)
            d = np.full(len(tier), 10.0)  # larger than any angle (pi)
            d[int(np.argmin(pos[:, 1]))] = 20.0
        for _ in range(need):
            i = int(np.argmax(d))
            chosen.append(tier[i])
            d = np.minimum(d, np.arccos(np.clip(pos @ pos[i], -1, 1)))
            d[i] = -1.0
    return sorted(chosen, key=lambda n: (-_parse(n)[0], float(position(n)[0])))  # rows front-to-back, left-to-right
