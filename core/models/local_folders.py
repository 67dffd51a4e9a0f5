"""Checks of a user's local model folders before diffusers or transformers read them.

The paper path reads a Stable Diffusion folder in diffusers layout (``SD_DIR/vae``,
``SD_DIR/unet``: ``config.json`` + ``diffusion_pytorch_model.safetensors``) and a CLIP vision
folder in transformers layout (``config.json`` + ``model.safetensors``). Handed a malformed one,
the libraries fail deep inside with their own tracebacks (a TypeError from a string channel
count, "Cannot load ... expected shape" for a wrong ``cross_attention_dim``, "no file named
diffusion_pytorch_model.bin" for a missing weights file). Here each is one :class:`UserError`
naming the file: ``config.json`` parsed and typed, the weights file present (safetensors only:
nothing a user hands us is unpickled), every tensor's shape in its header equal to the shape
the config builds (the model built on the meta device, no memory), the UNet able to take the
pipeline's EEG tokens, and the VAE/UNet pair agreeing on the latent channels.

Hand-written: diffusers and transformers check none of this before they load.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from eegsine.config import _read_json_object  # the one reader of a JSON-object config file
from eegsine.errors import UserError
from eegsine.io import read_json

CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
CLIP_TYPES = ("clip", "clip_vision_model")
# what a diffusers config must state (diffusers writes every key; a default would silently mis-size the model)
REQUIRED = {"AutoencoderKL": ("in_channels", "out_channels", "latent_channels", "block_out_channels"),
            "UNet2DConditionModel": ("in_channels", "out_channels", "block_out_channels", "down_block_types",
                                     "up_block_types", "cross_attention_dim")}
POSITIVE_INTS = ("in_channels", "out_channels", "latent_channels", "norm_num_groups", "cross_attention_dim",
                 "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                 "patch_size", "projection_dim", "num_channels")
# UNet inputs the EEG pipeline never gives: SDXL's added time/text ids, class labels, an image projection
UNSUPPORTED_UNET = ("addition_embed_type", "class_embed_type", "encoder_hid_dim_type")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a JSON object (one-line errors: missing, not JSON, not an object)."""
    return _read_json_object(folder / CONFIG)


def _check_types(cfg: dict[str, Any], path: Path, required: tuple[str, ...] = ()) -> None:
    for key in required:
        if key not in cfg:
            raise UserError(f"{path}: no {key!r} key")
    for key in POSITIVE_INTS:
        v = cfg.get(key)
        if key in cfg and v is not None and (type(v) is not int or v < 1):
            if key == "cross_attention_dim" and isinstance(v, list):
                raise UserError(f"{path}: cross_attention_dim={v}: one size per block is not supported, "
                                "the EEG tokens need a single int")
            raise UserError(f"{path}: {key}={v!r} must be an int >= 1")
    v = cfg.get("block_out_channels")
    if "block_out_channels" in cfg and (not isinstance(v, list) or not v
                                        or any(type(c) is not int or c < 1 for c in v)):
        raise UserError(f"{path}: block_out_channels={v!r} must be a non-empty list of ints >= 1")
    for key in ("down_block_types", "up_block_types"):
        v = cfg.get(key)
        if key in cfg and (not isinstance(v, list) or not v or any(not isinstance(b, str) for b in v)):
            raise UserError(f"{path}: {key}={v!r} must be a non-empty list of block names")
    v = cfg.get("scaling_factor")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
        raise UserError(f"{path}: scaling_factor={v!r} must be a number > 0")


def _weights(folder: Path, name: str) -> list[Path]:
    """The safetensors file(s) of ``folder`` (one file, or the shards its ``.index.json`` names)."""
    single, index = folder / name, folder / f"{name}.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        idx = read_json(index)
        wmap = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise UserError(f"{index}: no 'weight_map' object naming the shards")
        shards = [folder / s for s in sorted(set(map(str, wmap.values())))]
        for s in shards:
            if not s.is_file():
                raise UserError(f"{s}: missing, but {index.name} names it")
        return shards
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.ckpt"))
    hint = (f" (only pickled {', '.join(pickled)}: eegsine never unpickles a file it is handed; "
            "convert it with save_pretrained(..., safe_serialization=True))" if pickled else "")
    raise UserError(f"{single}: missing: no weights in {folder}{hint}")


def _file_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="np") as fh:
                for k in fh.keys():
                    shapes[k] = tuple(fh.get_slice(k).get_shape())
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{f}: not a readable safetensors file ({_first_line(e)})") from None
    return shapes


def _check_shapes(model_shapes: dict[str, tuple[int, ...]], files: list[Path], config: Path) -> None:
    """Every tensor the file and the model both name has the shape ``config`` gives it."""
    file_shapes = _file_shapes(files)
    for key, want in model_shapes.items():
        got = file_shapes.get(key)
        if got is not None and got != want:
            raise UserError(f"{files[0] if len(files) == 1 else files[0].parent}: tensor {key} is {list(got)} but "
                            f"{config} makes it {list(want)}; the config and the weights are of different models")


def _meta_shapes(build: Any, config: Path, what: str) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``build()`` run on the meta device (sizes only, no memory)."""
    from accelerate import init_empty_weights

    try:
        with init_empty_weights(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build()
    except Exception as e:  # noqa: BLE001 - whatever the library makes of the user's config, the file is at fault
        raise UserError(f"{config}: does not describe a {what} ({type(e).__name__}: {_first_line(e)})") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# -- diffusers: Stable Diffusion's vae/ and unet/ ---------------------------------------------------------
def check_diffusers_folder(folder: str | Path, cls: type) -> dict[str, Any]:
    """Check a diffusers ``save_pretrained`` folder of ``cls`` (AutoencoderKL, UNet2DConditionModel); its config."""
    folder = Path(folder)
    path = folder / CONFIG
    cfg = read_config(folder)
    name = cls.__name__
    if cfg.get("_class_name", name) != name:
        raise UserError(f"{path}: describes a {cfg['_class_name']!r}, expected a {name}")
    _check_types(cfg, path, REQUIRED.get(name, ()))
    if name == "UNet2DConditionModel":
        for key in UNSUPPORTED_UNET:
            if cfg.get(key) is not None:
                raise UserError(f"{path}: {key}={cfg[key]!r}: this UNet needs inputs besides the EEG tokens "
                                "(an SDXL-style UNet?); use an SD 1.x/2.x UNet")
        mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")  # diffusers' default; None: no mid block
        blocks = list(cfg["down_block_types"]) + list(cfg["up_block_types"]) + ([str(mid)] if mid else [])
        if not any("CrossAttn" in b for b in blocks):
            raise UserError(f"{path}: no cross-attention block in {blocks}: the UNet cannot read the EEG tokens")
    files = _weights(folder, DIFFUSERS_WEIGHTS)
    _check_shapes(_meta_shapes(lambda: cls.from_config(cfg), path, name), files, path)
    return cfg


def check_sd_pair(vae_cfg: dict[str, Any], unet_cfg: dict[str, Any], unet_folder: str | Path) -> None:
    """The UNet denoises the VAE's latents: its in/out channels are the VAE's latent channels."""
    latent = vae_cfg["latent_channels"]
    for key in ("in_channels", "out_channels"):
        if unet_cfg[key] != latent:
            raise UserError(f"{Path(unet_folder) / CONFIG}: {key}={unet_cfg[key]} but the VAE has "
                            f"latent_channels={latent}; the UNet and the VAE are not a pair (an inpainting UNet?)")


# -- transformers: a CLIP vision tower (or any vision model) ------------------------------------------------
def check_hf_vision_folder(folder: str | Path) -> dict[str, Any]:
    """Check a transformers ``save_pretrained`` vision folder (CLIP or AutoModel); returns its config."""
    import transformers

    folder = Path(folder)
    path = folder / CONFIG
    cfg = read_config(folder)
    mtype = cfg.get("model_type")
    if not isinstance(mtype, str) or not mtype:
        raise UserError(f"{path}: no 'model_type' (a transformers config names its model type, e.g. \"clip\")")
    vision = cfg
    if mtype == "clip":
        vision = cfg.get("vision_config")
        if not isinstance(vision, dict):
            raise UserError(f"{path}: model_type 'clip' without a 'vision_config' object")
    if mtype in CLIP_TYPES:  # other models' sizes may be lists (image_size [h, w]): transformers checks those
        _check_types(cfg, path)
        _check_types(vision, path)
    files = _weights(folder, TRANSFORMERS_WEIGHTS)
    try:
        if mtype in CLIP_TYPES:  # the config CLIPVisionModelWithProjection.from_pretrained builds from this folder
            hf_cfg = transformers.CLIPVisionConfig.from_pretrained(str(folder), local_files_only=True)
            build = lambda: transformers.CLIPVisionModelWithProjection(hf_cfg)  # noqa: E731
        else:
            hf_cfg = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            build = lambda: transformers.AutoModel.from_config(hf_cfg)  # noqa: E731
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path}: transformers cannot read it ({type(e).__name__}: {_first_line(e)})") from None
    _check_shapes(_meta_shapes(build, path, f"{mtype} model"), files, path)
    return cfg


def load_error(folder: str | Path, e: BaseException) -> UserError:
    """A library's load failure that the checks above did not foresee, as one line naming the folder."""
    return UserError(f"{folder}: cannot be loaded ({type(e).__name__}: {_first_line(e)})")


__all__ = ["check_diffusers_folder", "check_sd_pair", "check_hf_vision_folder", "load_error", "read_config"]
