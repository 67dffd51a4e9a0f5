"""The main job: ``eegsine pipeline --preset tiny`` runs every stage end to end.

data -> sine classifier (both heads, adversarially trained) -> robustness table -> encoder
alignment -> diffusion -> generation + image quality -> export + INT8 -> verification ->
bench -> report. Each stage writes ``.stages/<name>.json`` atomically when it completes and
is skipped on the next run while that record exists, so a killed pipeline resumes (and the
training stages themselves resume from their checkpoints). ``--force STAGE`` re-runs one.

With ``--jobs 2`` (the default on 2 or more cores) stages that do not read each other's outputs run
side by side, each in its own process with ``--threads`` threads (:mod:`eegsine.bench.pipeline.lanes`:
the classifier and robustness beside the encoder and diffusion, generation beside export and verify;
the timed stream and bench alone). A stage's process is the one its command would be, so a stage
computes the same numbers in a lane as on its own.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
import traceback
from typing import Callable

from eegsine.errors import UserError
from eegsine.io import read_json, run_logger, write_json
from eegsine.bench.pipeline.config import STAGE_NAMES, Context, PipelineConfig, Stage, stage_record
from eegsine.bench.pipeline.lanes import by_priority, makespan, ready
from eegsine.bench.pipeline.progress import Eta, Heartbeat, eta_text, expected_seconds
from eegsine.bench.report.build import build_report
from eegsine.bench.pipeline.stages import STAGES, main_commands

POLL_S = 0.5


def _outcome(run: Callable[[Context], dict], ctx: Context) -> tuple:
    """("done", result) | ("failed", one-line message) | ("crashed", "Type: message", traceback)."""
    try:
        return ("done", run(ctx) or {})
    except UserError as e:
        return ("failed", str(e))
    except Exception as e:  # noqa: BLE001 - a stage bug is recorded with its traceback, then raised by the pipeline
        return ("crashed", f"{type(e).__name__}: {e}", traceback.format_exc())


def _stage_in_process(cfg_data: dict, name: str) -> tuple:
    """A lane's process: the stage with a fresh interpreter (its own seeds, threads and memory)."""
    os.environ["EEGSINE_PROGRESS"] = "lines"  # two lanes' bars would overwrite each other's line on a terminal
    cfg = PipelineConfig.from_dict(cfg_data)
    return _outcome(STAGES[name].run, Context(cfg, run_logger(cfg.root, "pipeline")))


def _child(send, fn: Callable[..., tuple], args: tuple) -> None:
    """The body of a stage's process: its outcome back through the pipe."""
    send.send(fn(*args))
    send.close()


class _Inline(cf.Executor):
    """One stage at a time, in this process (``--jobs 1``)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001 - concurrent.futures' signature
        fut: cf.Future = cf.Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


class _Spawn(cf.Executor):
    """A fresh process per stage (spawn: its own interpreter, seeds, threads and memory), joined when it ends;
    the ones still running when the pipeline stops (a failure, Ctrl-C) are terminated, none outlives it."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list = []

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001 - concurrent.futures' signature
        fut: cf.Future = cf.Future()
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, args=(send, fn, args), name="eegsine-stage")
        proc.start()
        send.close()  # the child holds the only send end: its exit without a result is an EOF here

        def watch() -> None:
            try:
                outcome = recv.recv()
            except (EOFError, OSError):
                proc.join()  # the pipe closes before the exit code is known
                outcome = ("failed", f"the stage's process ended without a result (exit code {proc.exitcode}; "
                                     "killed, or out of memory?)")
            proc.join()
            recv.close()
            fut.set_result(outcome)

        threading.Thread(target=watch, name=f"watch-{proc.pid}", daemon=True).start()
        self.procs.append(proc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(10)


def _executor(cfg: PipelineConfig, custom: bool) -> cf.Executor:
    if cfg.jobs == 1:
        return _Inline()
    if custom:  # stages given by the caller (tests): closures cannot cross a process boundary
        return cf.ThreadPoolExecutor(cfg.jobs)
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads)  # read by OpenMP when a lane imports torch
    return _Spawn()


class _Run:
    """The state of one invocation: what is done, running, failed; the summary written after every change."""

    def __init__(self, cfg: PipelineConfig, stages: dict[str, Stage]):
        self.cfg, self.stages, self.root = cfg, stages, cfg.root
        self.log = run_logger(self.root, "pipeline")
        self.ctx = Context(cfg, self.log)
        self.selected = [s for s in STAGE_NAMES if s in cfg.stages]
        self.eta = Eta(expected_seconds(self.root, cfg.preset, self.selected), self.selected)
        # every selected stage is listed from the start, so a report of a running pipeline counts what is to come
        self.summary: dict = {"preset": cfg.preset, "threads": cfg.threads, "jobs": cfg.jobs,
                              "stages": [{"name": n, "status": "pending"} for n in self.selected]}
        self.entry = {e["name"]: e for e in self.summary["stages"]}
        self.finished: set[str] = set()
        self.failed: list[str] = []
        self.running: dict[cf.Future, tuple[str, float, Heartbeat]] = {}
        self.t_all = time.perf_counter()

    def number(self, name: str) -> str:
        return f"[{self.selected.index(name) + 1}/{len(self.selected)}] {name}"

    def skip_done(self) -> None:
        for name in self.selected:
            entry = self.entry[name]
            entry.update(command=self.stages[name].command(self.ctx))
            rec = stage_record(self.root, name)
            if rec.exists() and name not in self.cfg.force:
                entry.update(status="skipped (done)", seconds=0.0, result=read_json(rec).get("result", {}))
                self.finished.add(name)
                self.log.info(f"{self.number(name)}: outputs exist, skipped (--force {name} re-runs it)")

    def todo(self) -> list[str]:
        return [n for n in self.selected if self.entry[n]["status"] in ("pending", "running")]

    def eta_line(self, name: str) -> str:
        now = time.perf_counter()
        elapsed = {n: now - t0 for n, t0, _ in self.running.values()}
        left = makespan({n: self.eta.stage(n) or 0.0 for n in self.selected}, self.todo(), self.selected,
                        self.cfg.jobs, elapsed)
        return eta_text(self.eta, name, self.todo(), left)

    def start(self, name: str, pool: cf.Executor) -> None:
        self.entry[name].update(status="running", started=time.time(), expected_s=self.eta.stage(name))
        write_json(self.root / "pipeline.json", self.summary)
        self.log.info(f"{self.number(name)}: running ({self.eta_line(name)}; "
                      f"total elapsed {time.perf_counter() - self.t_all:.0f} s)")
        beat = Heartbeat(self.log.info, name, self.eta.stage(name)).__enter__()
        t0 = time.perf_counter()
        if isinstance(pool, _Spawn):
            fut = pool.submit(_stage_in_process, self.cfg.to_dict(), name)
        else:
            fut = pool.submit(_outcome, self.stages[name].run, self.ctx)
        self.running[fut] = (name, t0, beat)

    def finish(self, fut: cf.Future) -> None:
        name, t0, beat = self.running.pop(fut)
        beat.__exit__()
        dt, outcome = time.perf_counter() - t0, fut.result()
        self.finished.add(name)
        if outcome[0] == "done":
            self.entry[name].update(status="done", seconds=dt, result=outcome[1])
            write_json(stage_record(self.root, name),
                       {"name": name, "seconds": dt, "result": outcome[1], "finished": time.time()})
            self.eta.finished(name, dt)
            self.log.info(f"{self.number(name)}: done in {dt:.1f} s")
        else:
            self.failed.append(name)
            self.entry[name].update(status=f"failed: {outcome[1]}", seconds=dt)
            self.log.error(f"{self.number(name)}: FAILED" + (f": {outcome[1]}" if outcome[0] == "failed"
                                                             else f"\n{outcome[2]}"))
        write_json(self.root / "pipeline.json", self.summary)
        if name != "report":
            _partial_report(self.root, self.log)

    def loop(self, pool: cf.Executor) -> None:
        while True:
            stop = self.failed and not self.cfg.keep_going
            if not stop:
                names = {n for n, _, _ in self.running.values()}
                seconds = {n: self.eta.stage(n) or 0.0 for n in self.selected}
                for name in by_priority(self.todo(), self.selected, seconds):
                    if (self.entry[name]["status"] == "pending" and len(self.running) < self.cfg.jobs
                            and ready(name, self.selected, self.finished, names)):
                        self.start(name, pool)
                        names.add(name)
            if not self.running:
                break
            done, _ = cf.wait(list(self.running), timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                self.finish(fut)
        for name in self.todo():
            self.entry[name].update(status="not run (an earlier stage failed)", seconds=0.0)


def run_pipeline(cfg: PipelineConfig, stages: dict[str, Stage] | None = None) -> dict:
    """Run (or resume) the pipeline; return the summary written to ``pipeline.json``."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.root, "pipeline_config.json")
    run = _Run(cfg, stages or STAGES)
    run.skip_done()
    pool = _executor(cfg, custom=stages is not None)
    try:
        run.loop(pool)
    finally:
        for _, _, beat in run.running.values():
            beat.__exit__()
        pool.shutdown(wait=True, cancel_futures=True)
    summary = run.summary
    summary["total_seconds"] = time.perf_counter() - run.t_all
    summary["failed"] = run.failed
    write_json(cfg.root / "pipeline.json", summary)
    if run.entry.get("report", {}).get("status") == "done":  # rendered while it ran: now it counts itself done
        build_report(cfg.root, main_commands(cfg))
    if run.failed:
        raise UserError(f"pipeline: stage(s) failed: {', '.join(run.failed)} (see {cfg.root / 'log.txt'}); "
                        "rerun to resume")
    run.log.info(f"pipeline done in {summary['total_seconds']:.0f} s; report: {cfg.root / 'report.html'}")
    return summary


def _partial_report(root, log) -> None:
    """The report of the run so far (under a second), so there is something to open long before the end."""
    try:
        paths = build_report(root)
    except Exception as e:  # noqa: BLE001 - a report that cannot render yet never stops the pipeline; it says why
        log.info(f"report so far: not rendered ({type(e).__name__}: {e})")
    else:
        log.info(f"report so far: {paths['html']}")
