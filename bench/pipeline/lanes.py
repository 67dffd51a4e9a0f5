"""Which stages may run side by side, and the schedule of those that do.

On this project's 2-core machines the demo runs two stages at a time with one torch thread each, instead of
one stage with two threads: OpenMP's two threads spin-wait for each other, and beside one other busy process
a training step took 69.8 ms with them against 12.3 ms with one thread (idle: 6.8 vs 11.4 ms;
``python -m eegsine.bench.speed.threads``, docs/results/threads/). Two one-thread stages never spin, so a busy
neighbour costs each at most its share of a core.

A stage starts when the stages it reads have finished (:data:`NEEDS`, among the selected ones). A *timed*
stage (:data:`TIMED`: the stream's latencies, the bench) runs alone: nothing starts beside it and it waits
for the others, so its figures are those of an otherwise idle pipeline.
"""
from __future__ import annotations

import heapq

# stage -> the stages whose outputs it reads (the pipeline order is a valid sequential schedule of these)
NEEDS: dict[str, tuple[str, ...]] = {
    "data": (),
    "classifier": ("data",),
    "robustness": ("classifier",),
    "features": ("data",),
    "encoder": ("data",),
    "diffusion": ("encoder",),
    "generation": ("diffusion", "features"),
    "export": ("classifier", "encoder", "diffusion"),
    "verify": ("export", "features"),  # its INT8 generation gate scores images on the domain CNN
    "stream": ("export",),
    "bench": ("classifier", "encoder", "diffusion", "export"),
    "report": ("data", "classifier", "robustness", "features", "encoder", "diffusion", "generation", "export",
               "verify", "stream", "bench"),
}
TIMED = frozenset({"stream", "bench", "report"})


def needs(name: str, selected: list[str]) -> tuple[str, ...]:
    """:data:`NEEDS`, and one that depends on what is selected: the verification's INT8 generation gate scores
    images on the domain CNN, which the features stage trains, or else the generation stage on its first use."""
    if name == "verify" and "features" not in selected:
        return NEEDS[name] + ("generation",)
    return NEEDS[name]


def ready(name: str, selected: list[str], finished: set[str], running: set[str]) -> bool:
    """Whether ``name`` may start now: its selected needs have finished and no timed stage blocks it."""
    if any(d in selected and d not in finished for d in needs(name, selected)):
        return False
    if name in TIMED:  # alone, and after every earlier stage of the pipeline order
        return not running and all(s in finished for s in selected[:selected.index(name)])
    return not any(r in TIMED for r in running)


def by_priority(todo: list[str], selected: list[str], seconds: dict[str, float]) -> list[str]:
    """``todo`` with the stage on the longest remaining path first (its seconds plus its longest chain of
    dependants'): the order in which ready stages are started, so the classifier never delays the diffusion."""
    longest: dict[str, float] = {}
    for i in range(len(selected) - 1, -1, -1):
        n = selected[i]
        after = [m for m in selected[i + 1:] if n in needs(m, selected) or m in TIMED]
        longest[n] = seconds.get(n, 0.0) + max((longest[m] for m in after), default=0.0)
    return sorted(todo, key=lambda n: (-longest.get(n, 0.0), selected.index(n) if n in selected else 0))


def makespan(seconds: dict[str, float], todo: list[str], selected: list[str], jobs: int,
             elapsed: dict[str, float] | None = None) -> float:
    """Seconds until ``todo`` (in pipeline order) is finished with ``jobs`` lanes: the scheduler's own rule
    played with these stage durations. ``elapsed``: running stages and how long they have run already."""
    elapsed = elapsed or {}
    finished = {s for s in selected if s not in todo}
    left = [n for n in todo if n not in elapsed]
    events = [(max(0.0, seconds.get(n, 0.0) - e), n) for n, e in elapsed.items()]
    heapq.heapify(events)
    now = 0.0
    while left or events:
        running = {n for _, n in events}
        for n in by_priority(left, selected, seconds):
            if len(running) < jobs and ready(n, selected, finished, running):
                heapq.heappush(events, (now + seconds.get(n, 0.0), n))
                running.add(n)
                left.remove(n)
        if not events:  # nothing can start: a need outside todo never finishes (not selected -> never blocks)
            break
        now, n = heapq.heappop(events)
        finished.add(n)
    return now
