"""The summary card, the report's first screen: what was trained on what data, the key figures
with their intervals, controls and chance, and every gate and target with pass/fail.

Built from the run's JSON (:mod:`eegsine.bench.report.data`); a stage that did not run shows
as such in its row instead of breaking the card.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from eegsine.bench.report.data import Check, Run, checks, num, pct, wilson, with_ci
from eegsine.bench.report.doc import Box, Cell, Details, Fig, H, L, P, Table

GROUPS = ("stage", "verification gate", "device gate", "sanity check", "bench target")


def _status(run: Run, stage: str) -> Cell | None:
    """None when the stage is done, else a muted/failed cell saying what happened to it."""
    st = run.stage_status(stage)
    if st == "done":
        return None
    return (st, "fail") if st.startswith("failed") else (st if st != "not selected" else "not run", "muted")


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


# -- data ----------------------------------------------------------------------------------------
def data_rows(run: Run) -> list[list[Cell]]:
    """One row per stage: what it ran on and how many samples; a stage without results says what happened to it
    (its results shown with the failure when the last attempt failed: they are then stale)."""
    rows: list[list[Cell]] = []
    for stage, describe in _DATA:
        st = _status(run, stage)
        got = describe(run)
        if got is None:
            rows.append([stage, st or ("no results written", "muted"), ""])
        else:
            text, n = got
            rows.append([stage, f"{text} ({st[0]})" if st and st[1] == "fail" else text, n])
    return rows


def _classifier_data(run: Run) -> tuple[str, str] | None:
    c = run.classifier
    if not c:
        return None
    first = next(iter(c.values()))
    heads = ", ".join(f"{k} ({v.get('head', '?')} head)" for k, v in c.items())
    return (f"{first.get('dataset', '?')} ({first.get('data_source', '?')}); {heads}; "
            f"{first.get('mode', '?')} training at eps {first.get('eps', '?')}",
            f"{_n(first.get('n_train', '?'))} train · {_n(first.get('n_test', '?'))} test")


def _robustness_data(run: Run) -> tuple[str, str] | None:
    r = run.robustness
    if not r:
        return None
    eps = (r.get("config") or {}).get("eps") or []
    return (f"{r.get('dataset', '?')} {r.get('split', 'test')}; {len(r.get('attacks', {}))} attacks"
            + (f" at eps {min(eps):g}-{max(eps):g}" if eps else ""),
            f"{r.get('n_eval', '?')} images ({r.get('n_eval_expensive', '?')} for black-box)")


def _encoder_data(run: Run) -> tuple[str, str] | None:
    e = (run.encoder or {}).get("data")
    if not e:
        return None
    n_cls = len(e.get("seen_classes", [])) + len(e.get("unseen_classes", []))
    return (f"{e.get('name', '?')}: {e.get('n_chans', '?')} ch × {e.get('n_times', '?')} samples @ "
            f"{num(e.get('sfreq'), 0)} Hz, {n_cls} classes",
            f"{_n(e.get('n_train'))} train · {_n(e.get('n_val'))} val · {_n(e.get('n_test'))} test trials")


def _diffusion_data(run: Run) -> tuple[str, str] | None:
    d = run.diffusion
    if not d:
        return None
    params = sum(v for v in (d.get("params") or {}).values() if isinstance(v, (int, float))
                 ) - (d.get("params") or {}).get("vae_decoder", 0)
    return (f"{d.get('data', '?')} EEG → {_n(d.get('n_train_images', '?'))} stimulus images; "
            f"{len(d.get('history', []))} epochs, {params / 1e6:.2f} M parameters",
            f"{_n(d.get('n_train_trials', '?'))} trials")


def _generation_data(run: Run) -> tuple[str, str] | None:
    g = run.generation
    if not g:
        return None
    dn = run.domain_net or {}
    feat = g.get("feature_network", "?") + (f" (its top-1 {pct(dn['test_top1'])} on {_n(dn.get('n_test'))} "
                                              "test images)" if "test_top1" in dn else "")
    return (f"{g.get('data', '?')} {g.get('split', '?')} split, {g.get('sampler')} "
            f"{g.get('steps')} steps; metric features: {feat}", f"{_n(g.get('n_trials', '?'))} trials")


def _verify_data(run: Run) -> tuple[str, str] | None:
    v = run.verify
    if not v:
        return None
    cd, ed = (v.get("classifier") or {}).get("data") or {}, (v.get("eeg") or {}).get("data") or {}
    parts = ([f"{_n(cd['n_eval'])} images"] if "n_eval" in cd else []) + (
        [f"{_n(ed['n_trials'])} trials"] if "n_trials" in ed else [])
    host = (v.get("host") or {}).get("isa_class", "")
    return "INT8 bundle vs FP32, same inputs" + (f", host ISA class {host}" if host else ""), " · ".join(parts)


def _stream_data(run: Run) -> tuple[str, str] | None:
    s = run.stream
    if not s:
        return None
    return (f"{s.get('source', '?')}: {s.get('n_chans', '?')} ch @ {num(s.get('sfreq'), 0)} Hz, "
            f"{num(s.get('signal_s'), 0)} s, {s.get('precision', '?')} bundle", f"{_n(s.get('markers', '?'))} markers")


def _bench_data(run: Run) -> tuple[str, str] | None:
    b = run.bench
    if not b:
        return None
    ok = [x for x in b.get("rows", []) if x.get("status") == "ok"]
    return (f"{(b.get('meta') or {}).get('machine', '?')}; {len({x['model'] for x in ok})} models × "
            f"{len({x['backend'] for x in ok})} backends measured",
            f"{(b.get('meta') or {}).get('iters', '?')} calls per cell")


# stage -> (what it ran on, how many) from its results, None without them; in the card's order
_DATA = (("classifier", _classifier_data), ("robustness", _robustness_data), ("encoder", _encoder_data),
         ("diffusion", _diffusion_data), ("generation", _generation_data), ("verify", _verify_data),
         ("stream", _stream_data), ("bench", _bench_data))


# -- key figures -----------------------------------------------------------------------------------
def key_eps(run: Run) -> float | None:
    """The eps the robust figures are quoted at: the classifiers' training eps when it was attacked."""
    r = run.robustness or {}
    eps = sorted(float(e) for e in ((r.get("config") or {}).get("eps") or []))
    train = {c.get("eps") for c in run.classifier.values()}
    for e in train:
        if isinstance(e, (int, float)) and any(abs(e - x) < 1e-9 for x in eps):
            return float(e)
    return eps[len(eps) // 2] if eps else None


def robust_min(run: Run, label: str, eps: float) -> tuple[float, int, str] | None:
    """Lowest accuracy over the attacks run at ``eps`` on model ``label``: (accuracy, n, attack label)."""
    r = run.robustness or {}
    best = None
    for a, per in ((r.get("models") or {}).get(label, {}).get("results") or {}).items():
        for v in per.values():
            if abs(float(v.get("eps", -1)) - eps) < 1e-9 and isinstance(v.get("accuracy"), (int, float)):
                if best is None or v["accuracy"] < best[0]:
                    label = (r.get("attacks") or {}).get(a, {}).get("label", a)
                    best = (float(v["accuracy"]), int(v.get("n", 0)), label)
    return best


def reduced_attacks(run: Run) -> list[str]:
    """The attacks this run ran below published strength (fewer steps, restarts or queries)."""
    attacks = (run.robustness or {}).get("attacks") or {}
    return [m.get("label", a) for a, m in attacks.items() if not m.get("full_strength", True)]


def key_rows(run: Run) -> list[list[Cell]]:
    """The key-figure rows: classifier and robustness, encoder, generation, INT8 bundle, streaming (a stage
    without results shows as one row saying so)."""
    return (_classifier_rows(run) + _encoder_rows(run) + _generation_rows(run) + _int8_rows(run)
            + _stream_rows(run))


def _missing(run: Run, what: str, stage: str) -> list[Cell]:
    return [what, _status(run, stage) or ("no results written", "muted"), "", "", ""]


def _n_cls(run: Run) -> int | None:
    return (run.generation or {}).get("n_classes")


def _chance(run: Run) -> str:
    n_classes = next((c.get("n_classes") for c in run.classifier_model.values() if c), None)
    return pct(1 / n_classes) if n_classes else "—"


def _classifier_rows(run: Run) -> list[list[Cell]]:
    """Classifier + robustness, one pair of rows per head."""
    rows: list[list[Cell]] = []
    r = run.robustness or {}
    models = r.get("models") or {}
    eps = key_eps(run)
    chance = _chance(run)
    if models:
        for label, m in models.items():
            sub = Path(str(m.get("run", ""))).name
            tr = run.classifier.get(sub)
            if tr and isinstance(tr.get("test_clean_accuracy"), (int, float)):
                acc, n, split = tr["test_clean_accuracy"], tr.get("n_test"), "test"
            else:
                acc, n, split = m.get("clean_accuracy"), r.get("n_eval"), "eval subset"
            rows.append([f"clean accuracy, {label} ({m.get('head', '?')} head)",
                         with_ci(acc, wilson(acc, n), as_pct=True), f"{_n(n)} {split}", "", chance])
            lowest = robust_min(run, label, eps) if eps is not None else None
            if lowest:
                a, n2, which = lowest
                value: Cell = with_ci(a, wilson(a, n2), as_pct=True)
                what = f"robust accuracy at eps {eps:g}, {label}"
                if reduced_attacks(run):  # the tiny preset's cut-down attacks: a smoke test, not a robustness figure
                    value, what = (value, "muted"), what + " (smoke test: reduced-strength attacks)"
                rows.append([what, value, _n(n2), f"lowest of the attacks: {which}", chance])
    elif run.classifier:
        for name, tr in run.classifier.items():
            acc, n = tr.get("test_clean_accuracy"), tr.get("n_test")
            rows.append([f"clean accuracy, {name} ({tr.get('head', '?')} head)",
                         with_ci(acc, wilson(acc, n), as_pct=True), f"{_n(n)} test", "", chance])
        rows.append(_missing(run, "robust accuracy", "robustness"))
    else:
        rows.append(_missing(run, "classifier accuracy", "classifier"))
    return rows


def _encoder_rows(run: Run) -> list[list[Cell]]:
    """The aligned embedding vs its controls."""
    seen = (run.encoder or {}).get("seen")
    if not (seen and "aligned" in seen):
        return [_missing(run, "EEG encoder probe", "encoder")]
    rows: list[list[Cell]] = []
    n, ch = seen.get("n_trials"), seen.get("chance_top1")
    al, sh, co = seen["aligned"], seen.get("shuffled_labels") or {}, seen.get("class_only") or {}
    for key, what in (("linear_probe_top1", "EEG encoder linear-probe top-1"),):
        rows.append([what, with_ci(al.get(key), wilson(al.get(key), n)), _n(n),
                     f"shuffled labels {num(sh.get(key))} · class-only {num(co.get(key))}", num(ch)])
    if "retrieval" in al:
        rt = al["retrieval"]
        rows.append([f"EEG→image retrieval top-1 ({rt.get('n_way', '?')}-way)",
                     with_ci(rt.get("top1"), wilson(rt.get("top1"), n)), _n(n),
                     f"shuffled labels {num((sh.get('retrieval') or {}).get('top1'))} · class-only "
                     f"{num((co.get('retrieval') or {}).get('top1'))}", num(rt.get("chance_top1"))])
    return rows


def _generation_rows(run: Run) -> list[list[Cell]]:
    """Generation: n-way accuracy and the image metrics, EEG vs its controls."""
    g = run.generation
    if not (g and "eeg" in (g.get("conditions") or {})):
        return [_missing(run, "generated-image accuracy, FID, IS", "generation")]
    n_cls = _n_cls(run)
    c = g["conditions"]
    gt = (g.get("ground_truth") or {}).get("acc")

    def ctrl(key: str, digits: int = 3) -> str:
        return " · ".join(f"{k} {num(v.get(key), digits)}" for k, v in c.items() if k != "eeg")

    fn = g.get("feature_network", "?")
    return [[f"generated-image {n_cls}-way accuracy (EEG)", with_ci(c["eeg"].get("acc"), c["eeg"].get("acc_ci")),
             _n(c["eeg"].get("n")), ctrl("acc") + (f" · ground truth {num(gt)}" if gt is not None else ""),
             num(1 / n_cls) if n_cls else "—"],
            [f"FID on {fn} features (EEG, lower = better)",
             with_ci(c["eeg"].get("fid_domain"), c["eeg"].get("fid_domain_ci"), 2), _n(c["eeg"].get("n")),
             ctrl("fid_domain", 2), "—"],
            [f"IS on {fn} (EEG)", with_ci(c["eeg"].get("is_domain"), c["eeg"].get("is_domain_ci"), 2),
             _n(c["eeg"].get("n")), ctrl("is_domain", 2), f"1 (range 1-{n_cls})" if n_cls else "—"]]


def _int8_rows(run: Run) -> list[list[Cell]]:
    """The INT8 bundle against FP32."""
    v = run.verify
    if not v:
        return [_missing(run, "INT8 vs FP32", "verify")]
    rows: list[list[Cell]] = []
    acc = (v.get("classifier") or {}).get("accuracy") or {}
    n = ((v.get("classifier") or {}).get("data") or {}).get("n_eval")
    i8, f32 = (acc.get("ort_int8") or {}).get("clean"), (acc.get("ort_fp32") or {}).get("clean")
    if isinstance(i8, (int, float)):
        rows.append(["INT8 classifier clean accuracy", with_ci(i8 / 100, wilson(i8 / 100, n), as_pct=True), _n(n),
                     f"FP32 {pct(f32 / 100) if isinstance(f32, (int, float)) else '—'}", _chance(run)])
    m = ((v.get("eeg") or {}).get("metrics")) or {}
    if "fp32" in m and "int8" in m:
        rows.append(["INT8 generation fid_domain",
                     with_ci(m["int8"].get("fid_domain"), m["int8"].get("fid_domain_ci"), 2),
                     _n(m["int8"].get("n")), f"FP32 {num(m['fp32'].get('fid_domain'), 2)}", "—"])
    return rows


def _stream_rows(run: Run) -> list[list[Cell]]:
    """Streaming: decision latency and accuracy."""
    s = run.stream
    if not s:
        return [_missing(run, "streaming", "stream")]
    n_cls = _n_cls(run)
    lat = s.get("latency_ms") or {}
    rows: list[list[Cell]] = [
        ["stream decision latency p99", f"{num(lat.get('p99'))} ms", _n(lat.get("n", s.get("decisions"))),
         f"p50 {num(lat.get('p50'))} ms · deadline {num(s.get('deadline_ms'), 0)} ms, "
         f"{s.get('deadline_misses', '?')} missed", ""]]
    if isinstance(s.get("accuracy"), (int, float)):
        nd = s.get("decisions")
        rows.append(["stream decision accuracy", with_ci(s["accuracy"], wilson(s["accuracy"], nd)), _n(nd), "",
                     num(1 / n_cls) if n_cls else "—"])
    return rows


# -- checks ---------------------------------------------------------------------------------------
TAGS = {"stage": "stage", "verification gate": "gate", "device gate": "device gate", "sanity check": "sanity",
        "bench target": "target"}


def _check_text(c: Check) -> str:
    return f"{TAGS.get(c.group, c.group)}: {c.name}" + (f" — {c.detail}" if c.detail else "")


def check_blocks(run: Run) -> list:
    """Gates, sanity checks and failed stages: pass/fail. Bench targets apart: a missed speed target is a
    measurement of this host, not a failed check, so it never turns the first screen red."""
    cs = [c for c in checks(run) if c.group != "bench target"]
    targets = [c for c in checks(run) if c.group == "bench target"]
    counts = []
    for grp in GROUPS[:-1]:
        mine = [c for c in cs if c.group == grp]
        if not mine:
            continue
        ok = sum(c.passed is True for c in mine)
        text = f"{grp}s {ok}/{len(mine)} pass" if grp != "stage" else f"{len(mine)} stage(s) failed or not run"
        counts.append(f"**{text}**" if ok < len(mine) else text)
    absent = [what for what, part in (("verification gates", run.verify), ("sanity checks", run.robustness))
              if not part]
    failed = [c for c in cs if c.passed is False]
    skipped = [c for c in cs if c.passed is None]
    passed = [c for c in cs if c.passed is True]
    blocks: list = [H(3, f"Checks: {len(failed)} failed, {len(passed)} passed"
                         + (f", {len(skipped)} skipped" if skipped else "")),
                    P(" · ".join(counts + [f"no {a} (stage not run)" for a in absent]) or "no checks recorded",
                      cls="status")]
    if failed or skipped:
        blocks.append(L([("✗ " + _check_text(c), "fail") for c in failed]
                        + [("– " + _check_text(c), "muted") for c in skipped], cls="checks"))
    if passed:
        blocks.append(Details(f"the {len(passed)} passed", [L([("✓ " + _check_text(c), "pass") for c in passed],
                                                              cls="checks")]))
    if targets:
        met = sum(c.passed is True for c in targets)
        blocks.append(Details(f"Speed targets of this host: {met} of {len(targets)} met (measurements, not checks; "
                              "see the bench section)",
                              [L([(("✓ " if c.passed else "· ") + _check_text(c), "muted") for c in targets],
                                 cls="checks")]))
    return blocks


def _num_cols(rows: list[list[Cell]], cols: tuple[int, ...]) -> list[list[Cell]]:
    """Mark plain-text cells of ``cols`` as numbers (right-aligned, never wrapped)."""
    return [[(c, "num") if i in cols and isinstance(c, str) else c for i, c in enumerate(r)] for r in rows]


def stage_counts(run: Run) -> str:
    """``9 stages: 4 done, 1 running, 4 to run, 0 failed`` from pipeline.json (the pipeline lists every selected
    stage from its start, so a partial run's report counts what is still to come)."""
    st = (run.pipeline or {}).get("stages", [])
    if not st:
        return "no pipeline.json: stages unknown"
    status = [run.stage_status(s.get("name", "")) for s in st]
    n = {k: sum(x.startswith(k) for x in status) for k in ("done", "running", "pending", "failed", "not run")}
    parts = [f"{n['done']} done"] + [f"{n['running']} running"] * bool(n["running"]) + \
        [f"{n['pending']} to run"] * bool(n["pending"]) + [f"{n['failed']} failed"] + \
        [f"{n['not run']} not run (after a failure)"] * bool(n["not run"])
    secs = sum(v for v in (run.stage_seconds(s.get("name", "")) for s in st) if v)
    return f"{len(st)} stages: {', '.join(parts)}" + (f" · {secs:,.0f} s of compute" if secs else "")


def strip_figure(run: Run) -> list:
    """The generated images beside the seen one (one trial per class), when the generation stage drew them."""
    g = run.generation or {}
    strip = g.get("strip") or {}
    path = run.generation_dir / str(strip.get("file", "")) if strip.get("file") else None
    if path is None or not path.is_file():
        return []
    cap = (f"{g.get('data')} {g.get('split')} split, one trial per class (rows), {g.get('sampler')} "
           f"{g.get('steps')} steps, the same seed in every column: the seen image, then generated from the trial's "
           "EEG, from its class only (class-mean embedding), from another trial's EEG (shuffled)")
    return [Fig(path, cap, 420)]


def summary_card(run: Run, title: str) -> Box:
    machine = ((run.bench or {}).get("meta") or {}).get("machine") or (
        (run.verify or {}).get("host") or {}).get("cpu", "")
    version = ((run.manifest or {}).get("packages") or {}).get("eegsine", "")
    status = stage_counts(run)
    status += "".join(f" · {x}" for x in (machine, f"eegsine {version}" if version else "") if x)
    return Box(id="summary", tag="section", blocks=[
        H(1, title),
        P(status, cls="status"),
        *strip_figure(run),
        Box(cls="cols", blocks=[
            Box([H(3, "What was trained on what data"),
                 Table(["stage", "data", "n"], data_rows(run), cls="kv")]),
            Box([H(3, "Key figures (95% CI: bootstrap for generation, Wilson otherwise)"),
                 Table(["figure", "value [95% CI]", "n", "controls", "chance"], _num_cols(key_rows(run), (1, 2, 4)),
                       cls="kv")]),
        ]),
        *check_blocks(run),
    ])
