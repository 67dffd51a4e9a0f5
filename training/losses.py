"""Every training loss: the encoder alignment's (prototypical, CLIP-style InfoNCE, cosine CE) and the diffusion stages'.

* Alignment (stage one): a query class without support examples (an empty class in an
  episode) is a :class:`UserError`, never a NaN prototype.
* :func:`vae_loss` (stage A): L1 reconstruction + ``kl_weight`` x KL of a sampled latent;
  Stable Diffusion's LPIPS / GAN terms need pretrained networks that do not exist offline.
* :func:`denoising_loss` (stage B): DDPM noise (or v) prediction, MSE.

Hand-written: each is a few lines on torch; the few-shot libraries that ship the first three
(learn2learn, torchmeta) are unmaintained and pull in torchvision, which does not import here.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from eegsine.errors import UserError


# -- encoder alignment ------------------------------------------------------------------------------
def prototypical_loss(z_s: torch.Tensor, y_s: torch.Tensor, z_q: torch.Tensor, y_q: torch.Tensor,
                      scale: torch.Tensor, anchors: torch.Tensor | None = None,
                      anchor_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of queries against class prototypes; returns (loss, accuracy).

    z_s (S, D), z_q (Q, D) unit vectors; prototypes = normalised mean of a class's support
    embeddings, plus ``anchor_weight`` x that class's image anchor (``anchors`` (n_classes, D),
    indexed by class id) when image-anchored prototypes are on.
    """
    classes = torch.unique(y_q)                                          # (n_way,)
    protos = []
    for c in classes:
        m = y_s == c
        if not bool(m.any()):
            raise UserError(f"episode: class {int(c)} has query trials but no support trials (empty class)")
        p = F.normalize(z_s[m].mean(0), dim=0)
        if anchors is not None:
            p = F.normalize(p + anchor_weight * anchors[c], dim=0)
        protos.append(p)
    P = torch.stack(protos)                                             # (n_way, D)
    target = torch.searchsorted(classes, y_q)                           # (Q,) position of each query's class
    logits = scale * z_q @ P.T                                          # (Q, n_way)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def clip_loss(z: torch.Tensor, img_z: torch.Tensor, img_id: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between EEG (B, D) and the paired image embeddings (B, D).

    Several trials of one batch can show the same image; those pairs are all positives
    (soft targets spread evenly over them) rather than false negatives.
    """
    logits = scale * z @ img_z.T                                        # (B, B)
    same = (img_id[:, None] == img_id[None, :]).float()                 # (B, B) positives
    t = same / same.sum(1, keepdim=True)
    loss_e = -(t * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_i = -(t * F.log_softmax(logits, dim=0)).sum(0).mean()
    return 0.5 * (loss_e + loss_i)


def cosine_ce(z: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Classification term: cosine classifier logits = scale * cos(z, w_c)."""
    return F.cross_entropy(scale * z @ F.normalize(class_weight, dim=-1).T, y)


# -- diffusion --------------------------------------------------------------------------------------
def vae_loss(vae, x: torch.Tensor, g: torch.Generator, kl_weight: float) -> torch.Tensor:
    """AutoencoderKL on images ``x`` (B, C, H, W), model space: L1(decode(z), x) + kl_weight * KL, z drawn by ``g``."""
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(x.device)
    rec = vae.decode(z).sample
    return F.l1_loss(rec, x) + kl_weight * post.kl().mean()


def denoising_loss(ddpm, predict: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """MSE of ``predict(noisy latents)`` against the noise (``epsilon``) or the velocity (``v_prediction``).

    z0, noise (B, c, s, s), t (B,): ``noisy = ddpm.add_noise(z0, noise, t)``.
    """
    noisy = ddpm.add_noise(z0, noise, t)
    target = noise if prediction_type == "epsilon" else ddpm.get_velocity(z0, noise, t)
    return F.mse_loss(predict(noisy).float(), target.float())
