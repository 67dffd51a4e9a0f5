"""The generator's linear references, as quoted in core/data/synthetic_vep.py and this folder's README.

    python docs/results/encoder/lda_reference.py [KEY=JSON ...]    # synthetic-vep loader options

Generates the set, then shrinkage LDA (Ledoit-Wolf) fitted on train + val, scored on the by-image test
split, on three feature sets: 40 ms window means as loaded, the per-channel window means alone (one
number per channel: the DC cue of issue #18), and 40 ms window means after removing each channel's mean.
One BLAS thread. Prints one line per set; the outputs quoted are in lda_reference.log.
"""
import json
import sys
import time

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from threadpoolctl import threadpool_limits

from eegsine.data.synthetic_vep import load_synthetic_vep
from eegsine.metrics.eeg_baselines import window_means


def _acc(f: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(f[tr], y[tr])
    return float((lda.predict(f[te]) == y[te]).mean())


def main(argv: list[str]) -> None:
    options = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv)}
    t0 = time.perf_counter()
    ds = load_synthetic_vep(progress=False, **options)
    print(f"options {options}: generated {ds.x.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
    tr = np.concatenate([ds.splits["train"], ds.splits.get("val", np.zeros(0, np.int64))]).astype(np.int64)
    te = ds.splits["test"]
    with threadpool_limits(limits=1):
        accs = {"window means": _acc(window_means(ds.x, win_ms=40.0, sfreq=ds.sfreq), ds.y, tr, te),
                "channel means alone": _acc(ds.x.mean(-1), ds.y, tr, te),
                "channel-centred window means": _acc(window_means(ds.x - ds.x.mean(-1, keepdims=True),
                                                                  win_ms=40.0, sfreq=ds.sfreq), ds.y, tr, te)}
    print(f"  LDA test top-1 ({len(te)} trials, chance {1 / ds.n_outputs:.2f}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
