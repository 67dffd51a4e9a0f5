"""L-inf evasion attacks, torchattacks style: ``attack = X(model, eps=...); adv = attack(images, labels)``.

Inputs are images in [0, 1]; ``eps`` is in the same [0, 1] pixel units; normalisation lives
inside the model. torchattacks 3.5.1 supplies FGSM, APGD (CE / DLR), APGDT, FAB and Square;
this module configures them and adds only what torchattacks lacks:

* :class:`PGD` -- Madry's PGD with random restarts, a cross-entropy **or margin** loss, and a
  ``judge`` model: a restart's result counts for an example only if the judge misclassifies
  it (torchattacks' PGD has no restarts, no margin loss, no judge).
* :class:`AutoAttackStandard` -- AutoAttack "standard" (Croce & Hein 2020) at its published
  strength, assembled from torchattacks' classes: APGD-CE (100 it), APGD-T (9 targets x 100 it),
  FAB-T (9 targets x 100 it), Square (5000 queries), worst case per example. torchattacks'
  own ``AutoAttack`` leaves every component at its 10-step default, so it is not used. The
  ensemble records which component fooled each example (the gradient-masking check needs it;
  torchattacks' ``MultiAttack`` keeps only aggregate counts in private fields).
* Adaptive attacks for the sine head (Athalye et al. 2018): :class:`BPDASine` replaces the
  derivative of ``sin`` by 1 on the backward pass (forward value unchanged), :class:`PreSine`
  exposes the pre-sine values ``omega (W x + b)`` as logits. Both are attacked with
  :class:`PGD` and always judged by the real model.
* :class:`Transfer` -- adversarial examples crafted on another (standard-head) model.

Every attack is built by its entry in :mod:`eegsine.attacks.registry` (name, kind, label and
builder in one place); :func:`build_attack` looks the entry up.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import torchattacks
    from torchattacks.attack import Attack
except ImportError as e:  # declared (the toolkit extra), but `make` installs it --no-deps: see pyproject.toml
    raise ImportError("eegsine's attacks and adversarial training need torchattacks: "
                      "pip install --no-deps torchattacks==3.5.1 (--no-deps: its torchvision requirement would "
                      "replace your torch build)", name="torchattacks") from e

from eegsine.attacks.registry import (ATTACKS, REGISTRY, TRAINING_ATTACKS, WHITE_BOX, AttackParams,  # noqa: F401
                                     AttackSpec, Target, describe)  # re-exported
from eegsine.errors import UserError


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{j != y} z_j - z_y`` (CW margin; > 0 means misclassified). (B, C), (B,) -> (B,)"""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


class PGD(Attack):
    """L-inf PGD (Madry et al. 2018) with restarts, CE or margin loss, judged by ``judge`` (default: ``model``)."""

    def __init__(self, model: nn.Module, eps: float = 0.3, alpha: float | None = None, steps: int = 40,
                 restarts: int = 1, loss: str = "ce", random_start: bool = True, judge: nn.Module | None = None):
        super().__init__("PGD", model)
        if loss not in ("ce", "margin"):
            raise UserError(f"PGD loss must be 'ce' or 'margin', got {loss!r}")
        self.eps = eps
        self.alpha = alpha if alpha is not None else 2.5 * eps / max(steps, 1)  # Madry's 2.5 eps / steps
        self.steps = steps
        self.restarts = max(1, restarts)
        self.loss = loss
        self.random_start = random_start
        self.judge = judge
        self.supported_mode = ["default"]

    def _one_run(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            logits = self.get_logits(adv)
            cost = (F.cross_entropy(logits, labels, reduction="sum") if self.loss == "ce"
                    else margin_loss(logits, labels).sum())
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        judge = self.judge if self.judge is not None else self.model
        best = images.clone()
        todo = torch.arange(len(images), device=images.device)  # not yet fooled
        for _ in range(self.restarts):
            adv = self._one_run(images[todo], labels[todo])
            with torch.no_grad():
                fooled = judge(adv).argmax(1) != labels[todo]
            best[todo] = adv  # fooled ones keep this; the rest keep the last run's point
            todo = todo[~fooled]
            if len(todo) == 0:
                break
        return best


class FGSMRSWong(Attack):
    """FGSM from a random start as in Wong, Rice & Kolter 2020's code (locuslab/fast_adversarial, MNIST and
    CIFAR-10 ``train_*``): delta ~ U(-eps, eps), the gradient taken at the **unclipped** ``x + delta``, one
    step of ``alpha``, delta clipped to the eps ball and then to ``[-x, 1 - x]``. torchattacks' FFGSM
    (``fgsm-rs``) clips the start into [0, 1] before the gradient, which on MNIST's zero background
    leaves half the start's noise at 0."""

    def __init__(self, model: nn.Module, eps: float = 0.3, alpha: float | None = None):
        super().__init__("FGSMRSWong", model)
        self.eps = eps
        self.alpha = alpha if alpha is not None else 1.25 * eps
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        delta = torch.empty_like(images).uniform_(-self.eps, self.eps).requires_grad_(True)
        loss = F.cross_entropy(self.get_logits(images + delta), labels)
        grad = torch.autograd.grad(loss, delta)[0]
        delta = (delta.detach() + self.alpha * grad.sign()).clamp(-self.eps, self.eps)
        delta = torch.max(torch.min(1 - images, delta), -images)
        return (images + delta).detach()


class BPDASine(nn.Module):
    """Sine-head classifier whose backward pass treats ``sin`` as identity (forward unchanged)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.model.head
        s = head.omega * head.pre_activation(self.model.features(x))  # (B, n_classes)
        return head.amplitude * (s + (torch.sin(s) - s).detach())


class PreSine(nn.Module):
    """Sine-head classifier cut before ``sin``: logits are ``omega (W x + b)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.model.head
        return head.omega * head.pre_activation(self.model.features(x))


class Transfer(Attack):
    """Adversarial examples crafted by ``source_attack`` (on its own model), to be judged on ``model``."""

    def __init__(self, model: nn.Module, source_attack: Attack):
        super().__init__("Transfer", model)
        self.source_attack = source_attack
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.source_attack(images, labels)


# -- torchattacks' components at AutoAttack's settings (one restart, L-inf); the registry builds them too --
def apgd(model: nn.Module, eps: float, steps: int, seed: int, loss: str) -> Attack:
    """APGD with the ``"ce"`` or ``"dlr"`` loss."""
    return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss=loss)


def apgd_targeted(model: nn.Module, eps: float, n_classes: int, steps: int, n_targets: int, seed: int) -> Attack:
    """APGD-T against the ``n_targets`` most likely other classes (at most ``n_classes - 1``)."""
    atk = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=n_classes)
    atk.n_target_classes = min(n_targets, n_classes - 1)
    return atk


def fab_targeted(model: nn.Module, eps: float, n_classes: int, steps: int, n_targets: int, seed: int) -> Attack:
    """FAB-T (multi-targeted) against the ``n_targets`` most likely other classes."""
    atk = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True,
                           n_classes=n_classes)
    atk.n_target_classes = min(n_targets, n_classes - 1)
    return atk


def square(model: nn.Module, eps: float, queries: int, seed: int) -> Attack:
    """Square (black box, margin loss) with AutoAttack's initial square size."""
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, p_init=0.8, loss="margin",
                               seed=seed)


class AutoAttackStandard(Attack):
    """AutoAttack "standard" from torchattacks' components; worst case per example.

    After a call, ``success_by`` (N,) holds the index into ``names`` of the component that
    first fooled each example, -1 if none did (robust), -2 if it was misclassified clean.
    """

    def __init__(self, model: nn.Module, eps: float = 0.3, n_classes: int = 10, seed: int = 0,
                 apgd_steps: int = 100, fab_steps: int = 100, square_queries: int = 5000, n_targets: int = 9):
        super().__init__("AutoAttackStandard", model)
        apgd_t = apgd_targeted(model, eps, n_classes, apgd_steps, n_targets, seed)
        fab_t = fab_targeted(model, eps, n_classes, fab_steps, n_targets, seed)
        self.names = ["apgd-ce", "apgd-t", "fab-t", "square"]
        self.attacks = [apgd(model, eps, apgd_steps, seed, "ce"), apgd_t, fab_t,
                        square(model, eps, square_queries, seed)]
        self.eps = eps
        self.success_by: torch.Tensor | None = None
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        out = images.clone()
        with torch.no_grad():
            ok = self.get_logits(images).argmax(1) == labels
        by = torch.full((len(images),), -2, dtype=torch.long, device=images.device)
        by[ok] = -1
        todo = ok.nonzero().squeeze(1)
        for i, atk in enumerate(self.attacks):
            if len(todo) == 0:
                break
            adv = atk(images[todo], labels[todo])
            # FAB can return points beyond eps: project, then judge (AutoAttack checks the same)
            adv = (images[todo] + (adv - images[todo]).clamp(-self.eps, self.eps)).clamp(0, 1)
            with torch.no_grad():
                fooled = self.get_logits(adv).argmax(1) != labels[todo]
            out[todo[fooled]] = adv[fooled]
            by[todo[fooled]] = i
            todo = todo[~fooled]
        self.success_by = by
        return out


def build_attack(name: str, model: nn.Module, eps: float, n_classes: int | None = None,
                 params: AttackParams | None = None, source_model: nn.Module | None = None) -> Attack:
    """Attack ``name`` (of :data:`ATTACKS` or :data:`TRAINING_ATTACKS`) against ``model`` at L-inf radius ``eps``.

    ``n_classes`` is read by the targeted attacks and AutoAttack only.
    """
    if name not in REGISTRY:
        raise UserError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})")
    spec = REGISTRY[name]
    if spec.sine_only and not hasattr(model.head, "pre_activation"):
        raise UserError(f"attack {name!r} needs a sine-head model")
    if spec.needs_source and source_model is None:
        raise UserError(f"attack {name!r} needs a source model")
    return spec.make(sys.modules[__name__], Target(model, eps, n_classes, params or AttackParams(), source_model))


class LowPrecision(nn.Module):
    """``model`` under bf16 / fp16 autocast, its logits back in fp32: the opt-in of ``eegsine attack
    --mixed-precision``. Attacks default to fp32 gradients because low-precision input gradients change which
    images an attack breaks (the table would not compare with an fp32 one); the adversarial images an attack
    crafts through this wrapper are still judged by the fp32 model. Attributes the adaptive attacks read
    (``head``, ``features``, ``cfg``) are the model's own, so their inner passes run in fp32."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (torch.autocast itself: eegsine.models' helper sits in a layer this one may not import)
        with torch.autocast(x.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16):
            return self.model(x).float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)
