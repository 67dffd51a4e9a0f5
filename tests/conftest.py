"""Shared test setup: fixed threads, a private data root, no network."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import eegsine  # noqa: E402,F401  first: takes the checkout root off sys.path (its kernels/ shadows HF's kernels)
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Without a CUDA GPU the Triton kernels are tested under the interpreter (tests/test_sine_head.py). Triton fixes
# its mode when triton.language is first imported, and earlier tests import it too (torch.compile's inductor in
# the bench rows of tests/test_paper_path.py), so the whole session runs in interpreter mode on such a host.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
