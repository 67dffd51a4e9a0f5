"""Bench backends: torch.compile is compiled for every timed shape before timing."""
from __future__ import annotations

import numpy as np
import torch

from eegsine.bench.speed.backends import make_torch_compile


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return torch.sin(self.fc(x))


def test_torch_compile_runner_never_recompiles_while_timed():
    # shapes compiled by an earlier model of the same class must not use up the recompile budget
    torch.manual_seed(0)
    for b in range(2, 12):
        make_torch_compile(_Net(), ["x"], {"x": np.zeros((b, 8), np.float32)})
    net = _Net()
    feeds = [{"x": np.random.default_rng(b).normal(size=(b, 8)).astype(np.float32)} for b in (1, 16)]
    runner = make_torch_compile(net, ["x"], *feeds)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a timed call that compiles raises here
        outs = [runner.call(f)[0] for f in feeds]
    for f, o in zip(feeds, outs):
        with torch.no_grad():
            np.testing.assert_allclose(o, net(torch.from_numpy(f["x"])).numpy(), rtol=1e-5, atol=1e-6)
