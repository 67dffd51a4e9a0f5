"""EEG encoders: one config, several architectures, one L2-normalised embedding.

``EEGEncoderConfig`` describes the input the encoder was built for (``n_chans``,
``n_times``, ``sfreq``) and its size; :func:`build_encoder` returns one of

* ``transformer`` (default): spatial 1x1 conv (learned spatial filters) -> depthwise
  temporal conv (per-filter band-pass) -> strided conv "patching" into tokens -> a small
  pre-norm transformer -> mean pool -> linear -> L2 norm.
* ``lstm``: the EEGStyleGAN-ADA / Spampinato family: average-pool in time, LSTM over time
  with channels as features, last hidden state -> linear -> L2 norm.
* ``eegnet``: the compact EEGNet family (temporal conv, depthwise spatial conv, separable
  conv, average pooling) -> linear -> L2 norm.
* ``spatial``: spatial filters, then window means (an ERP read-out learned end to end).
* the field's decoders (``eegnet-v4``, ``shallow-convnet``, ``eeg-conformer``, ``minirocket``): their
  bodies from ``eeg_backbones.py`` with the classification layer stripped, -> linear -> L2 norm.

Every ``forward(x)`` takes ``x`` of shape (B, n_chans, n_times) and returns (B, emb_dim)
with unit L2 norm. Inputs are checked against the config by :func:`check_input` (wrong
channel count or length, NaN/inf -> :class:`UserError`, never a silent broadcast); the
check is skipped while tracing/exporting so the ONNX graph stays free of data-dependent
control flow.

:class:`EEGTokenMapper` maps the embedding to (B, n_tokens, cross_attention_dim) tokens
for the diffusion UNet's cross-attention.

Hand-written: the attention block (nanoGPT style on ``scaled_dot_product_attention``)
instead of ``nn.TransformerEncoder``, whose inference fast path swaps in a fused kernel
that differs from the training path and exports to a different ONNX graph.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.errors import UserError
from eegsine.models import module_device, n_params  # noqa: F401 - re-exported
from eegsine.models.configs import EEGEncoderConfig
from eegsine.models.eeg_backbones import BACKBONES
from eegsine.models.protocol import PretrainedModel
from eegsine.runtime.preprocessing import SPEC_FILE, load_spec


def check_input(x: torch.Tensor | np.ndarray, cfg: EEGEncoderConfig, what: str = "EEG input") -> None:
    """Raise a one-line :class:`UserError` unless ``x`` is finite (B, n_chans, n_times) for ``cfg``."""
    shape = tuple(x.shape)
    want = f"(batch, n_chans={cfg.n_chans}, n_times={cfg.n_times})"
    if len(shape) != 3:
        raise UserError(f"{what}: expected shape {want}, got {shape}")
    if shape[1] != cfg.n_chans:
        raise UserError(f"{what}: has {shape[1]} channels but the encoder was built for n_chans={cfg.n_chans}")
    if shape[2] != cfg.n_times:
        raise UserError(f"{what}: has {shape[2]} samples but the encoder was built for n_times={cfg.n_times}")
    finite = torch.isfinite(x) if torch.is_tensor(x) else torch.from_numpy(np.isfinite(np.asarray(x)))
    bad = ~finite.reshape(shape[0], -1).all(dim=1)
    if bool(bad.any()):
        raise UserError(f"{what}: {int(bad.sum())} trial(s) contain NaN/inf (first: trial {int(bad.nonzero()[0, 0])})")


def _tracing() -> bool:
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting())


def normalise_trials(x: torch.Tensor, center: str = "channel") -> torch.Tensor:
    """Centre (see ``EEGEncoderConfig.center``) and divide by the trial's RMS: (B, C, T) -> (B, C, T).

    Per-trial scaling removes per-subject/session gain (synthetic-vep draws one per subject;
    real caps differ in impedance), which otherwise dominates the first layer's input.
    """
    if center == "trial":
        x = x - x.mean(dim=(1, 2), keepdim=True)
    else:
        x = x - x.mean(dim=-1, keepdim=True)
        if center == "detrend":                             # minus each channel's least-squares slope
            t = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
            t = t - t.mean()                                  # (T,)
            x = x - (x * t).sum(dim=-1, keepdim=True) / (t * t).sum() * t
    return x / (x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-6)


class EEGEncoder(PretrainedModel, nn.Module):
    """Base: input check + trial normalisation + ``features`` + projection + L2 norm.

    Its model folder (:class:`~eegsine.models.protocol.PretrainedModel`) keeps ``preprocessing.json``
    (the :class:`~eegsine.runtime.preprocessing.PreprocessingSpec` of the data it was trained on) beside the weights.
    """

    config_class = EEGEncoderConfig

    def __init__(self, cfg: EEGEncoderConfig, feat_dim: int):
        super().__init__()
        if cfg.n_chans < 1 or cfg.n_times < 1:
            raise UserError(f"EEGEncoderConfig: n_chans/n_times must be set (got {cfg.n_chans}/{cfg.n_times}); "
                            "call cfg.fit_to(...) with the data's geometry first")
        self.cfg = cfg
        self.check_inputs = True
        self.preprocessing = None  # PreprocessingSpec of the data it was trained on (preprocessing.json beside it)
        self.proj = nn.Linear(feat_dim, cfg.emb_dim)

    @classmethod
    def from_config(cls, cfg: EEGEncoderConfig) -> "EEGEncoder":
        return ARCHS[cfg.arch](cfg)

    def _save_extra(self, directory: Path) -> None:
        if self.preprocessing is not None:
            self.preprocessing.save(directory, SPEC_FILE)

    def _load_extra(self, directory: Path) -> None:
        self.preprocessing = load_spec(directory)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, feat_dim)
        raise NotImplementedError

    def fit_data(self, x: np.ndarray, seed: int = 0) -> None:
        """Fit the parts learned from data rather than by gradient (none here; MiniRocket's kernels) on the
        training trials ``x`` (N, C, T), normalised as ``forward`` normalises them. The trainer calls it once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_inputs and not _tracing():
            check_input(x, self.cfg)
        h = self.features(normalise_trials(x, self.cfg.center))  # (B, feat_dim)
        return F.normalize(self.proj(h), dim=-1)   # (B, emb_dim), unit norm


# -- transformer ------------------------------------------------------------------------------
class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d)
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)                      # 3 x (B, L, d)
        # (B, h, L, d/h)
        q, k, v = (t.reshape(B, L, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # no attention dropout: SDPA with dropout_p > 0 leaves the fused CPU kernel (4.5 s vs 0.08 s fwd+bwd,
        # 100 trials x 55 tokens x d=64, 2 threads); regularisation comes from the MLP/token dropout
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(B, L, d))
        return x + self.mlp(self.ln2(x))


class TransformerEEGEncoder(EEGEncoder):
    def __init__(self, cfg: EEGEncoderConfig):
        d, k, p = cfg.d_model, cfg.kernel, cfg.patch
        t1 = cfg.n_times + 2 * (k // 2) - k + 1
        n_tokens = (t1 + 2 * (p // 2) - 2 * p) // p + 1
        if n_tokens < 1:
            raise UserError(f"EEGEncoderConfig: n_times={cfg.n_times} is too short for patch={p}")
        # tokens are reduced to d/4 and flattened, not mean-pooled: an evoked response's class lives in
        # *when* components peak, which a mean over tokens throws away (val NCM 0.28 -> see docs/results/encoder)
        super().__init__(cfg, n_tokens * max(1, d // 4))
        self.n_tokens = n_tokens
        self.spatial = nn.Conv1d(cfg.n_chans, d, 1)                             # (B, C, T) -> (B, d, T)
        self.temporal = nn.Conv1d(d, d, k, padding=k // 2, groups=d, bias=False)  # per-filter band-pass
        self.bn1 = nn.BatchNorm1d(d)
        self.patchify = nn.Conv1d(d, d, 2 * p, stride=p, padding=p // 2, bias=False)  # (B, d, T) -> (B, d, L)
        self.bn2 = nn.BatchNorm1d(d)
        self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, d))
        nn.init.normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(d)
        self.reduce = nn.Linear(d, max(1, d // 4))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.bn1(self.temporal(self.spatial(x))))   # (B, d, T)
        h = F.gelu(self.bn2(self.patchify(h)))                  # (B, d, L)
        h = self.drop(h.transpose(1, 2) + self.pos)              # (B, L, d)
        for blk in self.blocks:
            h = blk(h)
        return self.reduce(self.ln(h)).flatten(1)                # (B, L * d/4)


# -- LSTM -------------------------------------------------------------------------------------
class LSTMEEGEncoder(EEGEncoder):
    def __init__(self, cfg: EEGEncoderConfig):
        super().__init__(cfg, cfg.d_model)
        if cfg.n_times // cfg.patch < 1:
            raise UserError(f"EEGEncoderConfig: n_times={cfg.n_times} is too short for patch={cfg.patch}")
        self.pool = nn.AvgPool1d(cfg.patch) if cfg.patch > 1 else nn.Identity()
        self.lstm = nn.LSTM(cfg.n_chans, cfg.d_model, num_layers=cfg.n_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(x).transpose(1, 2)   # (B, T/patch, C)
        out, _ = self.lstm(h)              # (B, T/patch, d)
        return out[:, -1]                  # (B, d): state after the whole trial


# -- EEGNet -----------------------------------------------------------------------------------
class EEGNetEncoder(EEGEncoder):
    """EEGNet-style: F1 temporal filters, D spatial filters each, separable conv, pools of 4 and 8."""

    def __init__(self, cfg: EEGEncoderConfig):
        f1, f2 = cfg.n_filters, cfg.n_filters * cfg.depth_mult
        t_out = (cfg.n_times // 4) // 8
        if t_out < 1:
            raise UserError(f"EEGEncoderConfig: EEGNet needs n_times >= 32, got {cfg.n_times}")
        super().__init__(cfg, f2 * t_out)
        self.net = nn.Sequential(
            nn.Conv2d(1, f1, (1, cfg.kernel), padding="same", bias=False), nn.BatchNorm2d(f1),  # (B, F1, C, T)
            nn.Conv2d(f1, f2, (cfg.n_chans, 1), groups=f1, bias=False), nn.BatchNorm2d(f2), nn.ELU(),  # (B, F2, 1, T)
            nn.AvgPool2d((1, 4)), nn.Dropout(cfg.dropout),                                      # (B, F2, 1, T/4)
            nn.Conv2d(f2, f2, (1, 15), padding="same", groups=f2, bias=False),                   # separable: depthwise
            nn.Conv2d(f2, f2, 1, bias=False), nn.BatchNorm2d(f2), nn.ELU(),                      # ... then pointwise
            nn.AvgPool2d((1, 8)), nn.Dropout(cfg.dropout),                                      # (B, F2, 1, T/32)
            nn.Flatten(),                                                                         # (B, F2 * T/32)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


# -- spatial filters first ------------------------------------------------------------------------
class SpatialEEGEncoder(EEGEncoder):
    """Spatial filters first, then window means: the shape of a linear ERP read-out, learned end to end.

    ``d_model`` spatial filters (1x1 conv, the xDAWN / LDA view: an evoked response is a few
    sources mixed to many electrodes) -> BatchNorm -> depthwise temporal conv (``kernel``: a
    learned low-pass per filter) -> means over windows of ``patch`` samples -> dropout -> flatten
    -> linear. Linear up to BatchNorm, like the shrinkage-LDA reference it is compared with
    (docs/results/encoder), so it can reach it; the spatial step cuts C x T inputs to d x T/patch.
    """

    def __init__(self, cfg: EEGEncoderConfig):
        n_win = cfg.n_times // cfg.patch
        if n_win < 1:
            raise UserError(f"EEGEncoderConfig: n_times={cfg.n_times} is too short for patch={cfg.patch}")
        super().__init__(cfg, cfg.d_model * n_win)
        d, k = cfg.d_model, cfg.kernel
        self.spatial = nn.Conv1d(cfg.n_chans, d, 1, bias=False)                     # (B, C, T) -> (B, d, T)
        self.bn = nn.BatchNorm1d(d)
        self.temporal = nn.Conv1d(d, d, k, padding=k // 2, groups=d, bias=False)    # per-filter low-pass
        nn.init.constant_(self.temporal.weight, 1.0 / k)                             # starts as a moving mean
        self.pool = nn.AvgPool1d(cfg.patch)                                          # (B, d, T) -> (B, d, T/patch)
        self.drop = nn.Dropout(cfg.dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.temporal(self.bn(self.spatial(x)))              # (B, d, T)
        return self.drop(self.pool(h)).flatten(1)                # (B, d * T/patch)


# -- published backbones ------------------------------------------------------------------------------
class BackboneEEGEncoder(EEGEncoder):
    """A published decoder's body (:data:`eegsine.models.eeg_backbones.BACKBONES`, classification layer
    stripped) -> projection -> L2 norm: the same embedding contract as eegsine's own encoders."""

    def __init__(self, cfg: EEGEncoderConfig):
        body = BACKBONES[cfg.arch](cfg)
        super().__init__(cfg, body.out_dim)
        self.body = body

    def fit_data(self, x: np.ndarray, seed: int = 0) -> None:
        if hasattr(self.body, "fit"):                      # MiniRocket: kernels and biases from the training trials
            xn = normalise_trials(torch.as_tensor(x, dtype=torch.float32), self.cfg.center)
            self.body.fit(xn.numpy(), seed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


ARCHS: dict[str, type[EEGEncoder]] = {"transformer": TransformerEEGEncoder, "lstm": LSTMEEGEncoder,
                                      "eegnet": EEGNetEncoder, "spatial": SpatialEEGEncoder,
                                      **{name: BackboneEEGEncoder for name in BACKBONES}}


def build_encoder(cfg: EEGEncoderConfig) -> EEGEncoder:
    return EEGEncoder.from_config(cfg)


@torch.no_grad()
def embed(model: EEGEncoder, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Embed trials (N, C, T) in eval mode, in batches -> (N, emb_dim) float32."""
    check_input(x, model.cfg)
    was = model.training
    model.eval()
    x, dev = torch.as_tensor(x, dtype=torch.float32), module_device(model)
    out = [model(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, model.cfg.emb_dim), np.float32)


# -- tokens for cross-attention ---------------------------------------------------------------
class EEGTokenMapper(nn.Module):
    """(B, emb_dim) EEG embedding -> (B, n_tokens, cross_attention_dim) conditioning tokens.

    A 2-layer MLP produces all tokens at once, then a per-token LayerNorm keeps their scale
    close to what a text encoder would hand the UNet's cross-attention.
    """

    def __init__(self, emb_dim: int, n_tokens: int, cross_attention_dim: int, hidden: int | None = None):
        super().__init__()
        if min(emb_dim, n_tokens, cross_attention_dim) < 1:
            raise UserError(f"EEGTokenMapper: sizes must be >= 1, got emb_dim={emb_dim}, n_tokens={n_tokens}, "
                            f"cross_attention_dim={cross_attention_dim}")
        hidden = hidden or max(emb_dim, cross_attention_dim)
        self.emb_dim, self.n_tokens, self.cross_attention_dim = emb_dim, n_tokens, cross_attention_dim
        self.mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_tokens * cross_attention_dim))
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not _tracing() and (z.ndim != 2 or z.shape[1] != self.emb_dim):
            raise UserError(f"EEGTokenMapper: expected (batch, {self.emb_dim}) embeddings, got {tuple(z.shape)}")
        t = self.mlp(z).reshape(z.shape[0], self.n_tokens, self.cross_attention_dim)  # (B, n_tokens, cad)
        return self.norm(t)


__all__ = ["EEGEncoderConfig", "EEGEncoder", "TransformerEEGEncoder", "LSTMEEGEncoder", "EEGNetEncoder",
           "SpatialEEGEncoder", "BackboneEEGEncoder", "ARCHS",
           "build_encoder", "check_input", "embed", "EEGTokenMapper",
           "normalise_trials", "n_params"]
