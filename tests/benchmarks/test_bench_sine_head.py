"""CPU microbenchmarks of the sine head (pytest-benchmark): the torch references only.

The Triton kernels are not benchmarked here: on CPU they exist only under the interpreter,
which measures numpy, not the kernel (GPU numbers: python -m eegsine.bench.speed.kernels).
Shapes are the deployed classifier head: K=1024 features, N=10 classes, batch 1 and 256.
Each benchmark also checks its result, so a broken path cannot produce a number.
"""
from __future__ import annotations

import pytest
import torch

from eegsine.kernels import sine_head as sh, sine_head_int8 as sq

K, N, OMEGA, AMP = 1024, 10, 1.0, 1.0


def _data(batch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, K, generator=g)
    w = torch.randn(N, K, generator=g) / K ** 0.5
    b = torch.randn(N, generator=g)
    return x, w, b


def _bench(benchmark, fn):
    # fixed rounds: calibration would spend seconds per case on 2 shared cores
    return benchmark.pedantic(fn, rounds=100, iterations=3, warmup_rounds=10)


@pytest.mark.parametrize("batch", [1, 256])
def test_bench_reference_forward(benchmark, batch):
    x, w, b = _data(batch)
    with torch.no_grad():
        out = _bench(benchmark, lambda: sh.reference_sine_head(x, w, b, OMEGA, AMP))
    torch.testing.assert_close(out, torch.sin(x @ w.T + b))


@pytest.mark.parametrize("batch", [1, 256])
def test_bench_reference_predict(benchmark, batch):
    x, w, b = _data(batch)
    with torch.no_grad():
        pred = _bench(benchmark, lambda: sh.reference_sine_head_predict(x, w, b, OMEGA, AMP))
    assert torch.equal(pred.pred, torch.sin(x @ w.T + b).argmax(-1))


@pytest.mark.parametrize("batch", [1, 256])
def test_bench_reference_forward_backward(benchmark, batch):
    x, w, b = (t.requires_grad_() for t in _data(batch))

    def step():
        x.grad = w.grad = b.grad = None
        sh.reference_sine_head(x, w, b, OMEGA, AMP).sum().backward()
        return b.grad

    db = _bench(benchmark, step)
    with torch.no_grad():
        torch.testing.assert_close(db, torch.cos(x @ w.T + b).sum(0))


@pytest.mark.parametrize("batch", [1, 256])
def test_bench_reference_int8(benchmark, batch):
    x, w, b = _data(batch)
    w_q, w_s = sq.quantize_weight_per_channel(w)
    x_s = sq.activation_scale(x.abs().max().item())
    out = _bench(benchmark, lambda: sq.reference_sine_head_int8(x, w_q, w_s, b, x_s, OMEGA, AMP))
    # int8 error on this data stays well under the output range of 2 (sin in [-1, 1])
    assert (out - sh.reference_sine_head(x, w, b, OMEGA, AMP)).abs().max() < 0.1
