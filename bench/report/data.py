"""What a pipeline folder holds, read from the JSON its stages wrote (never from their markdown).

:func:`load_run` returns a :class:`Run` whose parts are ``None`` where a stage did not run or
wrote nothing; :func:`checks` lists every pass/fail a run recorded (verification gates, the
device re-verification, robustness sanity checks, bench targets, failed stages) and
:func:`wilson` gives the interval of a proportion whose run stored only ``k / n``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from eegsine.io import read_json
from eegsine.stats import wilson_ci


def _json(path: Path) -> Any:
    """The JSON at ``path``, or None when absent or unreadable (a stage killed mid-write)."""
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError, json.JSONDecodeError):  # a broken file is reported as missing, not a crash
        return None


@dataclasses.dataclass
class Run:
    root: Path
    pipeline: dict | None = None                                    # pipeline.json
    records: dict[str, dict] = dataclasses.field(default_factory=dict)  # .stages/<name>.json
    classifier: dict[str, dict] = dataclasses.field(default_factory=dict)  # sub-run name -> metrics["train"]
    classifier_model: dict[str, dict] = dataclasses.field(default_factory=dict)  # each head's model config.json
    robustness: dict | None = None                                  # robustness/robustness.json
    encoder: dict | None = None                                     # encoder/metrics.json["encoder"]
    diffusion: dict | None = None                                   # diffusion/metrics.json["diffusion"]
    generation: dict | None = None                                  # diffusion/metrics.json["generation"]
    gen_index: dict | None = None                                   # generation/index.json
    domain_net: dict | None = None                                  # diffusion/domain-cnn-*/metrics.json
    domain_name: str = ""
    verify: dict | None = None                                      # bundle/verify.json
    device_verify: dict | None = None                               # bundle/verifications.json, last record
    manifest: dict | None = None                                    # bundle/manifest.json
    stream: dict | None = None                                      # stream/summary.json
    bench: dict | None = None                                       # bench/bench.json
    generation_dir: Path = Path(".")                                # the folder whose metrics.json has generation

    def stage_status(self, name: str) -> str:
        """done / running / pending / failed: ... / not run ... / not selected (absent from pipeline.json)."""
        for s in (self.pipeline or {}).get("stages", []):
            if s.get("name") == name:
                st = str(s.get("status", "?"))
                return "done" if st.startswith("skipped (done)") else st
        return "done" if name in self.records else "not selected"

    def stage_seconds(self, name: str) -> float | None:
        rec = self.records.get(name)
        return float(rec["seconds"]) if rec and isinstance(rec.get("seconds"), (int, float)) else None


def load_run(root: str | Path) -> Run:
    root = Path(root)
    run = Run(root=root, pipeline=_json(root / "pipeline.json"))
    for rec in sorted((root / ".stages").glob("*.json")):
        d = _json(rec)
        if isinstance(d, dict):
            run.records[rec.stem] = d
    for sub in sorted((root / "classifier").glob("*/metrics.json")):
        m = _json(sub)
        if isinstance(m, dict) and "train" in m:
            run.classifier[sub.parent.name] = m["train"]
            run.classifier_model[sub.parent.name] = _json(sub.parent / "model" / "config.json") or {}
    run.robustness = _json(root / "robustness" / "robustness.json")
    if run.robustness is None:
        run.robustness = (_json(root / "robustness" / "metrics.json") or {}).get("robustness")
    run.encoder = (_json(root / "encoder" / "metrics.json") or {}).get("encoder")
    dm = _json(root / "diffusion" / "metrics.json") or {}
    run.diffusion, run.generation = dm.get("diffusion"), dm.get("generation")
    run.generation_dir = root / "diffusion"
    if run.generation is None:
        run.generation = (_json(root / "generation" / "metrics.json") or {}).get("generation")
        run.generation_dir = root / "generation"
    run.gen_index = _json(root / "generation" / "index.json")
    for d in sorted((root / "diffusion").glob("domain-cnn-*")):
        run.domain_net, run.domain_name = _json(d / "metrics.json"), d.name
    run.verify = _json(root / "bundle" / "verify.json")
    recs = (_json(root / "bundle" / "verifications.json") or {}).get("records") or []
    run.device_verify = recs[-1] if recs else None
    run.manifest = _json(root / "bundle" / "manifest.json")
    run.stream = _json(root / "stream" / "summary.json")
    run.bench = _json(root / "bench" / "bench.json")
    return run


# -- intervals ------------------------------------------------------------------------------------
def wilson(p: float | None, n: int | None, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (:func:`eegsine.stats.wilson_ci`) of a proportion ``p`` of ``n`` stored only as a
    float: k = round(p n) (stored accuracies are float32 k / n); the interval contains ``p``; nan when unknown."""
    if p is None or not n or not math.isfinite(p):
        return float("nan"), float("nan")
    lo, hi = wilson_ci(round(p * n), n, level)
    return min(lo, p), max(hi, p)


# -- pass/fail ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Check:
    group: str        # "stage", "verification gate", "device gate", "sanity check", "bench target"
    name: str
    passed: bool | None   # None: skipped (neither passed nor failed)
    detail: str = ""


def _gate_detail(g: dict) -> str:
    v, lim, unit = g.get("value"), g.get("limit"), g.get("unit", "")
    rule = g.get("rule", "<=")
    v = f"{v:.3g}" if isinstance(v, (int, float)) else str(v)
    return f"{v} {unit} (limit {rule} {lim} {unit})".replace("  ", " ")


def checks(run: Run) -> list[Check]:
    out: list[Check] = []
    for s in (run.pipeline or {}).get("stages", []):
        st = str(s.get("status", ""))
        if st.startswith("failed"):
            out.append(Check("stage", s.get("name", "?"), False, st))
        elif st.startswith("not run"):  # the consequence of a failure counted above: neither passed nor failed
            out.append(Check("stage", s.get("name", "?"), None, st))
    for sec in ("classifier", "eeg"):
        part = (run.verify or {}).get(sec) or {}
        for g in part.get("gates", []):
            out.append(Check("verification gate", g["gate"], bool(g["passed"]), _gate_detail(g)))
        for skipped in part.get("gates_skipped", []):
            out.append(Check("verification gate", str(skipped), None, "skipped"))
    for g in (run.device_verify or {}).get("gates", []):
        out.append(Check("device gate", g["gate"], bool(g["passed"]), _gate_detail(g)))
    for label, m in ((run.robustness or {}).get("models") or {}).items():
        for name, c in (m.get("checks") or {}).items():
            out.append(Check("sanity check", f"{label}: {name}", bool(c.get("passed")), str(c.get("detail", ""))))
    for t in (run.bench or {}).get("targets", []):
        out.append(Check("bench target", t["target"], bool(t["met"]), str(t.get("measured", ""))))
    return out


# -- formatting -----------------------------------------------------------------------------------
def num(v: Any, digits: int = 3) -> str:
    if v is None or isinstance(v, str):
        return "—" if v is None else v
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"


def pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def with_ci(v: float | None, ci: Any, digits: int = 3, as_pct: bool = False) -> str:
    """``value [lo, hi]``; a dagger marks an interval that excludes its estimate (written before the fix)."""
    f = (lambda x: pct(x, 1)) if as_pct else (lambda x: num(x, digits))
    if v is None or not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None or not math.isfinite(ci[0]):
        return f(v)
    lo, hi = ci
    mark = "" if lo - 1e-9 <= v <= hi + 1e-9 else " †"
    return f"{f(v)} [{f(lo)}, {f(hi)}]{mark}"
