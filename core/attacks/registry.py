"""The attack registry, torch-free: every attack's name, kind, strength knobs, label and builder.

Each :class:`AttackSpec` labels itself (``spec.label(params)``: the table label and whether it
runs at published strength) and its builder (``spec.make``, called by :func:`eegsine.attacks.algorithms.build_attack`);
adding an attack is one entry below. The builders receive :mod:`eegsine.attacks.algorithms` as their first
argument, imported only when an attack is built, so configs that name attacks (``eegsine attack
--attacks``) are checked against :data:`ATTACKS` without importing torch or torchattacks.

:data:`ATTACKS` is what ``eegsine attack`` evaluates; :data:`TRAINING_ATTACKS` holds the two
that adversarial training and its validation craft examples with (torchattacks' own FFGSM and
single-run PGD, kept as they were so trained runs reproduce, and Wong et al.'s FGSM-RS as their code has it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


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
    fgsm_rs_alpha: float | None = None  # fgsm-rs step; None: 1.25 eps (Wong et al. 2020)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a builder attacks: the model, the L-inf radius, the class count, the knobs and a transfer source."""

    model: Any
    eps: float
    n_classes: int | None   # the targeted attacks and AutoAttack need it
    p: AttackParams
    source: Any = None

    @property
    def pgd(self) -> dict[str, Any]:
        """Keyword arguments of :class:`eegsine.attacks.algorithms.PGD` at this radius and strength."""
        return dict(eps=self.eps, alpha=self.p.pgd_alpha, steps=self.p.pgd_steps, restarts=self.p.pgd_restarts)


Label = Callable[[AttackParams], tuple[str, bool]]
Builder = Callable[[Any, Target], Any]   # (the eegsine.attacks.algorithms module, target) -> a torchattacks.Attack


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: str          # "single-step", "iterative", "black-box", "ensemble", "adaptive", "transfer"
    expensive: bool    # evaluated on the smaller ``n_eval_expensive`` subset
    make_label: Label = dataclasses.field(repr=False, compare=False)
    make: Builder = dataclasses.field(repr=False, compare=False)
    sine_only: bool = False
    needs_source: bool = False

    def label(self, p: AttackParams) -> tuple[str, bool]:
        """(label for tables, full strength?) -- reduced-strength runs are labelled as such."""
        label, full = self.make_label(p)
        if not full and "REDUCED" not in label:
            label += " (REDUCED strength)"
        return label, full


def _runs(p: AttackParams) -> str:
    return f"{p.pgd_steps} steps, {p.pgd_restarts} restart{'s' if p.pgd_restarts > 1 else ''}"


def _aa_full(p: AttackParams) -> bool:
    return p.apgd_steps >= 100 and p.fab_steps >= 100 and p.square_queries >= 5000 and p.n_targets >= 9


_EVALUATED = [
    AttackSpec("fgsm", "single-step", False, lambda p: ("FGSM", True),
               lambda a, t: a.torchattacks.FGSM(t.model, eps=t.eps)),
    AttackSpec("pgd-ce", "iterative", False, lambda p: (f"PGD-{p.pgd_steps} CE ({_runs(p)})", True),
               lambda a, t: a.PGD(t.model, loss="ce", **t.pgd)),
    AttackSpec("pgd-margin", "iterative", False, lambda p: (f"PGD-{p.pgd_steps} margin ({_runs(p)})", True),
               lambda a, t: a.PGD(t.model, loss="margin", **t.pgd)),
    AttackSpec("apgd-ce", "iterative", False, lambda p: (f"APGD-CE ({p.apgd_steps} it)", p.apgd_steps >= 100),
               lambda a, t: a.apgd(t.model, t.eps, t.p.apgd_steps, t.p.seed, "ce")),
    AttackSpec("apgd-dlr", "iterative", False, lambda p: (f"APGD-DLR ({p.apgd_steps} it)", p.apgd_steps >= 100),
               lambda a, t: a.apgd(t.model, t.eps, t.p.apgd_steps, t.p.seed, "dlr")),
    AttackSpec("apgd-t", "iterative", True,
               lambda p: (f"APGD-T ({p.n_targets} targets x {p.apgd_steps} it)",
                          p.apgd_steps >= 100 and p.n_targets >= 9),
               lambda a, t: a.apgd_targeted(t.model, t.eps, t.n_classes, t.p.apgd_steps, t.p.n_targets, t.p.seed)),
    AttackSpec("fab-t", "iterative", True,
               lambda p: (f"FAB-T ({p.n_targets} targets x {p.fab_steps} it)", p.fab_steps >= 100 and p.n_targets >= 9),
               lambda a, t: a.fab_targeted(t.model, t.eps, t.n_classes, t.p.fab_steps, t.p.n_targets, t.p.seed)),
    AttackSpec("square", "black-box", True,
               lambda p: (f"Square ({p.square_queries} queries)", p.square_queries >= 5000),
               lambda a, t: a.square(t.model, t.eps, t.p.square_queries, t.p.seed)),
    AttackSpec("autoattack", "ensemble", True,
               lambda p: ("AutoAttack standard" + ("" if _aa_full(p) else " (REDUCED strength)"), _aa_full(p)),
               lambda a, t: a.AutoAttackStandard(t.model, eps=t.eps, n_classes=t.n_classes, seed=t.p.seed,
                                                 apgd_steps=t.p.apgd_steps, fab_steps=t.p.fab_steps,
                                                 square_queries=t.p.square_queries, n_targets=t.p.n_targets)),
    AttackSpec("bpda-pgd", "adaptive", False, lambda p: (f"BPDA-PGD-{p.pgd_steps} CE, sin'=1 ({_runs(p)})", True),
               lambda a, t: a.PGD(a.BPDASine(t.model), loss="ce", judge=t.model, **t.pgd), sine_only=True),
    AttackSpec("presine-pgd", "adaptive", False, lambda p: (f"Pre-sine PGD-{p.pgd_steps} margin ({_runs(p)})", True),
               lambda a, t: a.PGD(a.PreSine(t.model), loss="margin", judge=t.model, **t.pgd), sine_only=True),
    AttackSpec("transfer", "transfer", False, lambda p: (f"Transfer PGD-{p.pgd_steps} CE from Standard", True),
               lambda a, t: a.Transfer(t.model, a.PGD(t.source, loss="ce", **t.pgd)), needs_source=True),
]

# torchattacks' own: FFGSM (Wong et al. 2020) and PGD from one random start with mean CE, unjudged; and
# FGSM-RS exactly as Wong et al.'s code takes it (the gradient at the unclipped random start)
_TRAINING = [
    AttackSpec("fgsm-rs", "single-step", False,
               lambda p: (f"FGSM-RS (step {p.fgsm_rs_alpha if p.fgsm_rs_alpha is not None else '1.25 eps'})", True),
               lambda a, t: a.torchattacks.FFGSM(t.model, eps=t.eps, alpha=t.p.fgsm_rs_alpha or 1.25 * t.eps)),
    AttackSpec("fgsm-rs-wong", "single-step", False,
               lambda p: ("FGSM-RS, Wong et al.'s code (step "
                          f"{p.fgsm_rs_alpha if p.fgsm_rs_alpha is not None else '1.25 eps'}, "
                          "gradient at the unclipped start)", True),
               lambda a, t: a.FGSMRSWong(t.model, eps=t.eps, alpha=t.p.fgsm_rs_alpha)),
    AttackSpec("pgd-rs", "iterative", False, lambda p: (f"PGD-{p.pgd_steps} CE (1 random start)", True),
               lambda a, t: a.torchattacks.PGD(t.model, eps=t.eps, alpha=t.p.pgd_alpha or 2.5 * t.eps / t.p.pgd_steps,
                                               steps=t.p.pgd_steps, random_start=True)),
]

ATTACKS: dict[str, AttackSpec] = {s.name: s for s in _EVALUATED}
TRAINING_ATTACKS: dict[str, AttackSpec] = {s.name: s for s in _TRAINING}
REGISTRY: dict[str, AttackSpec] = {**ATTACKS, **TRAINING_ATTACKS}

WHITE_BOX = [n for n, s in ATTACKS.items() if s.kind in ("single-step", "iterative", "ensemble", "adaptive")]


def describe(name: str, p: AttackParams) -> tuple[str, bool]:
    """(label for tables, full strength?) of attack ``name`` -- reduced-strength runs are labelled as such."""
    return REGISTRY[name].label(p)
