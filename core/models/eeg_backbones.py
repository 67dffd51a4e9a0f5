"""Published EEG decoders as embedding backbones: their bodies, classification layer stripped.

The prototypical + contrastive alignment does not depend on the network under it (issue #26), so
beside eegsine's own encoders (``eeg_encoder.py``) the field's trusted decoders are offered as
``EEGEncoderConfig.arch`` values. Each body maps (B, n_chans, n_times) -> (B, out_dim); the
encoder adds its projection to ``emb_dim`` and the L2 norm (:class:`~eegsine.models.eeg_encoder.BackboneEEGEncoder`).

* ``eegnet-v4``: EEGNet-8,2 (Lawhern et al. 2018, J. Neural Eng. 15:056013; braindecode's ``EEGNet``):
  temporal conv (kernel 0.5 s), depthwise spatial conv (D per filter, max-norm 1), BatchNorm (momentum
  0.01, eps 1e-3), ELU, mean-pool 4, separable conv (0.125 s), ELU, mean-pool 8; the dense classifier is
  stripped: features are the flattened (F2, T/32) map.
* ``shallow-convnet``: ShallowFBCSPNet (Schirrmeister et al. 2017, Hum. Brain Mapp. 38:5391; braindecode's
  ``ShallowFBCSPNet``): 40 temporal filters (0.1 s), 40 spatial filters, BatchNorm, square, mean-pool
  0.3 s stride 0.06 s, safe log, dropout; the classifier conv is stripped: features are the (40, n_pool) map.
* ``eeg-conformer``: EEG Conformer (Song et al. 2022, IEEE TNSRE 31:710; braindecode's ``EEGConformer``):
  the shallow patch embedding (40 filters, ELU), 6 pre-norm transformer blocks (10 heads, width 40,
  feed-forward x4, GELU), and its fully connected head up to the 32-unit layer; only the final class
  layer is stripped.
* ``minirocket``: MiniRocket features (Dempster et al. 2021; aeon's ``MiniRocket``, 10,000 kernels,
  fitted on the training trials only by :meth:`MiniRocketFeatures.fit`), standardised with the training
  trials' mean and sd, then dropout: the trainable part is the encoder's projection head. Not
  differentiable with respect to its input and not exportable to ONNX (numba code).

The kernel and pool lengths are the papers' in seconds (EEGNet at 128 Hz, the shallow net and the Conformer
at 250 Hz) converted at ``cfg.sfreq`` and capped by the trial length, so one config serves 100 Hz and 1 kHz
data. Dropout is ``cfg.dropout`` everywhere (the papers: 0.25 / 0.5 / 0.5).

Hand-written, not imported from braindecode: braindecode 1.8.1 imports ``torchaudio`` at module level
(``braindecode.modules.filter``, reached by ``import braindecode.models``), and no torchaudio build loads
beside this project's torch 2.13.0+cpu (PyPI's newest, 2.11.1, is a CUDA build against torch 2.11). The
layers follow braindecode 1.8.1's implementations of the three papers, with their default sizes.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from eegsine.errors import UserError
from eegsine.models.configs import EEGEncoderConfig


def samples(cfg: EEGEncoderConfig, seconds: float, ref_hz: float, cap: int | None = None) -> int:
    """``seconds`` at the config's rate (``ref_hz`` when it is 0) in samples, at least 1, at most ``cap``."""
    n = max(1, int(round(seconds * (cfg.sfreq or ref_hz))))
    return min(n, cap) if cap else n


# -- EEGNet-8,2 -----------------------------------------------------------------------------------
class _MaxNormConv2d(nn.Conv2d):
    """Conv2d whose filters are renormalised to L2 norm <= ``max_norm`` in the forward pass (EEGNet's constraint)."""

    def __init__(self, *args, max_norm: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, torch.renorm(self.weight, 2, 0, self.max_norm), self.bias)


class EEGNetV4(nn.Module):
    """EEGNet-8,2 body: (B, C, T) -> (B, F2 * (T // 32)); F1 = ``n_filters``, D = ``depth_mult``."""

    def __init__(self, cfg: EEGEncoderConfig):
        super().__init__()
        f1, f2, t = cfg.n_filters, cfg.n_filters * cfg.depth_mult, cfg.n_times
        if t // 32 < 1:
            raise UserError(f"EEGEncoderConfig: eegnet-v4 needs n_times >= 32 (pools of 4 and 8), got {t}")
        k1, k2 = samples(cfg, 0.5, 128.0, cap=t), samples(cfg, 0.125, 128.0, cap=t // 4)
        bn = dict(momentum=0.01, eps=1e-3)
        self.net = nn.Sequential(
            nn.Conv2d(1, f1, (1, k1), padding="same", bias=False), nn.BatchNorm2d(f1, **bn),        # (B, F1, C, T)
            _MaxNormConv2d(f1, f2, (cfg.n_chans, 1), groups=f1, bias=False, max_norm=1.0),        # (B, F2, 1, T)
            nn.BatchNorm2d(f2, **bn), nn.ELU(), nn.AvgPool2d((1, 4)), nn.Dropout(cfg.dropout),    # (B, F2, 1, T/4)
            nn.Conv2d(f2, f2, (1, k2), padding="same", groups=f2, bias=False),                     # separable
            nn.Conv2d(f2, f2, 1, bias=False), nn.BatchNorm2d(f2, **bn), nn.ELU(),
            nn.AvgPool2d((1, 8)), nn.Dropout(cfg.dropout), nn.Flatten())                          # (B, F2 * T/32)
        self.out_dim = f2 * ((t // 4) // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


# -- shallow ConvNet ----------------------------------------------------------------------------------
def _shallow_sizes(cfg: EEGEncoderConfig) -> tuple[int, int, int]:
    """(temporal kernel, pool length, pool stride) in samples: 25 / 75 / 15 at 250 Hz, capped by the trial."""
    k = samples(cfg, 0.1, 250.0, cap=max(1, cfg.n_times // 2))
    pool = samples(cfg, 0.3, 250.0, cap=cfg.n_times - k + 1)
    return k, pool, samples(cfg, 0.06, 250.0, cap=pool)


class ShallowConvNet(nn.Module):
    """ShallowFBCSPNet body: (B, C, T) -> (B, 40 * n_pool): log of the mean power of 40 spatio-temporal filters."""

    def __init__(self, cfg: EEGEncoderConfig, n_filters: int = 40):
        super().__init__()
        k, pool, stride = _shallow_sizes(cfg)
        self.conv_time = nn.Conv2d(1, n_filters, (1, k))                                   # (B, 40, C, T-k+1)
        self.conv_spat = nn.Conv2d(n_filters, n_filters, (cfg.n_chans, 1), bias=False)    # (B, 40, 1, T-k+1)
        self.bn = nn.BatchNorm2d(n_filters, momentum=0.1)
        self.pool = nn.AvgPool2d((1, pool), stride=(1, stride))                            # (B, 40, 1, n_pool)
        self.drop = nn.Dropout(cfg.dropout)
        for m in (self.conv_time, self.conv_spat):
            nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(self.conv_time.bias)
        self.out_dim = n_filters * ((cfg.n_times - k + 1 - pool) // stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv_spat(self.conv_time(x.unsqueeze(1))))
        h = torch.log(self.pool(h * h).clamp(min=1e-6))                                   # safe log of mean power
        return self.drop(h).flatten(1)


# -- EEG Conformer --------------------------------------------------------------------------------------
class _ConformerBlock(nn.Module):
    """x + drop(MHA(ln(x))); x + drop(FF(ln(x))): braindecode's _TransformerEncoderBlock."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.n_heads = n_heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.att_drop, self.drop = nn.Dropout(dropout), nn.Dropout(dropout)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d)
        B, L, d = x.shape
        q, k, v = (t.reshape(B, L, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(d, dim=-1))                  # 3 x (B, h, L, d/h)
        att = self.att_drop(torch.softmax(q @ k.transpose(-1, -2) / (d ** 0.5), dim=-1))  # the paper scales by d
        x = x + self.drop(self.out((att @ v).transpose(1, 2).reshape(B, L, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class EEGConformer(nn.Module):
    """EEG Conformer body: (B, C, T) -> (B, 32): patch embedding, 6 blocks, the FC head minus its class layer."""

    def __init__(self, cfg: EEGEncoderConfig, d: int = 40, n_layers: int = 6, n_heads: int = 10):
        super().__init__()
        k, pool, stride = _shallow_sizes(cfg)
        self.patch = nn.Sequential(
            nn.Conv2d(1, d, (1, k)), nn.Conv2d(d, d, (cfg.n_chans, 1)), nn.BatchNorm2d(d), nn.ELU(),
            nn.AvgPool2d((1, pool), stride=(1, stride)), nn.Dropout(cfg.dropout), nn.Conv2d(d, d, 1))  # (B, d, 1, L)
        n_tokens = (cfg.n_times - k + 1 - pool) // stride + 1
        self.blocks = nn.Sequential(*[_ConformerBlock(d, n_heads, cfg.dropout) for _ in range(n_layers)])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n_tokens * d, 256), nn.ELU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(256, 32), nn.ELU(), nn.Dropout(cfg.dropout))
        self.out_dim = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x.unsqueeze(1)).squeeze(2).transpose(1, 2)                    # (B, L, d)
        return self.head(self.blocks(h))                                             # (B, 32)


# -- MiniRocket features ------------------------------------------------------------------------------
MINIROCKET_BUFFERS = ("n_channels_per_combination", "channel_indices", "dilations", "n_features_per_dilation",
                      "biases")


class MiniRocketFeatures(nn.Module):
    """aeon's MiniRocket transform, fitted on training trials, standardised: (B, C, T) -> (B, ~n_kernels).

    The fitted parameters (aeon's ``MiniRocket.parameters``) and the standardisation are buffers, so they are
    saved and loaded with the weights; their lengths are known only after fitting, so loading resizes them.
    """

    def __init__(self, cfg: EEGEncoderConfig, n_kernels: int = 10_000):
        super().__init__()
        if cfg.n_times < 9:
            raise UserError(f"EEGEncoderConfig: minirocket needs n_times >= 9, got {cfg.n_times}")
        self.n_kernels = n_kernels
        for name in MINIROCKET_BUFFERS:
            self.register_buffer(name, torch.zeros(0, dtype=torch.float32 if name == "biases" else torch.int32))
        n = n_kernels // 84 * 84                                                       # aeon's feature count
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.drop = nn.Dropout(cfg.dropout)
        self.out_dim = n

    def fit(self, x: np.ndarray, seed: int = 0) -> "MiniRocketFeatures":
        """Fit dilations, channel combinations and biases on ``x`` (N, C, T) (training trials only)."""
        from aeon.transformations.collection.convolution_based import MiniRocket

        mr = MiniRocket(n_kernels=self.n_kernels, n_jobs=1, random_state=seed).fit(np.asarray(x, np.float32))
        for name, value in zip(MINIROCKET_BUFFERS, mr.parameters):
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(value)))
        self.__dict__["_cache"] = {}
        f = self._transform(np.asarray(x, np.float32))
        self.mean, self.scale = torch.from_numpy(f.mean(0)), torch.from_numpy(f.std(0) + 1e-3)
        return self

    def _transform(self, x: np.ndarray) -> np.ndarray:
        # aeon's own kernels (pinned aeon==1.6.0): its public transform() re-checks and converts every batch
        from aeon.transformations.collection.convolution_based._minirocket import (MiniRocket, _static_transform_multi,
                                                                                   _static_transform_uni)
        if not len(self.biases):
            raise UserError("minirocket encoder: not fitted (the trainer fits it on the training trials)")
        params = tuple(getattr(self, n).numpy() for n in MINIROCKET_BUFFERS)
        if x.shape[1] == 1:
            return _static_transform_uni(x[:, 0], params, MiniRocket._indices).astype(np.float32)
        return _static_transform_multi(x, params, MiniRocket._indices).astype(np.float32)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in MINIROCKET_BUFFERS:               # fitted lengths: resize before the strict shape check
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self.__dict__["_cache"] = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().float().cpu().numpy()
        with torch.no_grad():
            f = torch.from_numpy(self._features(a)).to(x.device)
        return self.drop((f - self.mean) / self.scale)                                # (B, n_features)

    def _features(self, a: np.ndarray) -> np.ndarray:
        """The transform, cached by content in eval mode: the trainer re-embeds the same (unaugmented) trials
        after every epoch, and the transform is most of a MiniRocket encoder's time (training batches differ
        by their augmentation and are not cached)."""
        if self.training:
            return self._transform(a)
        key = hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() + str(a.shape)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = self._transform(a)
        return cache[key]


BACKBONES: dict[str, type[nn.Module]] = {"eegnet-v4": EEGNetV4, "shallow-convnet": ShallowConvNet,
                                         "eeg-conformer": EEGConformer, "minirocket": MiniRocketFeatures}
