"""The training stages' config dataclasses and named presets, torch-free.

``eegsine train ... --help`` and config checks read these without importing torch; the
training code (``classifier.py``, ``encoder.py``, ``diffusion.py`` beside this file) re-exports
them, so ``from eegsine.training.classifier import ClassifierTrainConfig`` still works.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

from eegsine.config import Config, Presets
from eegsine.errors import UserError
from eegsine.models.configs import ClassifierConfig, DiffusionConfig, EEGEncoderConfig, ImageEncoderConfig

def check_device(owner: str, device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N (one-line error otherwise; whether the GPU exists is checked at run)."""
    if not (device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device)):
        raise UserError(f"{owner}.device: {device!r} is not auto, cpu, cuda or cuda:N")


DEVICE_HELP = ("auto: CUDA when present (Accelerate's choice; under `accelerate launch` each process's own GPU), "
               "else the CPU; cpu; cuda; cuda:N")
PRECISION_HELP = ("Accelerate's mixed_precision: no (fp32, the default; CPU results unchanged), bf16 or fp16 "
                  "(autocast; fp16 with a gradient scaler)")


# -- classifier ---------------------------------------------------------------------------------------
DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits")
CIFAR_EPS = 8 / 255           # CIFAR-10's L-inf convention in [0, 1] pixel units (MNIST's is 0.3)
CIFAR_MAX_EPS = 16 / 255      # the largest radius any CIFAR-10 robustness table uses
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]  # per-channel statistics of the CIFAR-10 training images
CIFAR_STD = [0.2471, 0.2435, 0.2616]


@dataclasses.dataclass
class ClassifierTrainConfig(Config):
    KIND = "classifier-train"
    VERSION = 1

    dataset: Literal["mnist", "fashion-mnist", "cifar10", "digits"] = dataclasses.field(default="mnist", metadata={
        "help": "image set: mnist, fashion-mnist, cifar10 (your local folder, see --data-root) or digits (8x8)"})
    data_root: str = dataclasses.field(default="", metadata={
        "help": "folder of the data set ('' = its default location; cifar10: a cifar-10-batches-py or -bin folder)",
        "metavar": "DIR"})
    # channels/size/classes come from the data
    model: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    mode: Literal["natural", "fgsm_rs", "fgsm_rs_wong", "pgd"] = dataclasses.field(default="pgd", metadata={
        "help": "training examples: natural (clean), fgsm_rs (FGSM from a random start, torchattacks' FFGSM), "
                "fgsm_rs_wong (the same as Wong et al.'s code: gradient at the unclipped start) "
                "or pgd (PGD from a random start)"})
    eps: float = dataclasses.field(default=0.3, metadata={
        "help": "L-inf radius of the training and validation attacks in [0, 1] pixel units: 0.3 for MNIST, "
                "8/255 = 0.0314 for CIFAR-10"})
    alpha: float | None = dataclasses.field(default=None, metadata={
        "help": "attack step size (unset: pgd 2.5 eps / steps, fgsm_rs 1.25 eps)"})
    steps: int = dataclasses.field(default=10, metadata={"help": "PGD steps of the training attack"})
    eps_ramp_epochs: float = dataclasses.field(default=0.0, metadata={
        "help": "epochs over which eps rises linearly from 0 to eps (0: full eps from the first step)"})
    epochs: int = dataclasses.field(default=10, metadata={"help": "passes over the training images"})
    batch_size: int = dataclasses.field(default=128, metadata={"help": "training images per step"})
    lr: float = dataclasses.field(default=1e-3, metadata={"help": "learning rate (the peak, with lr_schedule cosine)"})
    optimizer: Literal["adam", "sgd"] = dataclasses.field(default="adam", metadata={
        "help": "adam, or sgd (momentum 0.9, Nesterov)"})
    weight_decay: float = dataclasses.field(default=0.0, metadata={"help": "weight decay of the optimizer"})
    lr_schedule: Literal["constant", "cosine", "cyclic"] = dataclasses.field(default="cosine", metadata={
        "help": "constant, cosine decay from lr to 0 over the run, or cyclic (Wong et al. 2020: linear from 0 up "
                "to lr at 2/5 of the run, then linear down to 0)"})
    val_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "share of the training images held out for checkpoint selection (0: none held out, with --keep last)"})
    keep: Literal["best", "last"] = dataclasses.field(default="best", metadata={
        "help": "the model saved: best (the validation checkpoint with the best PGD accuracy) or last (the weights "
                "after the final step, as Wong et al. 2020 report theirs)"})
    n_train: int = dataclasses.field(default=0, metadata={"help": "training images used (0: all not held out)"})
    n_val_eval: int = dataclasses.field(default=1000, metadata={
        "help": "validation images attacked at each evaluation"})
    val_pgd_steps: int = dataclasses.field(default=10, metadata={
        "help": "PGD steps of the validation attack; the checkpoint with the best PGD accuracy is kept"})
    eval_every_steps: int = dataclasses.field(default=0, metadata={
        "help": "evaluate on the validation images every N steps (0: once per epoch)"})
    ckpt_every_steps: int = dataclasses.field(default=200, metadata={
        "help": "resumable checkpoint every N steps, plus one at every epoch end (0: epoch ends only)"})
    grad_log_steps: int = dataclasses.field(default=50, metadata={
        "help": "per-layer gradient norms logged for the first N steps (grad_norms.png)"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the initialisation, the validation split and the batch order"})
    threads: int = dataclasses.field(default=0, metadata={"help": "torch intra-op threads (0: leave torch's setting)"})
    device: str = dataclasses.field(default="auto", metadata={
        "help": "auto: CUDA when present (what Accelerate picks for the other trainers), else the CPU; cpu; cuda; "
                "cuda:N. The CPU path is the same computation whichever is asked. Under `accelerate launch` each "
                "process takes its own GPU and a slice of every batch (DDP)"})
    mixed_precision: Literal["no", "bf16", "fp16"] = dataclasses.field(default="no", metadata={
        "help": "autocast of the training forward and backward (fp16 with a gradient scaler); the attacks that craft "
                "the training examples and the validation attacks keep fp32 gradients: low-precision input "
                "gradients change which images an attack breaks"})

    def validate(self) -> None:
        check_device(type(self).__name__, self.device)
        if not 0.0 <= self.eps <= 1.0:
            raise UserError(f"ClassifierTrainConfig.eps: must be in [0, 1] (pixel units), got {self.eps}")
        if self.dataset == "cifar10" and self.eps > CIFAR_MAX_EPS + 1e-9:
            # the default (0.3) is MNIST's radius: on CIFAR-10 it erases the image, and the run would look fine
            raise UserError(f"ClassifierTrainConfig.eps: {self.eps:g} is an MNIST-scale radius; CIFAR-10's convention "
                            f"is 8/255 = {CIFAR_EPS:.4f} in [0, 1] pixel units (at most 16/255 = {CIFAR_MAX_EPS:.4f} "
                            "is accepted): pass --eps 0.0314, or --preset paper-cifar10")
        if self.alpha is not None and self.alpha <= 0:
            raise UserError(f"ClassifierTrainConfig.alpha: must be > 0, got {self.alpha}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"ClassifierTrainConfig.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction == 0 and self.keep == "best":
            raise UserError("ClassifierTrainConfig.val_fraction 0 holds out no images to choose a checkpoint on: "
                            "pass --keep last")
        for name in ("steps", "epochs", "batch_size", "n_val_eval", "val_pgd_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"ClassifierTrainConfig.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("n_train", "eval_every_steps", "ckpt_every_steps", "grad_log_steps", "threads"):
            if getattr(self, name) < 0:
                raise UserError(f"ClassifierTrainConfig.{name}: must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"ClassifierTrainConfig.lr: must be > 0, got {self.lr}")
        for name in ("weight_decay", "eps_ramp_epochs"):
            if getattr(self, name) < 0:
                raise UserError(f"ClassifierTrainConfig.{name}: must be >= 0, got {getattr(self, name)}")


def _heads(base: ClassifierTrainConfig, std_model: ClassifierConfig | None = None,
           sine_model: ClassifierConfig | None = None) -> dict[str, ClassifierTrainConfig]:
    """A classifier preset: the standard and the sine head with every training setting shared."""
    std_model = std_model or ClassifierConfig(head="linear", init="default")
    sine_model = sine_model or ClassifierConfig(head="sine", init="siren", omega=1.0, amplitude=1.0)
    return {"standard": base.replace(model=std_model), "sine": base.replace(model=sine_model)}


def _classifier_tiny() -> dict[str, ClassifierTrainConfig]:
    return _heads(ClassifierTrainConfig(dataset="mnist", mode="pgd", eps=0.3, steps=5, epochs=3, n_train=6000,
                                        eps_ramp_epochs=1.0, n_val_eval=500, val_pgd_steps=10, batch_size=100,
                                        eval_every_steps=0, ckpt_every_steps=50, grad_log_steps=30))


def _classifier_paper_mnist() -> dict[str, ClassifierTrainConfig]:
    return _heads(ClassifierTrainConfig(dataset="mnist", mode="pgd", eps=0.3, steps=5, epochs=1, n_train=0,
                                        eps_ramp_epochs=0.25, n_val_eval=1000, val_pgd_steps=10, batch_size=128,
                                        eval_every_steps=106, ckpt_every_steps=53, grad_log_steps=50))


def _classifier_paper_mnist_fgsmrs() -> dict[str, ClassifierTrainConfig]:
    base = ClassifierTrainConfig(dataset="mnist", mode="fgsm_rs_wong", eps=0.3, alpha=0.375, epochs=10,
                                 batch_size=100,
                                 optimizer="adam", lr=5e-3, lr_schedule="cyclic", weight_decay=0.0,
                                 val_fraction=1000 / 60000, n_train=0, eps_ramp_epochs=0.0, n_val_eval=1000,
                                 val_pgd_steps=10, eval_every_steps=0, ckpt_every_steps=200, grad_log_steps=50)
    return _heads(base, ClassifierConfig(head="linear", init="default", arch="wong_mnist"),
                  ClassifierConfig(head="sine", init="siren", omega=1.0, amplitude=1.0, arch="wong_mnist"))


def _classifier_paper_cifar10() -> dict[str, ClassifierTrainConfig]:
    body = dict(arch="preact_resnet18", base_width=64, in_channels=3, image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)
    base = ClassifierTrainConfig(dataset="cifar10", mode="pgd", eps=CIFAR_EPS, alpha=2 / 255, steps=10, epochs=200,
                                 optimizer="sgd", lr=0.1, lr_schedule="cosine", weight_decay=5e-4, batch_size=128,
                                 val_fraction=0.02, n_val_eval=1000, val_pgd_steps=10, eval_every_steps=0,
                                 ckpt_every_steps=200, grad_log_steps=50)
    return _heads(base, ClassifierConfig(head="linear", init="default", **body),
                  ClassifierConfig(head="sine", init="siren", omega=1.0, amplitude=1.0, **body))


# name -> {"standard": cfg, "sine": cfg}; the presets are described in classifier_preset's docstring
CLASSIFIER_PRESETS: Presets[dict[str, ClassifierTrainConfig]] = Presets("classifier", {
    "tiny": _classifier_tiny, "paper-mnist": _classifier_paper_mnist,
    "paper-mnist-fgsmrs": _classifier_paper_mnist_fgsmrs, "paper-cifar10": _classifier_paper_cifar10})


def classifier_preset(name: str) -> dict[str, ClassifierTrainConfig]:
    """Named presets -> {"standard": cfg, "sine": cfg}; both heads share every training setting.

    * ``tiny``: 6,000 MNIST training images, 3 epochs of PGD-5 training at eps=0.3; about half
      a minute per head on 2 idle CPU cores. A demo, not a result.
    * ``paper-mnist``: full MNIST (54k train / 6k validation), PGD-5 adversarial training at
      eps=0.3 (alpha 0.15 = 2.5 eps / steps; Madry used 40 steps of 0.01 for 100k iterations),
      1 epoch, Adam 1e-3 cosine, eps ramped over the first quarter epoch. Cut to what a
      2-core CPU shared with other jobs finishes in about half an hour per head; see
      docs/results/paper-mnist/README.md.
    * ``paper-mnist-fgsmrs``: the published FGSM-with-random-start recipe of Wong, Rice & Kolter 2020
      ("Fast is better than free", ICLR 2020), MNIST settings of their code (locuslab/fast_adversarial,
      ``MNIST/train_mnist.py`` defaults and ``MNIST/mnist_net.py``): their CNN (``wong_mnist``:
      conv16-conv32 4x4 stride 2, fc100), eps 0.3, step alpha 0.375 (1.25 eps) from a U(-eps, eps)
      start, 10 epochs, batch 100, Adam with the cyclic learning rate 0 -> 5e-3 (at epoch 4) -> 0,
      no weight decay. What differs: 1,000 training images are held out (59,000 trained on, not
      60,000) and the checkpoint with the best validation PGD-10 accuracy (checked every epoch) is
      kept instead of the last one. The FGSM step is theirs (``fgsm_rs_wong``: the gradient at the
      unclipped random start); with torchattacks' FFGSM (``--mode fgsm_rs``, the start clipped into
      [0, 1] first) the standard head overfitted catastrophically here (validation PGD-10 < 10%).
      About 4 min per head on one CPU thread; see docs/results/paper-mnist-fgsmrs/README.md.
    * ``paper-cifar10``: your local CIFAR-10 (``--data-root``), PreAct-ResNet-18 with the
      CIFAR-10 mean/std inside the model, PGD-10 training at eps 8/255 with step 2/255 (the
      setting of Rice et al. 2020), SGD (momentum 0.9, Nesterov) at lr 0.1 with cosine decay,
      weight decay 5e-4, batch 128, 200 epochs; 1,000 training images held out and the
      checkpoint with the best validation PGD-10 accuracy kept, which is Rice et al.'s early
      stopping against robust overfitting. Not cut down: it needs a GPU-class budget (each
      step is eleven forward-backward passes of a ResNet-18), and no result is committed.
    """
    return CLASSIFIER_PRESETS[name]


# -- EEG encoder --------------------------------------------------------------------------------------
@dataclasses.dataclass
class EncoderTrainConfig(Config):
    """Everything `eegsine train encoder` needs; saved as the run's config.json."""

    KIND = "encoder-train"
    VERSION = 1

    # data
    data: str = dataclasses.field(default="synthetic-vep", metadata={"help": "synthetic-vep | eegcvpr40 | uea:<Name>"})
    data_root: str = dataclasses.field(default="", metadata={"help": "folder of a local data set (eegcvpr40)",
                                                             "metavar": "DIR"})
    image_set: str = dataclasses.field(default="mnist", metadata={"help": "synthetic-vep: paired image set"})
    data_options: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "extra loader options as key=value (JSON values), e.g. snr=0.5 n_chans=32", "metavar": "KEY=VALUE"})
    loso_subject: int = dataclasses.field(default=0, metadata={
        "help": "leave-one-subject-out: test on this subject id, train/val on the others (0: off)"})
    heldout_classes: int = dataclasses.field(default=0, metadata={
        "help": "classes removed from training entirely and evaluated few-shot (unseen classes)"})
    align: Literal["none", "euclidean"] = dataclasses.field(default="none", metadata={
        "help": "euclidean: whiten each subject's trials by the inverse square root of its mean covariance, "
                "estimated on its training trials (He & Wu 2019; eegsine.data.alignment)"})
    # models
    encoder: EEGEncoderConfig = dataclasses.field(default_factory=EEGEncoderConfig)
    image_encoder: ImageEncoderConfig = dataclasses.field(default_factory=ImageEncoderConfig)
    image_epochs: int = dataclasses.field(default=8, metadata={
        "help": "epochs of the image encoder trained here on the stimulus images (source cnn)"})
    # episodes and losses
    n_way: int = dataclasses.field(default=10, metadata={"help": "classes per episode (0: all training classes)"})
    k_shot: int = dataclasses.field(default=5, metadata={"help": "support trials per class in a training episode"})
    n_query: int = dataclasses.field(default=5, metadata={"help": "query trials per class in a training episode"})
    w_proto: float = dataclasses.field(default=1.0, metadata={"help": "weight of the prototypical loss"})
    w_clip: float = dataclasses.field(default=1.0, metadata={
        "help": "weight of the EEG<->image InfoNCE loss (data with paired images only)"})
    w_cls: float = dataclasses.field(default=0.0, metadata={"help": "weight of the cosine classification-head loss"})
    image_anchor: bool = dataclasses.field(default=True, metadata={"help": "add image class anchors to prototypes"})
    anchor_weight: float = dataclasses.field(default=1.0, metadata={
        "help": "weight of a class's image anchor added to its prototype"})
    temperature: float = dataclasses.field(default=0.07, metadata={"help": "initial InfoNCE temperature (learnable)"})
    proto_scale: float = dataclasses.field(default=10.0, metadata={"help": "initial prototype logit scale (learnable)"})
    # augmentation (train episodes only): EEG latencies jitter trial to trial and electrodes drop out
    aug_shift_ms: float = dataclasses.field(default=20.0, metadata={"help": "random time shift per trial, +- ms"})
    aug_noise: float = dataclasses.field(default=0.1, metadata={"help": "added white noise, x the trial's RMS"})
    aug_chan_drop: float = dataclasses.field(default=0.1, metadata={"help": "probability of zeroing a channel"})
    # optimisation
    epochs: int = dataclasses.field(default=20, metadata={
        "help": "training epochs (an epoch: as many episodes as the train split fills)"})
    lr: float = dataclasses.field(default=1e-3, metadata={
        "help": "peak AdamW learning rate (linear warm-up, then cosine decay)"})
    weight_decay: float = dataclasses.field(default=1e-2, metadata={"help": "AdamW weight decay"})
    warmup_frac: float = dataclasses.field(default=0.05, metadata={"help": "share of the steps spent warming up lr"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the initialisation, the episodes and the augmentation"})
    # evaluation
    controls: bool = dataclasses.field(default=True, metadata={"help": "train/compute the control baselines"})
    shuffle_labels: bool = dataclasses.field(default=False, metadata={"help": "train on permuted labels (control)"})
    eval_k_shot: int = dataclasses.field(default=5, metadata={
        "help": "few-shot evaluation of the held-out classes: support trials per class"})
    eval_episodes: int = dataclasses.field(default=200, metadata={
        "help": "few-shot evaluation of the held-out classes: episodes averaged"})
    plot: bool = dataclasses.field(default=True, metadata={"help": "write t-SNE plots of the test embeddings"})
    device: str = dataclasses.field(default="auto", metadata={"help": DEVICE_HELP})
    mixed_precision: Literal["no", "bf16", "fp16"] = dataclasses.field(default="no", metadata={
        "help": PRECISION_HELP + ": the encoder's forward passes (training and validation; fp16: CUDA only)"})

    def validate(self) -> None:
        check_device(type(self).__name__, self.device)
        for name in ("k_shot", "n_query", "epochs", "image_epochs", "eval_k_shot", "eval_episodes"):
            if getattr(self, name) < 1:
                raise UserError(f"EncoderTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_way < 0 or self.n_way == 1:
            raise UserError(f"EncoderTrainConfig.n_way must be 0 (all) or >= 2, got {self.n_way}")
        if not 0 <= self.aug_chan_drop < 1:
            raise UserError(f"EncoderTrainConfig.aug_chan_drop must be in [0, 1), got {self.aug_chan_drop}")
        for name in ("w_proto", "w_clip", "w_cls", "anchor_weight", "weight_decay", "aug_shift_ms", "aug_noise"):
            if getattr(self, name) < 0:
                raise UserError(f"EncoderTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "proto_scale"):
            if getattr(self, name) <= 0:
                raise UserError(f"EncoderTrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise UserError(f"EncoderTrainConfig.warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.w_proto + self.w_clip + self.w_cls <= 0:
            raise UserError("EncoderTrainConfig: at least one of w_proto, w_clip, w_cls must be > 0")
        if not 0 < self.temperature < 1:
            raise UserError(f"EncoderTrainConfig.temperature must be in (0, 1), got {self.temperature}")
        if self.loso_subject < 0:
            raise UserError(f"EncoderTrainConfig.loso_subject must be >= 0 (0: off), got {self.loso_subject}")
        if self.heldout_classes < 0:
            raise UserError(f"EncoderTrainConfig.heldout_classes must be >= 0, got {self.heldout_classes}")
        for kv in self.data_options:
            if "=" not in kv:
                raise UserError(f"EncoderTrainConfig.data_options: {kv!r} is not key=value")


# -- encoder presets ------------------------------------------------------------------------------
def _encoder_tiny() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="synthetic-vep", image_set="mnist",
        data_options=["n_chans=32", "n_times=110", "sfreq=250", "n_images_per_class=40", "n_subjects=3", "snr=0.4"],
        encoder=EEGEncoderConfig(arch="spatial", d_model=16, patch=10, kernel=5, emb_dim=64, dropout=0.2,
                                 center="detrend"),
        image_encoder=ImageEncoderConfig(width=16, emb_dim=64), image_epochs=4,
        n_way=10, k_shot=4, n_query=4, epochs=30, lr=2e-3, weight_decay=0.05, eval_episodes=100)


def _encoder_paper() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="eegcvpr40", encoder=EEGEncoderConfig(emb_dim=128, patch=20, kernel=41),
        image_encoder=ImageEncoderConfig(width=32, emb_dim=128), w_cls=0.5,
        n_way=40, k_shot=5, n_query=5, epochs=60, lr=1e-3)


def _encoder_uea_fingermovements() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="uea:FingerMovements", image_set="",
        encoder=EEGEncoderConfig(arch="transformer", d_model=32, n_layers=1, n_heads=4, patch=4, kernel=9,
                                 emb_dim=32, dropout=0.3, center="trial"),
        w_proto=1.0, w_clip=0.0, w_cls=1.0, image_anchor=False,
        n_way=2, k_shot=16, n_query=16, epochs=334, lr=1e-3, weight_decay=5e-2, controls=True, eval_k_shot=5)


def _encoder_uea_selfregulationscp1() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="uea:SelfRegulationSCP1", image_set="",
        encoder=EEGEncoderConfig(arch="transformer", d_model=32, n_layers=1, n_heads=4, patch=16, kernel=25,
                                 emb_dim=32, dropout=0.3, center="trial"),
        w_proto=1.0, w_clip=0.0, w_cls=1.0, image_anchor=False,
        n_way=2, k_shot=16, n_query=16, epochs=334, lr=1e-3, weight_decay=5e-2, controls=True, eval_k_shot=5)


def _encoder_uea_handmovementdirection() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="uea:HandMovementDirection", image_set="",
        encoder=EEGEncoderConfig(arch="spatial", d_model=8, n_layers=1, n_heads=4, patch=50, kernel=21,
                                 emb_dim=32, dropout=0.3, center="trial"),
        w_proto=1.0, w_clip=0.0, w_cls=1.0, image_anchor=False,
        n_way=4, k_shot=8, n_query=8, epochs=500, lr=1e-3, weight_decay=5e-2, controls=True, eval_k_shot=5)


def _encoder_synthetic_default() -> EncoderTrainConfig:
    return EncoderTrainConfig(data="synthetic-vep", image_set="mnist", n_way=10, k_shot=5, n_query=5, epochs=20,
                              encoder=EEGEncoderConfig(arch="spatial", d_model=32, patch=40, kernel=21,
                                                       center="detrend"), eval_episodes=100)


def _encoder_scale() -> EncoderTrainConfig:
    return EncoderTrainConfig(
        data="synthetic-vep", image_set="mnist", data_options=["n_chans=128", "n_times=440", "n_trials=12000"],
        n_way=10, k_shot=5, n_query=5,
        epochs=1, controls=False, plot=False, eval_episodes=50)


# name -> EncoderTrainConfig, in the order --help lists them; described in encoder_preset's docstring
ENCODER_PRESETS: Presets[EncoderTrainConfig] = Presets("encoder", {
    "tiny": _encoder_tiny,
    "synthetic-default": _encoder_synthetic_default,
    "paper": _encoder_paper,
    "uea-fingermovements": _encoder_uea_fingermovements,
    "uea-selfregulationscp1": _encoder_uea_selfregulationscp1,
    "uea-handmovementdirection": _encoder_uea_handmovementdirection,
    "scale": _encoder_scale,
})


def encoder_preset(name: str) -> EncoderTrainConfig:
    """Named configurations; ``eegsine train encoder --preset NAME`` starts from one of them.

    * ``tiny``: synthetic-vep paired with MNIST, 32 channels x 110 samples at 250 Hz (the
      same 20-460 ms window), 40 images x 10 classes x 3 subjects = 1,200 trials, snr 0.4
      (shrinkage LDA on 40 ms means, train+val -> test: 0.26 at 0.2, 0.54 at 0.3, 0.71 at 0.4,
      0.80 at 0.5 with the slow background of synthetic-vep version 2; version 1's 0.68 at 0.2
      came mostly from noise-free window offsets), the spatial-filter-first encoder (16 filters,
      40 ms window means) on detrended trials, chosen on validation (score 0.608; per-channel
      centring 0.562; the former 2-block transformer 0.600 at 2.2x the time); aligned + shuffled
      control in ~1-2 min.
    * ``synthetic-default``: the issue-#18 run: synthetic-vep at its defaults (version 2, MNIST,
      128 x 440 @ 1 kHz, 12,000 trials, snr 0.06), the spatial-filter-first encoder (32 filters,
      40 ms window means, 21 ms low-pass kernel) on detrended trials, 20 epochs + controls.
      Chosen on validation (one thread, seed 0): detrend 0.222 by epoch 15 vs per-channel
      centring 0.217 (best, epoch 11); the former transformer (patch 20, kernel 41) reached
      ~0.19 on generator version 1. docs/results/encoder/table.md has its test figures.
    * ``paper``: EEGCVPR40 from your local files (``--data-root``), 128 x 440, 40-way
      episodes, band-passed (the loader's default), by-image splits, chosen on validation.
    * ``uea-fingermovements``, ``uea-selfregulationscp1``, ``uea-handmovementdirection``: real EEG
      (MEG for HandMovementDirection) on the official splits, no images, so prototypes +
      classification head only; ~1,000 optimizer steps each (episodes of 64 trials, 2-3 per
      epoch), trial centring, architecture chosen on validation (docs/results/uea/README.md).
    * ``scale``: synthetic-vep at EEGCVPR40 scale (12,000 trials of 128 x 440), one
      epoch, no controls: the speed measurement.
    """
    return ENCODER_PRESETS[name]



# -- EEG-conditioned diffusion ------------------------------------------------------------------------
@dataclasses.dataclass
class DiffusionTrainConfig(Config):
    """Everything `eegsine train diffusion` needs; saved as the run's config.json."""

    KIND = "diffusion-train"
    VERSION = 1

    # data (same fields as the encoder run: eegsine.training.encoder.load_data reads them)
    data: str = dataclasses.field(default="synthetic-vep", metadata={"help": "synthetic-vep | eegcvpr40"})
    data_root: str = dataclasses.field(default="", metadata={"help": "folder of a local data set (eegcvpr40)",
                                                             "metavar": "DIR"})
    image_set: str = dataclasses.field(default="mnist", metadata={"help": "synthetic-vep: paired image set"})
    data_options: list[str] = dataclasses.field(default_factory=list, metadata={"help": "loader options key=value",
                                                                                "metavar": "KEY=VALUE"})
    # stage one
    encoder_run: str = dataclasses.field(default="", metadata={
        "help": "aligned encoder: an encoder run folder (with encoder/) or the encoder folder itself; "
                "empty: train stage one here (run/stage1) with --encoder-preset", "metavar": "RUN"})
    encoder_preset: str = dataclasses.field(default="tiny", metadata={
        "help": "encoder preset stage one is trained with when --encoder-run is empty"})
    # model
    model: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    mode: Literal["full", "lora", "joint"] = dataclasses.field(default="full", metadata={
        "help": "stage B trains the UNet, token mapper and null tokens (full), LoRA adapters on the UNet's attention "
                "in place of the UNet (lora), or also the EEG encoder at encoder_lr (joint)"})
    init_from: str = dataclasses.field(default="", metadata={
        "help": "a diffusion model folder (RUN/model) to start VAE, UNet and token mapper from", "metavar": "DIR"})
    lora_rank: int = dataclasses.field(default=8, metadata={"help": "mode lora: adapter rank"})
    lora_alpha: int = dataclasses.field(default=8, metadata={"help": "mode lora: adapter scale (peft's lora_alpha)"})
    ema: bool = dataclasses.field(default=False, metadata={
        "help": "train with an exponential moving average of the weights and save the average"})
    ema_decay: float = dataclasses.field(default=0.999, metadata={"help": "EMA decay per step"})
    # stage A (VAE)
    vae_epochs: int = dataclasses.field(default=10, metadata={
        "help": "stage A: VAE epochs on the stimulus images (0: none, e.g. with a pretrained VAE)"})
    vae_lr: float = dataclasses.field(default=1e-3, metadata={"help": "stage A: peak AdamW learning rate"})
    vae_batch_size: int = dataclasses.field(default=64, metadata={"help": "stage A: images per step"})
    vae_kl_weight: float = dataclasses.field(default=1e-6, metadata={
        "help": "stage A: weight of the KL term beside the L1 reconstruction loss"})
    # stage B (UNet)
    epochs: int = dataclasses.field(default=20, metadata={"help": "stage B: epochs"})
    batch_size: int = dataclasses.field(default=64, metadata={
        "help": "stage B: trials per step (split evenly across processes)"})
    steps_per_epoch: int = dataclasses.field(default=0, metadata={"help": "0: one pass over the train trials"})
    lr: float = dataclasses.field(default=1e-4, metadata={
        "help": "stage B: peak AdamW learning rate of the UNet and token mapper"})
    image_cond_frac: float = dataclasses.field(default=0.0, metadata={
        "help": "fraction of training examples conditioned on the paired image's embedding from stage one's "
                "image encoder (the space the EEG was aligned to) instead of the trial's EEG embedding "
                "(unCLIP-style decoder training); sampling always uses EEG. 0: EEG only (the source's method)"})
    encoder_lr: float = dataclasses.field(default=1e-4, metadata={"help": "joint mode: the encoder's learning rate"})
    weight_decay: float = dataclasses.field(default=1e-2, metadata={"help": "stage B: AdamW weight decay"})
    warmup_steps: int = dataclasses.field(default=50, metadata={
        "help": "linear learning-rate warm-up steps before the cosine decay (stage A: at most a tenth of its steps)"})
    grad_clip: float = dataclasses.field(default=1.0, metadata={"help": "stage B: gradient-norm clip (0: off)"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the initialisation, the batch order, the noise and the sample grids"})
    # the GPU: what diffusers' training scripts use to fit Stable Diffusion fine-tuning in one GPU
    device: str = dataclasses.field(default="auto", metadata={"help": DEVICE_HELP})
    mixed_precision: Literal["no", "bf16", "fp16"] = dataclasses.field(default="no", metadata={
        "help": PRECISION_HELP + ": stage B's forward passes (UNet, token mapper; fp16: CUDA only)"})
    gradient_checkpointing: bool = dataclasses.field(default=False, metadata={
        "help": "stage B: diffusers' gradient checkpointing of the UNet (recompute activations in the backward "
                "pass: less memory, more time; works with mode lora)"})
    optimizer: Literal["adamw", "adamw8bit"] = dataclasses.field(default="adamw", metadata={
        "help": "stage B optimizer: torch AdamW, or bitsandbytes' 8-bit AdamW (optimizer state in 8 bits: about "
                "6 bytes per trained weight less; needs the bitsandbytes package and a CUDA GPU)"})
    # outputs
    grid_trials: int = dataclasses.field(default=8, metadata={
        "help": "validation trials in each epoch's sample grid (rows)"})
    grid_samples: int = dataclasses.field(default=4, metadata={"help": "samples per trial in the grid (columns)"})
    speed: bool = dataclasses.field(default=True, metadata={"help": "measure images/s at batch 1 and 16"})
    plot: bool = dataclasses.field(default=True, metadata={
        "help": "mode joint: write joint.png (encoder retrieval and gradient norms over training)"})

    def validate(self) -> None:
        for name in ("lora_rank", "lora_alpha", "vae_batch_size", "epochs", "batch_size", "grid_trials",
                     "grid_samples"):
            if getattr(self, name) < 1:
                raise UserError(f"DiffusionTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vae_epochs", "steps_per_epoch", "warmup_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"DiffusionTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("encoder_lr", "weight_decay", "vae_kl_weight", "grad_clip"):
            if getattr(self, name) < 0:
                raise UserError(f"DiffusionTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "vae_lr"):
            if getattr(self, name) <= 0:
                raise UserError(f"DiffusionTrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.image_cond_frac <= 1.0:
            raise UserError(f"DiffusionTrainConfig.image_cond_frac must be in [0, 1], got {self.image_cond_frac}")
        if self.image_cond_frac > 0 and self.mode == "joint":
            raise UserError("DiffusionTrainConfig.image_cond_frac needs a frozen aligned encoder (mode full or lora), "
                            "not mode=joint")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"DiffusionTrainConfig.ema_decay must be in (0, 1), got {self.ema_decay}")
        check_device(type(self).__name__, self.device)
        for kv in self.data_options:
            if "=" not in kv:
                raise UserError(f"DiffusionTrainConfig.data_options: {kv!r} is not key=value")


# -- generation ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class GenerateConfig(Config):
    """Everything ``eegsine generate`` does (its flags, one field each): images from EEG, optionally scored."""

    KIND = "generate"
    VERSION = 1

    run: str = dataclasses.field(default="", metadata={
        "help": "a run folder of `eegsine train diffusion` (reads RUN/model)", "metavar": "RUN"})
    eeg: str | None = dataclasses.field(default=None, metadata={
        "help": ".npy file, float array (n_chans, n_times) or (batch, n_chans, n_times)", "metavar": "FILE"})
    split: Literal["train", "val", "test"] | None = dataclasses.field(default=None, metadata={
        "help": "trials of the run's data set"})
    out: str | None = dataclasses.field(default=None, metadata={
        "help": "output folder (default: RUN/generated)", "metavar": "DIR"})
    samples: int = dataclasses.field(default=4, metadata={"help": "samples per EEG trial (columns of the grid)"})
    max_trials: int = dataclasses.field(default=16, metadata={
        "help": "at most this many trials (rows), classes interleaved", "metavar": "N"})
    steps: int | None = dataclasses.field(default=None, metadata={"help": "sampler steps (default: the model's)"})
    # nonfinite: validate() refuses nan/inf itself, with the range the sampler needs (DiffusionConfig.sampling's words)
    guidance: float | None = dataclasses.field(default=None, metadata={
        "help": "classifier-free guidance scale (default: the model's)", "nonfinite": True})
    sampler: Literal["ddim", "dpm++"] | None = dataclasses.field(default=None, metadata={
        "help": "default: the model's"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the initial noise and of the trials picked"})
    device: str = dataclasses.field(default="auto", metadata={"help": DEVICE_HELP})
    mixed_precision: Literal["no", "bf16", "fp16"] = dataclasses.field(default="no", metadata={
        "help": "no (fp32, the default), bf16 or fp16: the sampler's UNet and VAE passes under autocast for the "
                "written images (--evaluate samples its scored images in fp32, so its figures do not depend on it)"})
    evaluate: bool = dataclasses.field(default=False, metadata={"help": "--split only: also score image quality"})
    eval_trials: int = dataclasses.field(default=500, metadata={"help": "--evaluate: trials scored", "metavar": "N"})
    n_boot: int = dataclasses.field(default=200, metadata={
        "help": "--evaluate: bootstrap resamples for the CIs", "metavar": "N"})
    feature_net: str | None = dataclasses.field(default=None, metadata={
        "help": "--evaluate: an Inception-v3-style network as ONNX", "metavar": "FILE.onnx"})
    lpips_net: str | None = dataclasses.field(default=None, metadata={
        "help": "--evaluate: an LPIPS network as ONNX", "metavar": "FILE.onnx"})
    classifier_net: str | None = dataclasses.field(default=None, metadata={
        "help": "--evaluate: an image classifier as ONNX", "metavar": "FILE.onnx"})
    classifier_classes: str | None = dataclasses.field(default=None, metadata={
        "help": "--classifier-net: JSON object {class name: logit index}", "metavar": "FILE.json"})

    def validate(self) -> None:
        nets = [k for k in ("feature_net", "lpips_net", "classifier_net", "classifier_classes")
                if getattr(self, k) is not None]
        if nets and not self.evaluate:
            raise UserError(f"generate: --{nets[0].replace('_', '-')} scores images; it needs --evaluate")
        if self.eeg is not None and self.split is not None:
            raise UserError("generate: give --eeg FILE or --split NAME, not both")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise UserError(f"guidance={self.guidance!r}: must be a finite number >= 0 (1: off)")
        check_device(type(self).__name__, self.device)


# -- diffusion presets ----------------------------------------------------------------------------
def _encoder_data_options(preset: str) -> list[str]:
    """The EEG geometry/SNR of the encoder preset, so stage two sees the data stage one was trained on."""
    return list(encoder_preset(preset).data_options)


def _diffusion_tiny() -> DiffusionTrainConfig:
    return DiffusionTrainConfig(
        data="synthetic-vep", image_set="mnist", data_options=_encoder_data_options("tiny"),
        encoder_preset="tiny",
        model=DiffusionConfig(image_size=32, native_size=28, resize="pad", vae_channels=[16, 32, 32],
                              latent_channels=4, unet_channels=[32, 64], unet_cross_attention=[True, True],
                              cross_attention_dim=64, n_tokens=4, attention_head_dim=8, guidance=2.0,
                              cond_dropout=0.1, sample_steps=25),
        # 60 VAE epochs: with 6 the test reconstruction MSE was 0.11 and every sample decoded to black;
        # with 60 it is 0.0045 (400 stimulus images, ~0.6 s per epoch on 2 cores).
        # 1,500 UNet steps: at 600 the samples were strokes, not digits, and no condition (EEG,
        # class-only, shuffled) moved the domain classifier off chance; digits appear at ~1,000.
        # image_cond_frac 0.5: half the examples are conditioned on the stimulus's stage-one image
        # embedding. Chosen on the validation split (120 trials, GPU runs of the same config):
        # EEG-conditioned n-way acc 0.150 without it, 0.217 with it (shuffled EEG 0.083 / 0.100).
        # 1,500 steps of 48 trials, as 5 epochs of 300 (5 sample grids): the demo's critical path. Against
        # 15 x 100 steps of 64 (test split, 120 trials, the same VAE and domain CNN, 1 thread, 2026-12-07):
        # EEG acc 0.375 vs 0.408, fid_domain 15.7 vs 15.0; class-only 0.742 vs 0.708, 12.3 vs 9.1; shuffled
        # 0.167 vs 0.167 (every figure inside the other's interval) in 0.7x the time. Batches of 32: class-only
        # 0.600, fid_domain 15.1 (outside), so not fewer.
        vae_epochs=60, vae_lr=2e-3, vae_batch_size=32, epochs=5, batch_size=48, steps_per_epoch=300, lr=1e-3,
        warmup_steps=50, image_cond_frac=0.5,
        grid_trials=10, grid_samples=2)


def _diffusion_paper() -> DiffusionTrainConfig:
    return DiffusionTrainConfig(
        data="eegcvpr40", image_set="", encoder_preset="paper",
        model=DiffusionConfig(image_size=512, image_channels=3, native_size=512, resize="resize",
                              n_tokens=77, cross_attention_dim=768, sampler="dpm++", sample_steps=25, guidance=5.0,
                              beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              pretrained_vae="stable-diffusion", pretrained_unet="stable-diffusion"),
        vae_epochs=0, epochs=30, batch_size=16, lr=1e-5, ema=True, ema_decay=0.999, warmup_steps=500)


# name -> DiffusionTrainConfig; described in diffusion_preset's docstring
DIFFUSION_PRESETS: Presets[DiffusionTrainConfig] = Presets("diffusion", {"tiny": _diffusion_tiny,
                                                                         "paper": _diffusion_paper})


def diffusion_preset(name: str) -> DiffusionTrainConfig:
    """Named configurations; ``eegsine train diffusion --preset NAME`` starts from one of them.

    * ``tiny``: synthetic-vep + MNIST (the encoder tiny preset's EEG: 32 ch x 110 samples at 250 Hz, SNR 0.2), MNIST
      padded 28 -> 32, VAE 16/32/32 -> latents 4 x 8 x 8, UNet 32/64 with cross-attention at
      both levels, 4 EEG tokens of 64, half the training examples conditioned on the stimulus's
      image embedding (``image_cond_frac``). Sized for 2 CPU cores: VAE + 1,500 UNet steps of 48 trials in
      ~6 minutes with one thread, 25 DDIM steps at batch 1 well under 0.5 s (numbers in the run's metrics.json).
    * ``paper``: EEGCVPR40 from local files (``--data-root``) and a local Stable Diffusion
      folder (``--model-pretrained-vae/--model-pretrained-unet SD_DIR``: ``SD_DIR/vae``,
      ``SD_DIR/unet``); 512 px images (64 x 64 x 4 latents), 77 tokens of the UNet's
      cross_attention_dim, full fine-tune at lr 1e-5 with EMA, DPM-Solver++ 25 steps, guidance
      5. Needs a GPU; runs when those files exist.
    """
    return DIFFUSION_PRESETS[name]
