"""What every trainer's loop shares: the run folder guard, Accelerate, checkpoints, learning-rate schedules, seeds.

* :func:`open_run` -- the run protocol (:class:`~eegsine.runs.folder.RunFolder`: one writer, dead
  writers' temporaries swept) plus the resume guard: a folder holding results of another
  configuration is refused before any data is read.
* :class:`Checkpoint` -- a trainer's resumable state (modules, optimizers, progress, torch RNG) in
  one folder through :mod:`eegsine.runs.checkpoint`: ``resume(fresh)`` or ``save(progress)``.
* :func:`accelerator` -- Accelerate on CUDA when there is one, else on the CPU.
* Schedules: :func:`diffusers_warmup_cosine` is diffusers' ``get_cosine_schedule_with_warmup``
  (the diffusion stages); :func:`cosine_warmup` is the same curve written out, for the encoder and
  classifier. Both are pure functions of the step, so a resumed run needs no scheduler state.

Hand-written: the glue. The two schedules are one curve -- linear warm-up to the peak, then a
half cosine to 0 -- but their floats differ in the last bit on 18-25 % of the steps
(``pi * (a / b)`` against ``pi * a / b``; ``lr * ((s + 1) / w)`` against ``lr * (s + 1) / w``;
counted over runs of 81 to 3,000 steps), so each trainer keeps the rounding its runs were made
with and the same seed still gives the same weights (checked bit for bit against the schedules
they replace on 263,172 (total, warm-up, step) triples).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from eegsine.runs.checkpoint import load_checkpoint, save_checkpoint
from eegsine.errors import UserError
from eegsine.io import run_logger
from eegsine.models import autocast  # noqa: F401 - re-exported: the trainers' precision context
from eegsine.runs.folder import RunFolder


# -- the run folder ---------------------------------------------------------------------------------
@contextlib.contextmanager
def open_run(run_dir: str | Path, cfg: Any = None, lock: bool = True) -> Iterator[RunFolder]:
    """Hold ``run_dir`` for this process (``lock``: the main one) and refuse a config that differs from its results'.

    ``cfg=None`` for a trainer whose config is completed from the data (the classifier's input
    shape): :meth:`RunFolder.write_config` compares it once it is known.
    """
    with RunFolder(run_dir, lock=lock) as run:
        if cfg is not None:
            run.check_config(cfg)  # before stage one and the data: a mismatch should not wait for them
        yield run


def start_log(run: RunFolder, name: str = "eegsine") -> logging.Logger:
    """The run's logger (``log.txt``), with what opening the folder did to it (taken-over lock, swept files)."""
    run.path.mkdir(parents=True, exist_ok=True)
    logger = run_logger(run.path, name)
    run.log_notes(logger)
    return logger


def accelerator(device: str = "auto", mixed_precision: str = "no"):
    """Accelerate's :class:`~accelerate.Accelerator` (DDP under ``accelerate launch``) on ``device`` (see
    :func:`resolve_device`), with its ``mixed_precision`` (``no``, ``bf16``, ``fp16``: autocast of the prepared
    model's forward; fp16 with a gradient scaler, on CUDA only)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    dev = resolve_device(device)
    if mixed_precision == "fp16" and dev.type != "cuda":
        raise UserError("--mixed-precision fp16 needs a CUDA device (its gradient scaler is CUDA's); use bf16 on the "
                        "CPU")
    if not several_processes():
        # one process: this run's device and precision, whatever an earlier run in this Python process asked for
        # (Accelerate keeps its state process-wide and refuses a change); an unchanged state is kept
        state, partial = AcceleratorState._shared_state, PartialState._shared_state
        if ((state and state.get("_mixed_precision") != mixed_precision)
                or (partial and (partial["device"].type == "cpu") != (dev.type == "cpu"))):
            AcceleratorState._reset_state(reset_partial_state=True)
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev.index)
    return Accelerator(cpu=dev.type == "cpu", mixed_precision=mixed_precision)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU: Accelerate's choice), ``cpu``, ``cuda`` or ``cuda:N``; a GPU asked
    for on a machine without one is a one-line error, never a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device here (torch {torch.__version__}); use --device cpu "
                            "or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def use_device(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """``model`` on ``dev``; on CUDA with TF32 matmuls/convolutions and channels-last memory (the settings that
    matter for CNNs there). Nothing changes on the CPU."""
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return model.to(dev, memory_format=torch.channels_last)
    return model.to(dev)


PRECISIONS = ("no", "bf16", "fp16")  # Accelerate's mixed_precision values (fp8 needs hardware these runs lack)


def several_processes() -> bool:
    """Whether ``accelerate launch`` / torchrun started more than one process (they set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def data_parallel(dev: torch.device):
    """Accelerate's :class:`~accelerate.Accelerator` when several processes run (DDP; gloo on the CPU), else None:
    one process keeps the plain loop, so its results are the ones it always gave."""
    if not several_processes():
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=dev.type == "cpu")


def rank_seed(seed: int, rank: int) -> int:
    """Process ``rank``'s torch seed: its own random stream (attack starts, dropout) in a data-parallel run."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


# -- checkpoints ------------------------------------------------------------------------------------
class Checkpoint:
    """One resumable state: ``modules`` and ``optimizers`` (name -> object with state_dict) in ``directory``."""

    def __init__(self, directory: str | Path, modules: dict[str, Any], optimizers: dict[str, Any]):
        self.directory = Path(directory)
        self.modules, self.optimizers = modules, optimizers

    def resume(self, fresh: dict[str, Any], logger: logging.Logger | None, what: str, count: str,
               total: int) -> dict[str, Any]:
        """Restore the committed checkpoint (weights, optimizers, torch RNG) and return its progress, else ``fresh``.

        The record's progress is checked first against ``fresh`` (same keys and JSON types) and its
        ``count`` against the run's ``total``: a damaged or foreign record is a one-line error, not a
        KeyError mid-epoch or a run that silently skips its training."""
        progress = load_checkpoint(self.directory, self.modules, self.optimizers, fresh, count, total)
        if progress is None:
            return fresh
        if logger is not None and progress[count]:
            logger.info(f"resuming {what} at {count} {progress[count]}/{total}")
        return progress

    def save(self, progress: dict[str, Any]) -> None:
        save_checkpoint(self.directory, self.modules, self.optimizers, progress)


def fused_adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (CPU and CUDA): one pass over every parameter instead of a loop of small
    ops per tensor. The same update up to float rounding; on the tiny diffusion UNet's 286 tensors an optimizer
    step took 2.7 ms fused against 14.7 ms (1 thread, Intel Xeon, 2026-12-07)."""
    return torch.optim.AdamW(params, fused=True, **kwargs)


# -- learning rate and seeds ------------------------------------------------------------------------
def diffusers_warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """step -> factor of the peak lr: diffusers' ``get_cosine_schedule_with_warmup(warmup, total)``.

    One difference, kept from the trainers' first runs: diffusers' warm-up is ``step / warmup``
    (0 at step 0, a step that learns nothing), ours ``(step + 1) / warmup``, so a warm-up step
    reads diffusers' factor one step later; from ``warmup`` on the two are the same floats.
    """
    from diffusers.optimization import get_cosine_schedule_with_warmup

    # diffusers returns the schedule as a LambdaLR; a throwaway optimizer leaves the trainer's untouched
    factor = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1.0), warmup, total).lr_lambdas[0]
    return lambda step: factor(step + 1 if step < warmup else step)


def cosine_warmup(step: int, total: int, warmup: int, peak: float) -> float:
    """The lr at ``step``: ``peak * (step + 1) / warmup`` while warming up, then a half cosine to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(1, total - warmup)))


def seeded_generator(*seed: int) -> torch.Generator:
    """A torch generator seeded from the tuple ``seed`` (run seed, epoch, stage), independent of the global RNG."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
    """``fn`` over ``x`` in chunks of ``batch`` rows (the outputs, in order)."""
    return [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
