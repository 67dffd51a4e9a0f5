"""``synthetic-vep``: visually-evoked-style EEG generated for a real image set (the embedded default EEG).

Hand-written: no installed library simulates stimulus-locked ERPs paired with images (MNE's
simulation needs a forward model, i.e. a head model this project cannot download). The electrode
positions are MNE's (:mod:`eegsine.data.montage`; mne is imported when a set is generated).

Generative model. Trial ``n`` of subject ``s`` sees image ``m`` of class ``c``; time runs from
``tmin`` (20 ms, like EEGCVPR40's samples 20:460) at ``sfreq``; everything is in microvolts::

    x_n = G_s [ sum_j A_cj g_mj T_cj (x) bump(L_cj + dL_mj + d_s + e_n, W_cj)     class ERP: P1, N1, N2, P3
              + beta sum_k f_mk U_k (x) bump(L_k + d_s + e_n, W_k) ]           image content (8 components)
          + M_pink (p_n + q_n) + M_alpha a_n + w_n + o_n + r_n t                background

* class ERP: P1 (~100 ms, occipital), N1 (~170 ms, occipito-temporal), N2 (~250 ms,
  fronto-central), P3 (~340 ms, parietal); each class draws its own latency shift, width,
  amplitude and scalp topography (lobes moved off the canonical electrode, hemispheric
  balance, spread) over the 10-5 montage (:mod:`eegsine.data.montage`: MNE's 10-05 positions).
* image: every stimulus has its own amplitude (x lognormal 10 %) and latency (+-4 ms)
  per component, plus ``f_mk``: its first 8 principal components (fitted on the train-split
  stimuli, unit variance) driving 8 fixed posterior spatio-temporal components. EEG of
  similar images is therefore similar; ``image_variation`` sets their RMS relative to the
  class ERP.
* subject: gain ``G_s`` (overall x lognormal 20 %, per channel x lognormal 10 %; scales the
  brain sources, not the sensor noise), latency offset ``d_s`` (+-6 ms), individual alpha
  frequency (9-11.5 Hz).
* trial: latency jitter ``e_n`` (``latency_jitter_ms``; P3 gets the same again on top),
  pink (1/f power) background from 32 smooth cortical patches at fresh random positions,
  parieto-occipital alpha bursts, white sensor noise. Background power split 60 / 15 / 25 %.
* slow background (version 2): an epoch is a 440 ms cut from continuous EEG, so it is never zero-mean
  per channel. ``q_n``: each patch's 1/f spectrum continued below the window's first frequency bin
  down to the recording's high-pass (``highpass_hz``, 0.1 Hz) as ``N_SLOW`` sinusoids at log-uniform
  frequencies (equal power per octave = 1/f), with the power the 1/f law puts there (41 % of the in-band
  pink power at 440 samples); ``o_n + r_n t``: each electrode's own offset and linear drift (skin
  potentials), SD ``electrode_drift`` x the background RMS each (0.25: chosen, not fitted to a recording).
  Version 1 had neither: every window's per-channel mean was the evoked response's plus nothing but
  sensor noise, so window offsets alone decoded the class (issue #18: per-channel means 0.64 of LDA's
  0.65; 0.74 vs 0.65 at the tiny geometry). The slow parts are drawn from their own random stream:
  ``highpass_hz=0, electrode_drift=0`` regenerates version 1's data exactly. They are not counted in
  the SNR (a pipeline's high-pass takes them out).

SNR := RMS of the class-mean evoked response (over classes, channels and time; subject gain
1, no jitter) / RMS of the background, per trial. Default 0.06 (-24 dB; ERP RMS 1.2 uV in
20 uV of background): a single trial is buried, as real single-trial EEG is, but 128 x 440
samples and thousands of trials carry some. Measured on the default set (MNIST, 10 classes, 6
subjects, 12,000 trials, by-image test split of 1,200 trials), shrinkage LDA on 40 ms window means
(fitted on train + val), single-trial accuracy (chance 0.10):

    version 2, snr 0.06:  as generated 0.25 | each channel's mean removed 0.26 | band-passed
                          0.5-95 Hz 0.23 | 5-95 Hz (EEGCVPR40's filter) 0.16 | per-channel means alone 0.10
    version 1 (no slow background), as generated:
        snr   0.05  0.06  0.07  0.10  0.20
        LDA   0.59  0.67  0.73  0.87  0.98      (channel means removed at 0.06: 0.22)

So most of version 1's "two thirds" was the leaked window offset; the evoked waveform carries a
quarter at the default SNR, and the class information sits below 5 Hz (the P3 and N2 are slow).
Fewer channels, samples and trials make it harder: 32 ch x 110 @ 250 Hz, 40 images per class x 3
subjects (1,200 trials; the tiny presets) gives 0.26 at snr 0.2, 0.54 at 0.3, 0.71 at 0.4 and 0.80
at 0.5 (120 test trials), so tiny presets raise ``snr`` (to 0.4). An image's own detail is fainter
still (version 1: ridge R^2 0.17 for the first image PC from the within-class EEG residual at 0.06).

Vectorised: the ERP components, the alpha bursts and the background patches are stacked
into one (n, J + K + 2 + S, T) array and mixed to the channels with one batched matmul per
block of trials of one (subject, class) (one BLAS thread: see the comment in :func:`generate`).
The default 12,000 trials of 128 x 440 (2.7 GB float32) took 18-45 s on this shared 2-core
machine under a load average of ~10; most of it is drawing the 675 M sensor-noise samples.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any, Literal

import numpy as np

from eegsine.progress import tqdm
from eegsine.config import Config
from eegsine.data.base import REGISTRY, EEGInfo, EEGSet, load_images
from eegsine.data.options import DataOptions
from eegsine.data.montage import montage, position, positions
from eegsine.errors import UserError
from eegsine.runtime.preprocessing import PreprocessingSpec, apply_filters_batched

log = logging.getLogger(__name__)

# name, latency (s), width (s), amplitude (uV), class latency spread (s), canonical topography centres
COMPONENTS = (
    ("P1", 0.100, 0.014, 3.0, 0.012, ("O1", "O2")),
    ("N1", 0.170, 0.020, -4.5, 0.018, ("PO7", "PO8")),
    ("N2", 0.250, 0.030, -2.5, 0.025, ("FCz",)),
    ("P3", 0.340, 0.060, 5.0, 0.045, ("Pz",)),
)
P3 = [c[0] for c in COMPONENTS].index("P3")
N_IMAGE_COMPONENTS = 8
N_PINK_SOURCES = 32
N_SLOW = 4  # sinusoids per background patch below the window's first frequency bin (log-uniform = 1/f power)
PATCH_SIGMA_DEG = 35.0
ALPHA_CENTRES = ("PO3", "PO4")
NOISE_POWER = {"pink": 0.60, "alpha": 0.15, "sensor": 0.25}
CHUNK = 256  # trials per matmul block: 256 x 128 x 440 float32 = 58 MB of scratch
DEFAULT_SNR_NOTE = (
    "snr=0.06: shrinkage LDA on 40 ms window means of the default set (MNIST, 10 classes, 128 ch x 440, "
    "6 subjects, 12,000 trials, by-image test split) reaches 0.25 single-trial accuracy (chance 0.10; 0.23 "
    "band-passed 0.5-95 Hz, 0.16 at 5-95 Hz), measured on generator version 2 (slow background).")


@dataclasses.dataclass
class SyntheticVEPConfig(Config):
    """How ``synthetic-vep`` is generated; saved into run folders so a run can be regenerated."""

    KIND = "synthetic-vep"
    VERSION = 2  # 2: slow background (sub-window 1/f down to highpass_hz, electrode drift); 1 had none

    image_set: str = dataclasses.field(default="mnist", metadata={
        "help": "paired image set (mnist, fashion-mnist, digits, cifar10)"})
    n_classes: int = dataclasses.field(default=10, metadata={
        "help": "use the first N classes of the image set (0: all)"})
    n_images_per_class: int = dataclasses.field(default=200, metadata={"help": "distinct stimuli per class"})
    n_subjects: int = dataclasses.field(default=6, metadata={
        "help": "simulated subjects (each with its own gain, latency and alpha frequency)"})
    trials_per_image: int = dataclasses.field(default=1, metadata={"help": "repetitions of each image per subject"})
    n_chans: int = dataclasses.field(default=128, metadata={"help": "channels (10-20 -> 10-10 -> 10-5 names, <= 128)"})
    n_times: int = dataclasses.field(default=440, metadata={"help": "samples per epoch"})
    sfreq: float = dataclasses.field(default=1000.0, metadata={"help": "sampling rate (Hz)"})
    tmin: float = dataclasses.field(default=0.02, metadata={
        "help": "time of the first sample after stimulus onset (s)"})
    snr: float = dataclasses.field(default=0.06, metadata={"help": "RMS(class-mean ERP) / RMS(background), per trial"})
    image_variation: float = dataclasses.field(default=0.3, metadata={
        "help": "RMS of the image-specific ERP part / RMS of the class ERP"})
    latency_jitter_ms: float = dataclasses.field(default=10.0, metadata={
        "help": "SD of each trial's ERP latency (ms; the P3 gets as much again)"})
    highpass_hz: float = dataclasses.field(default=0.1, metadata={
        "help": "the recording's high-pass: the 1/f background reaches down to it, so a window carries offsets and "
                "drifts (0: none, the zero-mean windows of version 1)"})
    electrode_drift: float = dataclasses.field(default=0.25, metadata={
        "help": "per-electrode offset and linear drift, SD x the background RMS (0: none)"})
    val_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "stimuli per class in val (from the image train split)"})
    test_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "stimuli per class in test (from the image test split)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of everything generated"})

    def validate(self) -> None:
        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise UserError(f"SyntheticVEPConfig.{field} must be {what}, got {getattr(self, field)!r}")

        need(self.n_classes == 0 or self.n_classes >= 2, "n_classes", "0 (all) or >= 2")
        need(self.n_images_per_class >= 1, "n_images_per_class", ">= 1")
        need(self.n_subjects >= 1, "n_subjects", ">= 1")
        need(self.trials_per_image >= 1, "trials_per_image", ">= 1")
        need(1 <= self.n_chans <= 128, "n_chans", "in [1, 128]")
        need(self.n_times >= 8, "n_times", ">= 8")
        need(self.sfreq >= 50.0, "sfreq", ">= 50 Hz (alpha and the ERP need it)")
        need(self.snr > 0, "snr", "> 0")
        need(self.image_variation >= 0, "image_variation", ">= 0")
        need(self.latency_jitter_ms >= 0, "latency_jitter_ms", ">= 0")
        need(0 <= self.highpass_hz < self.sfreq / (2 * self.n_times), "highpass_hz",
             f"in [0, sfreq / (2 n_times)) = [0, {self.sfreq / (2 * self.n_times):.3g}) Hz "
             "(below the window's first bin)")
        need(self.electrode_drift >= 0, "electrode_drift", ">= 0")
        need(0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)")
        need(0 < self.test_fraction < 1, "test_fraction", "in (0, 1)")
        need(self.val_fraction + self.test_fraction < 1, "test_fraction", "< 1 - val_fraction")

    def images_per_split(self) -> tuple[int, int, int]:
        n = self.n_images_per_class
        n_test = max(1, round(n * self.test_fraction))
        n_val = max(1, round(n * self.val_fraction)) if self.val_fraction > 0 else 0
        n_train = n - n_val - n_test
        if n_train < 1:
            raise UserError(f"SyntheticVEPConfig.n_images_per_class={n} leaves no training image "
                            f"({n_val} val + {n_test} test per class)")
        return n_train, n_val, n_test


@dataclasses.dataclass
class SyntheticVEPOptions(SyntheticVEPConfig, DataOptions):
    """``synthetic-vep``'s loader options: the generator's config fields, and how the set is loaded."""

    KIND = "synthetic-vep-options"

    root: str | None = dataclasses.field(default=None, metadata={
        "help": "folder of the paired image set (None: its default location)"})
    n_trials: int | None = dataclasses.field(default=None, metadata={
        "help": "total trials: sets n_images_per_class (a multiple of n_classes x n_subjects x trials_per_image)"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar while generating"})
    bandpass: list[float] | None = dataclasses.field(default=None, metadata={
        "help": "[low, high] Hz: band-pass every epoch (Butterworth order 4) as a recording pipeline would"})
    phase: Literal["causal", "zero-phase"] = dataclasses.field(default="causal", metadata={
        "help": "the band-pass: causal (what a stream runs) or zero-phase (EEGCVPR40's filter)"})

    def validate(self) -> None:
        super().validate()
        band = self.bandpass
        if band is not None and not (len(band) == 2 and 0 < band[0] < band[1] < self.sfreq / 2):
            raise UserError(f"SyntheticVEPOptions.bandpass: {band}: give [low, high] Hz with 0 < low < high < "
                            f"Nyquist ({self.sfreq / 2:g} Hz)")
        if self.n_trials is not None and self.n_trials <= 0:
            raise UserError(f"SyntheticVEPOptions.n_trials must be > 0, got {self.n_trials}")

    @classmethod
    def from_values(cls, name: str, values: Any) -> "SyntheticVEPOptions":
        """As :meth:`DataOptions.from_values`; ``config`` (a :class:`SyntheticVEPConfig` or its dict, as
        :func:`load_synthetic_vep` takes) gives the generator fields the other values leave out."""
        values = dict(values)
        config = values.pop("config", None)
        if config is not None:
            cfg = config if isinstance(config, SyntheticVEPConfig) else SyntheticVEPConfig.from_dict(config)
            values = {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SyntheticVEPConfig)}, **values}
        return super().from_values(name, values)

    def config(self) -> SyntheticVEPConfig:
        """The generator's config (``n_trials`` turned into ``n_images_per_class``)."""
        cfg = SyntheticVEPConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SyntheticVEPConfig)})
        if self.n_trials is None:
            return cfg
        per = (cfg.n_classes or len(_image_classes(cfg.image_set))) * cfg.n_subjects * cfg.trials_per_image
        if self.n_trials % per:
            raise UserError(f"synthetic-vep: n_trials={self.n_trials} is not a positive multiple of n_classes x "
                            f"n_subjects x trials_per_image = {per}")
        return cfg.replace(n_images_per_class=self.n_trials // per)


def _image_classes(name: str) -> list[str]:
    """The paired image set's classes: from its registry entry where it names them (no image is read)."""
    spec = REGISTRY.get(name)
    return list(spec.classes) if spec is not None and spec.classes is not None else load_images(name).classes


def _spec(cfg: SyntheticVEPConfig, bandpass: list[float] | None = None, phase: str = "causal") -> PreprocessingSpec:
    """What generated epochs are: the montage's channels in uV as recorded, ``tmin`` onwards; optionally band-passed."""
    ch_names = montage(cfg.n_chans)
    tmax = cfg.tmin + cfg.n_times / cfg.sfreq
    if bandpass is None:
        return PreprocessingSpec(sfreq=float(cfg.sfreq), ch_names=list(ch_names), units="uV", reference="as-recorded",
                                 tmin=cfg.tmin, tmax=tmax, source="synthetic-vep: generated epochs, no filter")
    lo, hi = float(bandpass[0]), float(bandpass[1])
    return PreprocessingSpec.design(cfg.sfreq, list(ch_names), l_freq=lo, h_freq=hi, order=4, phase=phase, units="uV",
                                    reference="as-recorded", tmin=cfg.tmin, tmax=tmax,
                                    source=f"synthetic-vep: generated epochs, each band-passed {lo:g}-{hi:g} Hz "
                                           f"({phase})")


def describe_synthetic_vep(name: str, opts: SyntheticVEPOptions) -> EEGInfo:
    """What ``load_synthetic_vep(**opts)`` would generate, from the options alone: nothing is generated."""
    cfg = opts.config()
    classes = _image_classes(cfg.image_set)
    classes = classes[:cfg.n_classes] if cfg.n_classes else classes
    if len(classes) < (cfg.n_classes or 0):
        raise UserError(f"SyntheticVEPConfig.n_classes={cfg.n_classes}: {cfg.image_set} has only {len(classes)} "
                        "classes")
    per = len(classes) * cfg.n_subjects * cfg.trials_per_image
    n_tr, n_va, n_te = cfg.images_per_split()
    splits = {"train": n_tr * per, "val": n_va * per, "test": n_te * per}
    if cfg.val_fraction == 0:
        splits.pop("val")
    return EEGInfo("synthetic-vep", _spec(cfg, opts.bandpass, opts.phase), sum(splits.values()), classes, splits,
                   cfg.n_subjects, images=f"{cfg.image_set} images ({cfg.n_images_per_class} per class)",
                   from_options=True)


# -- building blocks ---------------------------------------------------------------------------
def _gauss_topo(pos: np.ndarray, centres: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian blobs over the sphere (geodesic distance); (C,) with max |.| = 1."""
    ang = np.arccos(np.clip(pos @ centres.T, -1.0, 1.0))             # (C, L)
    topo = (np.exp(-0.5 * (ang / sigma) ** 2) * weights).sum(axis=1)
    return topo / np.abs(topo).max()


def _nudge(p: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Move a unit vector by a random angle up to ``max_deg`` in a random tangent direction."""
    t = rng.standard_normal(3)
    t -= (t @ p) * p
    t /= np.linalg.norm(t)
    a = np.deg2rad(rng.uniform(0.0, max_deg))
    return np.cos(a) * p + np.sin(a) * t


def _class_templates(cfg: SyntheticVEPConfig, pos: np.ndarray, class_ids: list[int]) -> dict[str, np.ndarray]:
    """Per class (its own rng, so class c looks the same whatever n_classes is)."""
    J = len(COMPONENTS)
    lat, wid, amp = (np.zeros((len(class_ids), J)) for _ in range(3))
    topo = np.zeros((len(class_ids), pos.shape[0], J))
    for i, c in enumerate(class_ids):
        rng = np.random.default_rng([cfg.seed, 1, c])
        for j, (_, l0, w0, a0, spread, centres) in enumerate(COMPONENTS):
            lat[i, j] = l0 + rng.uniform(-1, 1) * spread
            wid[i, j] = w0 * rng.uniform(0.8, 1.25)
            amp[i, j] = a0 * rng.lognormal(0.0, 0.3)
            ctr = np.stack([_nudge(position(n), rng, 25.0) for n in centres])
            weights = rng.uniform(0.3, 1.0, size=len(centres))
            topo[i, :, j] = _gauss_topo(pos, ctr, weights, np.deg2rad(rng.uniform(25.0, 40.0)))
    return {"lat": lat, "wid": wid, "amp": amp, "topo": topo}


def _bumps(t: np.ndarray, lat: np.ndarray, wid: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """amp * exp(-((t - lat) / wid)^2 / 2): (..., K) params -> (..., K, T) float32."""
    z = (t.astype(np.float32) - lat[..., None].astype(np.float32)) / wid[..., None].astype(np.float32)
    return np.exp(-0.5 * z * z) * amp[..., None].astype(np.float32)


def _patch_topos(rng: np.random.Generator, pos: np.ndarray, shape: tuple[int, ...], sigma_deg: float) -> np.ndarray:
    """Topographies of cortical patches at random upper-hemisphere positions: ``shape + (C,)`` float32.

    exp((cos(angle) - 1) / sigma^2) ~ a Gaussian of the angle, without an arccos. Random signs.
    """
    v = rng.standard_normal(shape + (3,))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v[..., 2] = np.abs(v[..., 2])
    topo = np.exp((v.astype(np.float32) @ pos.T.astype(np.float32) - 1.0) / np.float32(np.deg2rad(sigma_deg) ** 2))
    return topo * rng.choice(np.float32([-1.0, 1.0]), size=shape)[..., None]


def _image_features(images: np.ndarray, train: np.ndarray, k: int, seed: int) -> np.ndarray:
    """First ``k`` principal components of the stimuli (fitted on train stimuli), unit variance: (M, k)."""
    from sklearn.decomposition import PCA

    flat = images.reshape(len(images), -1)
    k_eff = min(k, len(train) - 1, flat.shape[1])
    f = np.zeros((len(images), k))
    if k_eff >= 1:
        pca = PCA(k_eff, svd_solver="randomized", random_state=seed).fit(flat[train])
        f[:, :k_eff] = pca.transform(flat)
    sd = f[train].std(axis=0)
    return f / np.where(sd > 0, sd, 1.0)


# Gaussian quantiles at 65,536 levels (tails at +-4.3 sd): indexing it with random uint16s is ~3x
# faster than Generator.standard_normal (0.13 vs 0.36 s per 14.4 M samples on this 2-core machine),
# and the sensor noise alone is 675 M samples at the default size.
@functools.cache
def _gauss_lut() -> np.ndarray:
    from scipy.special import ndtri

    q = ndtri((np.arange(65536) + 0.5) / 65536)
    return (q / q.std()).astype(np.float32)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """float32 N(0, scale^2) samples of ``shape`` (quantile table, see above)."""
    size = math.prod(shape)
    bits = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size].reshape(shape)  # 5x faster than rng.bytes
    return (_gauss_lut() * np.float32(scale))[bits]  # fancy indexing: 2x faster than np.take here


def _pink_filter(n_times: int, sfreq: float) -> np.ndarray:
    """Amplitude 1/sqrt(f) (power 1/f) on rfft bins, DC and Nyquist 0, unit output variance."""
    f = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    h = 1.0 / np.sqrt(np.maximum(f, 1.0))
    h[0] = 0.0
    if n_times % 2 == 0:
        h[-1] = 0.0
    # irfft of h * (a + ib), a, b ~ N(0, 1): var = 4 sum(h^2) / T^2
    return h * (n_times / (2.0 * np.sqrt((h ** 2).sum())))


def _alpha_power(t: np.ndarray, rng_sd: float, p_burst: float) -> float:
    """Expected mean power of one alpha source (quadrature over burst centre and width)."""
    c = np.linspace(t[0], t[-1], 64)[:, None, None]
    w = np.linspace(0.08, 0.25, 16)[None, :, None]
    env2 = np.exp(-((t[None, None] - c) / w) ** 2).mean()
    return float(p_burst * math.exp(2 * rng_sd ** 2) * 0.5 * env2)


# -- the generator ---------------------------------------------------------------------------------
# Each random stream has its own seed ([cfg.seed, k]), so the pieces below draw the same numbers
# whatever order they run in: 1 class templates, 2 image components, 3 per-stimulus gain and latency,
# 4 stimulus choice, 5-7 subjects, 8 the patch normaliser, 9 the trials.
@dataclasses.dataclass
class _Stimuli:
    images: np.ndarray          # (M, C_img, H, W) float32
    labels: np.ndarray          # (M,) int64 class index
    split: np.ndarray           # (M,) "train" / "val" / "test"
    source: list[tuple[str, int]]  # (image-set split, index) of each stimulus


def _select_stimuli(cfg: SyntheticVEPConfig, imgs, class_ids: list[int]) -> _Stimuli:
    """Per class, train+val stimuli from the image set's train split, test stimuli from its test split."""
    n_tr, n_va, n_te = cfg.images_per_split()
    sel_rng = np.random.default_rng([cfg.seed, 4])
    stim, stim_lab, stim_split, stim_src = [], [], [], []
    for c in class_ids:
        pool_tr = np.flatnonzero(imgs.train_y == c)
        pool_te = np.flatnonzero(imgs.test_y == c)
        if len(pool_tr) < n_tr + n_va or len(pool_te) < n_te:
            raise UserError(
                f"SyntheticVEPConfig.n_images_per_class={cfg.n_images_per_class}: {cfg.image_set} class "
                f"{imgs.classes[c]!r} has {len(pool_tr)} train / {len(pool_te)} test images, need "
                f"{n_tr + n_va} / {n_te}")
        a = sel_rng.choice(pool_tr, n_tr + n_va, replace=False)
        b = np.sort(sel_rng.choice(pool_te, n_te, replace=False))
        for split, idx, src_split in (("train", np.sort(a[:n_tr]), "train"), ("val", np.sort(a[n_tr:]), "train"),
                                      ("test", b, "test")):
            stim.append((imgs.train_x if src_split == "train" else imgs.test_x)[idx])
            stim_lab += [c] * len(idx)
            stim_split += [split] * len(idx)
            stim_src += [(src_split, int(i)) for i in idx]
    return _Stimuli(np.concatenate(stim).astype(np.float32), np.asarray(stim_lab, dtype=np.int64),
                    np.asarray(stim_split), stim_src)


@dataclasses.dataclass
class _Sources:
    """What every trial mixes: fixed topographies and time courses, and the scales that set the SNR."""
    t: np.ndarray               # (T,) seconds after onset
    tpl: dict[str, np.ndarray]  # class templates (:func:`_class_templates`)
    img_topo: np.ndarray        # (C, K)
    img_lat: np.ndarray         # (K,)
    img_wid: np.ndarray         # (K,)
    img_sign: np.ndarray        # (K,)
    alpha_topo: np.ndarray      # (C, 2)
    patch_norm: float
    rms_signal: float
    rms_noise: float
    beta: float                 # image components' amplitude per unit image feature
    pink_scale: float
    alpha_scale: float
    sensor_sd: np.float32
    slow_amp: float             # amplitude of each sub-window sinusoid, per unit in-band pink variance
    slow_band: tuple[float, float]  # their frequency range (Hz): highpass_hz .. half the first bin
    drift_sd: float             # per-electrode offset (and drift over the window) SD, uV


def _slow_power(n_times: int, sfreq: float, highpass_hz: float) -> float:
    """Power of the 1/f background between ``highpass_hz`` and the window's first bin, per unit in-band power.

    An epoch is a cut from continuous EEG whose 1/f spectrum reaches down to the recording's
    high-pass; a window of T samples resolves only bins k * sfreq / T, so what lies below half the
    first bin shows up as offsets and slow drifts. 1/f density -> ln(f_hi / f_lo) of power.
    """
    if highpass_hz <= 0:
        return 0.0
    f = np.fft.rfftfreq(n_times, 1.0 / sfreq)[1:]
    if n_times % 2 == 0:
        f = f[:-1]
    df = sfreq / n_times
    return float(math.log(df / (2 * highpass_hz)) / df / (1.0 / np.maximum(f, 1.0)).sum())


def _sources(cfg: SyntheticVEPConfig, pos: np.ndarray, class_ids: list[int]) -> _Sources:
    t = cfg.tmin + np.arange(cfg.n_times) / cfg.sfreq
    tpl = _class_templates(cfg, pos, class_ids)
    K = N_IMAGE_COMPONENTS
    rng = np.random.default_rng([cfg.seed, 2])
    back = np.array([0.0, -1.0, 0.3]) / np.linalg.norm([0.0, -1.0, 0.3])
    img_topo = np.stack([_gauss_topo(pos, _nudge(back, rng, 60.0)[None], np.ones(1), np.deg2rad(rng.uniform(25, 40)))
                         for _ in range(K)], axis=1)        # (C, K)
    img_lat = rng.uniform(0.09, 0.36, K)
    img_wid = rng.uniform(0.015, 0.04, K)
    img_sign = rng.choice([-1.0, 1.0], K)
    # background patches move from trial to trial (fresh positions each trial): the background is then
    # full rank across trials, as real EEG is, instead of a fixed 32-dim subspace a spatial filter could null
    # (with fixed patches, shrinkage LDA reached 0.998 at snr 0.35 on the default set). Normaliser: mean over
    # channels of sum_s topo^2 -> 1, estimated once on 4096 patches.
    ref = _patch_topos(np.random.default_rng([cfg.seed, 8]), pos, (4096,), PATCH_SIGMA_DEG)
    patch_norm = float(np.sqrt((ref.astype(np.float64) ** 2).mean() * N_PINK_SOURCES))
    alpha_topo = np.stack([_gauss_topo(pos, position(n)[None], np.ones(1), np.deg2rad(30.0)) for n in ALPHA_CENTRES], 1)
    alpha_topo /= np.sqrt((alpha_topo ** 2).sum(axis=1).mean())

    # scales: signal RMS from the class-mean templates, everything else relative to it
    class_erp = np.einsum("ncj,njt->nct", tpl["topo"], _bumps(t, tpl["lat"], tpl["wid"], tpl["amp"]))
    rms_signal = float(np.sqrt((class_erp ** 2).mean()))
    unit_img = np.einsum("ck,kt->kct", img_topo, _bumps(t, img_lat, img_wid, img_sign))
    rms_img_unit = float(np.sqrt((unit_img ** 2).sum(axis=0).mean()))
    rms_noise = rms_signal / cfg.snr
    return _Sources(t, tpl, img_topo, img_lat, img_wid, img_sign, alpha_topo, patch_norm, rms_signal, rms_noise,
                    beta=cfg.image_variation * rms_signal / rms_img_unit,
                    pink_scale=rms_noise * math.sqrt(NOISE_POWER["pink"]),
                    alpha_scale=rms_noise * math.sqrt(NOISE_POWER["alpha"] / _alpha_power(t, 0.3, 0.8)),
                    sensor_sd=np.float32(rms_noise * math.sqrt(NOISE_POWER["sensor"])),
                    slow_amp=math.sqrt(2.0 * _slow_power(cfg.n_times, cfg.sfreq, cfg.highpass_hz) / N_SLOW),
                    slow_band=(cfg.highpass_hz, cfg.sfreq / (2.0 * cfg.n_times)),
                    drift_sd=cfg.electrode_drift * rms_noise)


@dataclasses.dataclass
class _Variation:
    """Per stimulus (features, gain, latency) and per subject (gain, latency, alpha frequency)."""
    feats: np.ndarray           # (M, K) image PCs, unit variance
    img_gain: np.ndarray        # (M, J)
    img_dlat: np.ndarray        # (M, J) s
    subj_gain: np.ndarray       # (S, C)
    subj_dlat: np.ndarray       # (S,) s
    subj_iaf: np.ndarray        # (S,) Hz


def _variation(cfg: SyntheticVEPConfig, stim: _Stimuli, n_chans: int) -> _Variation:
    M, J, S = len(stim.images), len(COMPONENTS), cfg.n_subjects
    feats = _image_features(stim.images, np.flatnonzero(stim.split == "train"), N_IMAGE_COMPONENTS, cfg.seed)
    img_rng = np.random.default_rng([cfg.seed, 3])
    img_gain = img_rng.lognormal(0.0, 0.1, (M, J))
    img_dlat = img_rng.normal(0.0, 0.004, (M, J))
    subj_gain = np.stack([np.random.default_rng([cfg.seed, 5, s]).lognormal(0.0, 0.2) *
                          np.random.default_rng([cfg.seed, 6, s]).lognormal(0.0, 0.1, n_chans) for s in range(S)])
    subj_rng = np.random.default_rng([cfg.seed, 7])
    subj_dlat = subj_rng.normal(0.0, 0.006, S)
    subj_iaf = subj_rng.uniform(9.0, 11.5, S)
    return _Variation(feats, img_gain, img_dlat, subj_gain, subj_dlat, subj_iaf)


def _slow_background(pink: np.ndarray, n_chans: int, src: _Sources, rng: np.random.Generator) -> np.ndarray | None:
    """Add the sub-window 1/f part to the patches' time courses; return each electrode's offset + linear drift.

    Real epochs never have zero mean per channel: the background's slow part and the electrodes' own
    drift (skin potentials) shift every window. Without it the class ERP's window mean is a
    noise-free cue (issue #18: per-channel window means alone decoded 0.64 of 0.65).
    """
    n = pink.shape[0]
    tau = (src.t - src.t[0]).astype(np.float32)
    if src.slow_amp > 0:
        lo, hi = src.slow_band
        f = np.exp(rng.uniform(math.log(lo), math.log(hi), (n, N_PINK_SOURCES, N_SLOW))).astype(np.float32)
        ph = rng.uniform(0.0, 2 * np.pi, (n, N_PINK_SOURCES, N_SLOW)).astype(np.float32)
        for j in range(N_SLOW):                                                      # (n, S_p, T) each
            pink += np.float32(src.slow_amp) * np.cos(2 * np.pi * f[..., j, None] * tau + ph[..., j, None])
    if src.drift_sd <= 0:
        return None
    off = rng.normal(0.0, src.drift_sd, (n, n_chans, 1)).astype(np.float32)
    slope = rng.normal(0.0, src.drift_sd, (n, n_chans, 1)).astype(np.float32) / np.float32(max(tau[-1], 1e-9))
    return off + slope * tau                                                         # (n, C, T)


def _trial_block(out: np.ndarray, src: _Sources, var: _Variation, pos: np.ndarray, s: int, c: int, m: np.ndarray,
                 rng: np.random.Generator, jit: float, h_pink: np.ndarray, rng_slow: np.random.Generator) -> None:
    """Trials of subject ``s`` seeing stimuli ``m`` (all of class ``c``) into ``out``: (n, C, T) float32."""
    n, C, T = out.shape
    J, K = len(COMPONENTS), N_IMAGE_COMPONENTS
    t, t32, tpl = src.t, src.t.astype(np.float32), src.tpl
    e = rng.normal(0.0, jit, (n, 1)) + var.subj_dlat[s]
    lat = np.concatenate([tpl["lat"][c] + var.img_dlat[m] + e, src.img_lat + e], axis=1)        # (n, J + K)
    lat[:, P3] += rng.normal(0.0, jit, n)                                                       # P3 varies more
    amp = np.concatenate([tpl["amp"][c] * var.img_gain[m], src.beta * src.img_sign * var.feats[m]], axis=1)
    wid = np.broadcast_to(np.concatenate([tpl["wid"][c], src.img_wid]), lat.shape)
    erp = _bumps(t32, lat, wid, amp)                                                            # (n, J + K, T)
    spec = _normal(rng, (n, N_PINK_SOURCES, T // 2 + 1, 2)).view(np.complex64)[..., 0]
    pink = np.fft.irfft(spec * h_pink, n=T, axis=-1).astype(np.float32, copy=False)             # (n, S_p, T)
    drift = _slow_background(pink, C, src, rng_slow)                                            # sensor level
    burst = rng.random((n, 2)) < 0.8
    ctr = rng.uniform(t[0], t[-1], (n, 2))
    bw = rng.uniform(0.08, 0.25, (n, 2))
    freq = var.subj_iaf[s] + rng.normal(0.0, 0.3, (n, 2))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 2))
    aamp = burst * rng.lognormal(0.0, 0.3, (n, 2))
    alpha = (_bumps(t32, ctr, bw, aamp) *
             np.cos(2 * np.pi * freq[..., None] * t32 + phase[..., None]).astype(np.float32))   # (n, 2, T)
    sources = np.concatenate([erp, alpha, pink], axis=1)                                        # (n, J+K+2+S_p, T)
    mix = np.empty((n, C, J + K + 2 + N_PINK_SOURCES), np.float32)                              # per-trial mixing
    mix[:, :, :J + K + 2] = np.concatenate([tpl["topo"][c], src.img_topo, src.alpha_scale * src.alpha_topo], axis=1)
    mix[:, :, J + K + 2:] = np.swapaxes(_patch_topos(rng, pos, (n, N_PINK_SOURCES), PATCH_SIGMA_DEG), 1, 2)
    mix[:, :, J + K + 2:] *= np.float32(src.pink_scale / src.patch_norm)
    mix *= var.subj_gain[s].astype(np.float32)[None, :, None]
    np.matmul(mix, sources, out=out)
    np.add(out, _normal(rng, (n, C, T), src.sensor_sd), out=out)
    if drift is not None:
        out += drift


def _trials(cfg: SyntheticVEPConfig, src: _Sources, var: _Variation, pos: np.ndarray, t_subject: np.ndarray,
            t_class: np.ndarray, t_image: np.ndarray, n_classes: int, progress: bool) -> np.ndarray:
    """Every trial, in blocks of up to CHUNK trials of one (subject, class): (N, C, T) float32."""
    from threadpoolctl import threadpool_limits
    x = np.empty((len(t_subject), pos.shape[0], cfg.n_times), dtype=np.float32)
    h_pink = _pink_filter(cfg.n_times, cfg.sfreq).astype(np.float32)
    rng = np.random.default_rng([cfg.seed, 9])
    rng_slow = np.random.default_rng([cfg.seed, 10])  # its own stream: highpass_hz=0, electrode_drift=0 is version 1
    blocks = []
    for s in range(cfg.n_subjects):
        for c in range(n_classes):
            idx = np.flatnonzero((t_subject == s) & (t_class == c))
            blocks += [(s, c, idx[i:i + CHUNK]) for i in range(0, len(idx), CHUNK)]
    # one BLAS thread: the (C, K) @ (K, T) products are small; multi-threaded OpenBLAS on them was
    # 100x slower on this shared 2-core machine (10 s vs 0.04 s per 256 trials, measured).
    with threadpool_limits(limits=1, user_api="blas"):
        for s, c, idx in tqdm(blocks, desc="synthetic-vep", unit="block", disable=not progress or len(blocks) < 8,
                              leave=False):
            a, b = int(idx[0]), int(idx[-1]) + 1                      # contiguous
            _trial_block(x[a:b], src, var, pos, s, c, t_image[a:b], rng, cfg.latency_jitter_ms / 1000.0, h_pink,
                         rng_slow)
    return x


def generate(cfg: SyntheticVEPConfig, image_root: str | None = None, progress: bool = True) -> EEGSet:
    """Generate the data set described by ``cfg`` (deterministic in ``cfg``)."""
    t_start = time.perf_counter()
    imgs = load_images(cfg.image_set, **({"root": image_root} if image_root else {}))
    n_classes = imgs.n_classes if cfg.n_classes == 0 else cfg.n_classes
    if n_classes > imgs.n_classes:
        raise UserError(f"SyntheticVEPConfig.n_classes={n_classes}: {cfg.image_set} has only {imgs.n_classes} classes")
    class_ids = list(range(n_classes))
    stim = _select_stimuli(cfg, imgs, class_ids)
    ch_names = montage(cfg.n_chans)
    pos = positions(ch_names)                               # (C, 3)
    src = _sources(cfg, pos, class_ids)
    var = _variation(cfg, stim, len(ch_names))

    # trials: subject-major, then stimulus (class-sorted), then repetition -> (subject, class) blocks are contiguous
    S, M, R, T = cfg.n_subjects, len(stim.images), cfg.trials_per_image, cfg.n_times
    t_subject = np.repeat(np.arange(S), M * R)
    t_image = np.tile(np.repeat(np.arange(M), R), S)
    t_class = stim.labels[t_image]
    x = _trials(cfg, src, var, pos, t_subject, t_class, t_image, n_classes, progress)

    splits = {name: np.flatnonzero(stim.split[t_image] == name) for name in ("train", "val", "test")}
    if cfg.val_fraction == 0:
        splits.pop("val")
    elapsed = time.perf_counter() - t_start
    info = {
        "config": cfg.to_dict(), "units": "uV", "tmin_s": cfg.tmin,
        "snr_definition": "RMS(class-mean ERP over classes, channels, time) / RMS(background) per trial",
        "signal_rms_uv": src.rms_signal, "noise_rms_uv": src.rms_noise, "default_snr_note": DEFAULT_SNR_NOTE,
        "image_source": [f"{cfg.image_set}:{sp}[{i}]" for sp, i in stim.source], "image_split": stim.split.tolist(),
        "ch_pos": pos.tolist(),
        "montage": "10-20/10-10/10-5 names, MNE standard_1005 positions (unit vectors from a fitted sphere)",
        "generated_s": round(elapsed, 3),
    }
    log.info("synthetic-vep: %d trials x %d ch x %d samples in %.1f s", len(x), len(ch_names), T, elapsed)
    return EEGSet(
        name="synthetic-vep", x=x, y=t_class.astype(np.int64), subject=(t_subject + 1).astype(np.int64),
        image=t_image.astype(np.int64), sfreq=float(cfg.sfreq), ch_names=ch_names,
        classes=[imgs.classes[c] for c in class_ids], splits=splits, images=stim.images,
        image_labels=stim.labels, info=info,
        preprocessing=_spec(cfg)).check()


def load_synthetic_vep(root: str | os.PathLike | None = None, config: SyntheticVEPConfig | dict | None = None,
                       n_trials: int | None = None, progress: bool = True, bandpass: list[float] | None = None,
                       phase: Literal["causal", "zero-phase"] = "causal", **fields) -> EEGSet:
    """Registry entry. ``root`` is the paired image set's root; ``fields`` are config fields
    (:class:`SyntheticVEPOptions` documents each; ``load_eeg("synthetic-vep", options)`` passes them all).

    ``n_trials`` (convenience) sets ``n_images_per_class`` so the total is exactly that many trials.
    ``bandpass=[low, high]`` (Hz) filters every epoch as a recording pipeline would (Butterworth order 4,
    ``phase`` causal from the steady state of its first sample, or zero-phase: EEGCVPR40's filter); the
    spec records it, so a bundle's runtime runs the same filter.
    """
    opts = SyntheticVEPOptions.from_values("synthetic-vep", {
        "config": config, **fields, "root": root, "n_trials": n_trials, "progress": progress, "bandpass": bandpass,
        "phase": phase})
    ds = generate(opts.config(), image_root=opts.root, progress=opts.progress)
    return _bandpass(ds, opts.bandpass, opts.phase) if opts.bandpass is not None else ds


def _bandpass(ds: EEGSet, band: list[float], phase: str) -> EEGSet:
    """Filter every epoch in place (64 trials at a time: bounded float64 scratch); the spec records the filter."""
    cfg = SyntheticVEPConfig.from_dict(ds.info["config"])
    spec = _spec(cfg, band, phase)
    ds.x = apply_filters_batched(ds.x, spec)
    ds.preprocessing = spec
    ds.info["bandpass"] = {"band_hz": [float(band[0]), float(band[1])], "order": 4, "phase": phase}
    return ds.check()

