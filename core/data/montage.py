"""10-20 / 10-10 / 10-5 electrode names for ``synthetic-vep``, positioned by MNE's 10-05 montage.

Positions come from MNE (``mne.create_info`` + ``make_standard_montage("standard_1005")``, called
``colin27_1005`` from MNE 1.13 on: the same points, :func:`eegsine.runtime.preprocessing.standard_montage`),
in MNE's head frame, as unit vectors from the centre of a sphere fitted to the 128 positions named
here (radius 97.3 mm, residual 5.5 mm RMS: the colin27 scalp is not a sphere; Cz lies 8 degrees in
front of that centre's vertical). The generator places Gaussian blobs by the angle between those
vectors. Written by hand is only the naming: which 128 names make the three tiers, and the rows and
columns that order them (Oostenveld & Praamstra 2001). mne is imported on the first position asked.

The hand-written idealised sphere this replaces (rows 18 degrees apart, the 10 % ring at 72 degrees
from the vertex) was 14.4 degrees from these directions for the same names (median; mean 15.7, max
30.8; its nearest-neighbour spacing was 11.1 degrees): it put the 0 % ring (F9/F10, T9/T10,
FT9/FT10) on the equator, ~30 degrees above MNE's, Fp1/T7 25 degrees and Fz 16 degrees off, Pz
within 2. Farthest-point subsets change with it (32 channels: CP5/CP6 instead of PO9/PO10).
"""
from __future__ import annotations

import functools
import re

import numpy as np

from eegsine.errors import UserError
from eegsine.runtime.preprocessing import standard_montage

ROW_U = {"Fp": 4.0, "AFp": 3.5, "AF": 3.0, "AFF": 2.5, "F": 2.0, "FFC": 1.5, "FC": 1.0, "FCC": 0.5, "C": 0.0,
         "CCP": -0.5, "CP": -1.0, "CPP": -1.5, "P": -2.0, "PPO": -2.5, "PO": -3.0, "POO": -3.5, "O": -4.0,
         "OI": -4.5, "I": -5.0,
         # temporal names of the same rows
         "FFT": 1.5, "FT": 1.0, "FTT": 0.5, "T": 0.0, "TTP": -0.5, "TP": -1.0, "TPP": -1.5}

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

_NAME = re.compile(r"^(AFp|AFF|AF|FFC|FFT|FCC|FC|FTT|FT|Fp|F|CCP|CPP|CP|C|TTP|TPP|TP|T|PPO|POO|PO|P|OI|O|I)"
                   r"(z|\d+)(h?)$")


def _grid(name: str) -> tuple[float, float]:
    """(row, column) of a name: the row's midline position in 10 % steps of the nasion-inion arc (Cz 0,
    Fz 2, Pz -2), the column in steps from the midline, negative on the left (C3 -2, C4 2, C1h... -0.5)."""
    m = _NAME.match(name)
    if not m:
        raise UserError(f"montage: {name!r} is not a 10-5 electrode name")
    row, col, half = m.groups()
    if col == "z":
        return ROW_U[row], 0.0
    n = int(col)
    return ROW_U[row], (-1 if n % 2 else 1) * ((n + 1) // 2 - (0.5 if half else 0.0))


def _fit_sphere(p: np.ndarray) -> np.ndarray:
    """Least-squares sphere through points (N, 3) -> its centre (3,): |p - c|^2 = r^2 is linear in (c, r^2 - |c|^2)."""
    a = np.c_[2.0 * p, np.ones(len(p))]
    return np.linalg.lstsq(a, (p ** 2).sum(axis=1), rcond=None)[0][:3]


@functools.cache
def _directions() -> dict[str, np.ndarray]:
    """Every name of ALL_128 -> unit vector (3,) in MNE's head frame (x right, y nose, z up)."""
    try:
        import mne
    except ImportError as e:
        raise UserError(f"synthetic-vep places electrodes with MNE's 10-05 montage ({e}); pip install mne") from None

    info = mne.create_info(ALL_128, 1000.0, ch_types="eeg")
    info.set_montage(standard_montage(), match_case=True, verbose="error")
    xyz = np.stack([ch["loc"][:3] for ch in info["chs"]]).astype(np.float64)   # (128, 3) m, head frame
    u = xyz - _fit_sphere(xyz)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return dict(zip(ALL_128, u))


def position(name: str) -> np.ndarray:
    """Unit vector (3,) of an electrode, from the sphere's centre."""
    _grid(name)
    d = _directions()
    if name not in d:
        raise UserError(f"montage: {name!r} is not one of synthetic-vep's 128 electrodes")
    return d[name].copy()


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
    return sorted(chosen, key=lambda n: (-_grid(n)[0], _grid(n)[1]))  # rows front-to-back, left-to-right
