"""Sharding an evaluation across processes (``accelerate launch``) with one process's per-example results.

An (attack, eps) run over the first m images of the subset is cut into chunks of ``chunk`` images at fixed
positions; each chunk is attacked on its own, its torch RNG seeded by :func:`chunk_seed` (seed, attack, eps,
first image), so its result does not depend on which process attacks it, nor in what order. Work items
(attack, eps, chunk) go round-robin to the processes (:meth:`Processes.mine`); their records are gathered
with Accelerate's ``gather_object`` and concatenated in chunk order (:func:`merge_chunks`): N processes give
the same per-example masks, AutoAttack components and adversarial logits as one process with the same
``chunk``. Each chunk is cached by the process that ran it, so a killed shard resumes at its missing chunks.

The seeds differ from the unchunked default (one ``torch.manual_seed(seed)`` per (attack, eps) over the
whole subset, which later batches continue from): chunking is opt-in, and the default keeps its results.

Hand-written: the round-robin and the merge; the processes, their devices and the collective are Accelerate's.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

from eegsine.errors import UserError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def chunk_seed(seed: int, attack: str, eps: float, lo: int) -> int:
    """The torch seed of one chunk: each chunk's result is reproducible on its own, in any order."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{attack}|{eps:.6g}|{lo}".encode()).digest()[:4], "little")


class Processes:
    """This process's place among the ones ``accelerate launch`` started (rank 0 of 1 without it).

    ``dev`` is the device asked for; a bare ``cuda`` becomes this process's own GPU (``cuda:LOCAL_RANK``)."""

    def __init__(self, dev: "torch.device"):
        from accelerate import PartialState

        self.state = PartialState(cpu=dev.type == "cpu")
        self.rank, self.count = self.state.process_index, self.state.num_processes
        self.device = self.state.device if self.count > 1 and dev.type == "cuda" and dev.index is None else dev
        self.is_main = self.state.is_main_process

    def check(self, chunk: int, what: str = "--chunk") -> None:
        """Several processes need chunked, per-chunk-seeded work: a one-line error otherwise."""
        if self.count > 1 and chunk < 1:
            raise UserError(f"{self.count} processes (accelerate launch) share the images only in seeded chunks: "
                            f"set {what} N (e.g. 100; the per-example results then equal one process's with the "
                            "same N)")

    def mine(self, items: Iterable[T]) -> list[tuple[int, T]]:
        """(position, item) of the items this process works on: every ``count``-th, from its rank."""
        return [(i, it) for i, it in enumerate(items) if i % self.count == self.rank]

    def gather(self, records: dict[Any, Any]) -> dict[Any, Any]:
        """Every process's ``records`` (disjoint keys) in one dict, on every process."""
        if self.count == 1:
            return dict(records)
        from accelerate.utils import gather_object

        out: dict[Any, Any] = {}
        for part in gather_object([records]):
            out.update(part)
        return out

    def wait(self) -> None:
        self.state.wait_for_everyone()


def merge_chunks(records: list[dict]) -> dict:
    """One (attack, eps) result from its chunks' results, in chunk order: per-example tensors concatenated,
    counts and seconds summed (seconds: the attack time of every process together)."""
    import torch  # here: paired_eval's report reads chunk_seed from this module without torch

    out = {"robust": torch.cat([r["robust"] for r in records]),
           "success_by": torch.cat([r["success_by"] for r in records]),
           "seconds": float(sum(r["seconds"] for r in records)),
           "n_attacked": int(sum(r["n_attacked"] for r in records)), "threads": records[0].get("threads")}
    if "adv_logits" in records[0]:
        out["adv_logits"] = torch.cat([r["adv_logits"] for r in records])
    return out
