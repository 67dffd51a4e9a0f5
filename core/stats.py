"""The one Wilson score interval (stdlib only: the device runtime's verification gates use it too)."""
from __future__ import annotations

import math
from statistics import NormalDist


def normal_quantile(level: float) -> float:
    """z of a two-sided ``level`` interval (1.959964 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n (n >= 1)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = normal_quantile(level)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the interval always holds p; at k = 0 or k = n rounding can put a limit a hair on the wrong side
    return max(0.0, min(p, mid - half)), min(1.0, max(p, mid + half))
