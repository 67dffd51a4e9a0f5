"""``eegsine attack --run A --run B``: robustness table, sanity checks and figures for classifier runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.bench.pipeline.presets import PRESETS
from eegsine.bench.robustness.configs import RobustnessConfig
from eegsine.config import add_config_args, config_from_args


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.bench.robustness.evaluate.evaluate_robustness`' keyword arguments."""
    base = PRESETS["robustness"][ns.preset] if ns.preset else None
    out = Path(ns.out) if ns.out else Path(ns.run[0]).parent / "robustness"
    return {"runs": list(ns.run), "cfg": config_from_args(RobustnessConfig, ns, base=base), "out_dir": out}


def _run(ns: argparse.Namespace) -> int:
    from eegsine.bench.robustness.evaluate import evaluate_robustness

    kwargs = kwargs_from_args(ns)
    out = kwargs["out_dir"]
    summary = evaluate_robustness(**kwargs)  # every run's config.json validated before the output folder is made
    failed = [f"{lb}:{k}" for lb, m in summary["models"].items() for k, c in m["checks"].items()
              if c["passed"] is False]
    print(f"wrote {out / 'robustness.md'}, {out / 'robustness.json'}, {out / 'acc_vs_eps.png'}"
          + (f"; FAILED sanity checks: {', '.join(failed)}" if failed else "; all sanity checks that ran passed"))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attack",
                              help="evaluate classifier runs under FGSM / PGD / APGD / FAB / Square / AutoAttack",
                              description="Attack one or more classifier run folders (eps in [0, 1] pixel units) and "
                              "write robustness.md/json, acc_vs_eps.png, logits.png and the sanity checks.")
    p.add_argument("--run", action="append", required=True, help="classifier run folder (repeat: --run A --run B)")
    p.add_argument("--out", default=None, help="output folder (default: <parent of first run>/robustness)")
    p.add_argument("--preset", choices=PRESETS["robustness"], default=None, help="named evaluation settings")
    add_config_args(p, RobustnessConfig)
    p.set_defaults(func=_run)
