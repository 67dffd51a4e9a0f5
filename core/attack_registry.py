"""The attack registry: every attack's name, kind and strength knobs, torch-free.

:mod:`eegsine.attacks` builds the attacks (``build_attack(name, ...)``); configs that name
attacks (``eegsine attack --attacks``) are checked against :data:`ATTACKS` without importing
torch or torchattacks.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class AttackParams:
    """Strength knobs shared by every attack (defaults = published strength)."""

    pgd_steps: int = 40
    pgd_restarts: int = 5
    pgd_alpha: float | None = None   # None: 2.5 eps / steps
    apgd_steps: int = 100
    fab_steps: int = 100
    square_queries: int = 5000
    n_targets: int = 9
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: str          # "single-step", "iterative", "black-box", "ensemble", "adaptive", "transfer"
    expensive: bool    # evaluated on the smaller ``n_eval_expensive`` subset
    sine_only: bool = False
    needs_source: bool = False


ATTACKS: dict[str, AttackSpec] = {s.name: s for s in [
    AttackSpec("fgsm", "single-step", False),
    AttackSpec("pgd-ce", "iterative", False),
    AttackSpec("pgd-margin", "iterative", False),
    AttackSpec("apgd-ce", "iterative", False),
    AttackSpec("apgd-dlr", "iterative", False),
    AttackSpec("apgd-t", "iterative", True),
    AttackSpec("fab-t", "iterative", True),
    AttackSpec("square", "black-box", True),
    AttackSpec("autoattack", "ensemble", True),
    AttackSpec("bpda-pgd", "adaptive", False, sine_only=True),
    AttackSpec("presine-pgd", "adaptive", False, sine_only=True),
    AttackSpec("transfer", "transfer", False, needs_source=True),
]}


WHITE_BOX = [n for n, s in ATTACKS.items() if s.kind in ("single-step", "iterative", "ensemble", "adaptive")]


def describe(name: str, p: AttackParams) -> tuple[str, bool]:
    """(label for tables, full strength?) -- reduced-strength runs are labelled as such."""
    full_aa = p.apgd_steps >= 100 and p.fab_steps >= 100 and p.square_queries >= 5000 and p.n_targets >= 9
    pgd = f"{p.pgd_steps} steps, {p.pgd_restarts} restart{'s' if p.pgd_restarts > 1 else ''}"
    table = {
        "fgsm": ("FGSM", True),
        "pgd-ce": (f"PGD-{p.pgd_steps} CE ({pgd})", True),
        "pgd-margin": (f"PGD-{p.pgd_steps} margin ({pgd})", True),
        "apgd-ce": (f"APGD-CE ({p.apgd_steps} it)", p.apgd_steps >= 100),
        "apgd-dlr": (f"APGD-DLR ({p.apgd_steps} it)", p.apgd_steps >= 100),
        "apgd-t": (f"APGD-T ({p.n_targets} targets x {p.apgd_steps} it)", p.apgd_steps >= 100 and p.n_targets >= 9),
        "fab-t": (f"FAB-T ({p.n_targets} targets x {p.fab_steps} it)", p.fab_steps >= 100 and p.n_targets >= 9),
        "square": (f"Square ({p.square_queries} queries)", p.square_queries >= 5000),
        "autoattack": ("AutoAttack standard" + ("" if full_aa else " (REDUCED strength)"), full_aa),
        "bpda-pgd": (f"BPDA-PGD-{p.pgd_steps} CE, sin'=1 ({pgd})", True),
        "presine-pgd": (f"Pre-sine PGD-{p.pgd_steps} margin ({pgd})", True),
        "transfer": (f"Transfer PGD-{p.pgd_steps} CE from Standard", True),
    }
    label, full = table[name]
    if not full and "REDUCED" not in label:
        label += " (REDUCED strength)"
    return label, full

