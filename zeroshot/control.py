"""Control signals and ControlNets (Zhang et al., ICCV 2023, arXiv 2302.05543) for video.

A control signal is `KIND:VIDEO`: `canny:clip.mp4` computes Canny edges of every frame with
OpenCV; the other kinds (`depth`, `pose`, `map`) take a video of ready-made maps (no
annotator network is downloaded). A signal is read as `(f, 3, H, W)` float in [0, 1], the
layout diffusers' ControlNet pipelines feed the network (`VaeImageProcessor` without
normalisation). Its frame count and size must equal the request's, unless `resize` asks
to resample it (frames by nearest index, pixels bilinearly; Canny runs after resizing).

`load_controlnet` is the one loader: a diffusers `ControlNetModel` folder, or a single
`.safetensors` file in diffusers' or the original layout (its configuration derived from
the base UNet it conditions, so nothing is fetched). `cached_controlnet` keeps the last few
loaded for the process (batch renders run many jobs with the same ControlNets). `signature_of_file` / `signature_of_config`
read what a ControlNet was made for (cross-attention width, the channels of its residuals,
its conditioning downsampling) from JSON or a safetensors header, without loading weights,
so a ControlNet made for another base is refused before any model work.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeroshot.recipe import RecipeError

#: Control kinds: canny computes edges; the others are ready-made maps.
KINDS = ("canny", "depth", "pose", "map")


def parse_signal(text: str, where: str = "controlnet.signals") -> tuple[str, str]:
    """`KIND:VIDEO` -> (kind, path); RecipeError (one line) for a missing colon or unknown kind."""
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise RecipeError(f"{where}: expected KIND:VIDEO (kinds: {', '.join(KINDS)}), got {text!r}")
    if kind not in KINDS:
        raise RecipeError(f"{where}: unknown control kind {kind!r} in {text!r}; valid: {', '.join(KINDS)}")
    return kind, path


def canny(frames: torch.Tensor, low: float = 100.0, high: float = 200.0) -> torch.Tensor:
    """Canny edges (OpenCV, hysteresis thresholds `low`/`high` on 8-bit gradients) of frames
    `(f, 3, H, W)` in [0, 1], as white-on-black maps `(f, 3, H, W)` in {0, 1}."""
    import cv2
    import numpy as np

    images = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # f H W 3
    edges = np.stack([cv2.Canny(np.ascontiguousarray(im), low, high) for im in images])  # f H W
    out = torch.from_numpy(edges).float().div(255.0)
    return out[:, None].expand(-1, 3, -1, -1).contiguous()  # f 3 H W


def resample(frames: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Frames `(f, 3, H, W)` at another count (nearest frame index) and size (bilinear)."""
    f = frames.shape[0]
    if f != num_frames:
        index = torch.linspace(0, f - 1, num_frames).round().long()
        frames = frames[index]
    if tuple(frames.shape[-2:]) != (height, width):
        frames = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    return frames.clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> torch.Tensor:
    from zeroshot.io import read_video

    return read_video(path)


def read_input_video(path: str, where: str) -> torch.Tensor:
    """A video `(f, 3, H, W)` in [0, 1] (cached while the file is unchanged); RecipeError
    (one line, naming `where`) when it is missing or unreadable."""
    from zeroshot.io import video_target

    try:
        target = video_target(path)
    except ValueError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    if not target.exists():
        raise RecipeError(f"{where}: {path!r} does not exist")
    try:
        frames = _read(str(target), os.path.getmtime(target))
    except (OSError, ValueError, RuntimeError, StopIteration) as exc:
        raise RecipeError(f"{where}: {path!r} is not a readable video ({type(exc).__name__})") from None
    if frames.shape[0] == 0:
        raise RecipeError(f"{where}: {path!r} has no frames")
    return frames


def fit(frames: torch.Tensor, num_frames: int, height: int, width: int, *, resize: bool, where: str,
        path: str, hint: str) -> torch.Tensor:
    """`frames` when they match the request; resampled when `resize`; else RecipeError (one line)."""
    f, _, h, w = frames.shape
    if (f, h, w) == (num_frames, height, width):
        return frames
    if not resize:
        raise RecipeError(
            f"{where}: {path!r} has {f} frames of {w}x{h}; the request is {num_frames} frames of {width}x{height} "
            f"({hint})"
        )
    return resample(frames, num_frames, height, width)


def control_maps(signal: str, num_frames: int, height: int, width: int, *, resize: bool = False,
                 low: float = 100.0, high: float = 200.0, where: str = "controlnet.signals") -> torch.Tensor:
    """The control maps `(f, 3, H, W)` in [0, 1] of one `KIND:VIDEO` signal for a request."""
    kind, path = parse_signal(signal, where)
    frames = read_input_video(path, where)
    frames = fit(frames, num_frames, height, width, resize=resize, where=where, path=path,
                 hint="pass --control-resize to resample it")
    return canny(frames, low, high) if kind == "canny" else frames


# ---------------------------------------------------------------------------------------
# what a ControlNet was made for


@dataclass(frozen=True)
class Signature:
    """What a ControlNet must share with the UNet it conditions."""

    cross_attention_dim: int | None
    residual_channels: tuple[int, ...]  # the down residuals' channels, then the mid block's
    in_channels: int | None
    downsampling: int | None = None  # of the conditioning embedding (must equal the VAE factor)

    def mismatch(self, base: Signature) -> str | None:
        """Why a ControlNet of this signature cannot condition `base` (None: it can)."""
        if None not in (self.cross_attention_dim, base.cross_attention_dim) and (
            self.cross_attention_dim != base.cross_attention_dim
        ):
            return f"text width {self.cross_attention_dim}, the model's is {base.cross_attention_dim}"
        if self.residual_channels != base.residual_channels:
            return (f"residual channels {list(self.residual_channels)}, "
                    f"the model's blocks take {list(base.residual_channels)}")
        if None not in (self.in_channels, base.in_channels) and self.in_channels != base.in_channels:
            return f"{self.in_channels} latent channels, the model's are {base.in_channels}"
        if None not in (self.downsampling, base.downsampling) and self.downsampling != base.downsampling:
            return f"control maps downsampled {self.downsampling}x, the model's VAE factor is {base.downsampling}"
        return None


def _residual_channels(config: dict) -> tuple[int, ...]:
    """The channels of a 2-D UNet's (or ControlNet's) down-block residuals and mid block."""
    blocks = list(config["block_out_channels"])
    layers = config.get("layers_per_block", 2)
    layers = [layers] * len(blocks) if isinstance(layers, int) else list(layers)
    out = [blocks[0]]
    for i, c in enumerate(blocks):
        out += [c] * layers[i] + ([c] if i < len(blocks) - 1 else [])
    return (*out, blocks[-1])


def _cross_dim(value) -> int | None:
    if value is None:
        return None
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def signature_of_config(config: dict, *, vae_scale_factor: int | None = None) -> Signature:
    """The signature of a UNet or ControlNet configuration (a `config.json` as a dict); a
    ControlNet's downsampling comes from its conditioning embedding, a UNet's is `vae_scale_factor`."""
    emb = config.get("conditioning_embedding_out_channels")
    down = 2 ** (len(emb) - 1) if emb else vae_scale_factor
    return Signature(_cross_dim(config.get("cross_attention_dim")), _residual_channels(config),
                     config.get("in_channels"), down)


def _shape(handle, key: str) -> list[int]:
    return list(handle.get_slice(key).get_shape())


def _indexed(keys, prefix: str, suffix: str) -> list[str]:
    found = [k for k in keys if k.startswith(prefix) and k.endswith(suffix)]
    return sorted(found, key=lambda k: int(k[len(prefix):].split(".")[0]))


def file_layout(keys) -> str:
    """"diffusers" (a `ControlNetModel` state dict) or "original" (lllyasviel's `control_model.`)."""
    keys = list(keys)
    if any(k.startswith("controlnet_down_blocks.") for k in keys):
        return "diffusers"
    if any(".zero_convs." in k or k.startswith("zero_convs.") for k in keys):
        return "original"
    raise RecipeError("not a ControlNet checkpoint (neither diffusers' nor the original key layout)")


def signature_of_file(path: str | os.PathLike) -> Signature:
    """The signature of a single-file ControlNet, from its safetensors header (no weights read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        layout = file_layout(keys)
        if layout == "diffusers":
            down = _indexed(keys, "controlnet_down_blocks.", ".weight")
            mid = _shape(handle, "controlnet_mid_block.weight")[0]
            attn = [k for k in keys if k.endswith("attn2.to_k.weight")]
            conv_in = "conv_in.weight"
            emb = _indexed(keys, "controlnet_cond_embedding.blocks.", ".weight")
        else:
            pre = "control_model." if any(k.startswith("control_model.") for k in keys) else ""
            down = _indexed(keys, f"{pre}zero_convs.", ".0.weight")
            mid = _shape(handle, f"{pre}middle_block_out.0.weight")[0]
            attn = [k for k in keys if k.endswith("attn2.to_k.weight")]
            conv_in = f"{pre}input_blocks.0.0.weight"
            emb = [k for k in _indexed(keys, f"{pre}input_hint_block.", ".weight") if _shape(handle, k)[-1] == 3]
        channels = tuple(_shape(handle, k)[0] for k in down) + (mid,)
        cross = _shape(handle, attn[0])[1] if attn else None
        in_channels = _shape(handle, conv_in)[1] if conv_in in keys else None
        strides = sum(1 for k in emb[1:-1] if _shape(handle, k)[0] != _shape(handle, k)[1]) if emb else None
    # the original hint block strides at each widening convolution but its last (to the UNet's
    # width); diffusers' conditioning embedding alternates same-width and widening (stride 2) ones
    down_factor = None
    if layout == "diffusers" and emb:
        down_factor = 2 ** (len(emb) // 2)
    elif strides is not None:
        down_factor = 2**strides
    return Signature(cross, channels, in_channels, down_factor)


def signature(path: str | os.PathLike) -> Signature:
    """The signature of a ControlNet folder (`config.json`) or single file (safetensors header);
    RecipeError (one line) when it is missing or not a ControlNet."""
    p = Path(path).expanduser()
    if p.is_dir():
        config = p / "config.json"
        if not config.is_file():
            raise RecipeError(f"controlnet: {str(path)!r} is not a ControlNet folder (no config.json)")
        data = json.loads(config.read_text())
        if data.get("_class_name", "ControlNetModel") != "ControlNetModel":
            raise RecipeError(f"controlnet: {str(path)!r} holds a {data['_class_name']}, not a ControlNetModel")
        return signature_of_config(data)
    if not p.is_file():
        raise RecipeError(f"controlnet: {str(path)!r} does not exist")
    if p.suffix.lower() != ".safetensors":
        raise RecipeError(f"controlnet: {str(path)!r}: single-file ControlNets are read from .safetensors files only")
    try:
        return signature_of_file(p)
    except RecipeError as exc:
        raise RecipeError(f"controlnet: {str(path)!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors reports a bad header in several types
        raise RecipeError(f"controlnet: {str(path)!r} is not a readable safetensors file ({type(exc).__name__})") from None


def check_controlnet(path: str, base: Signature) -> None:
    """RecipeError (one line) when the ControlNet at `path` was made for another base."""
    why = signature(path).mismatch(base)
    if why is not None:
        raise RecipeError(f"controlnet: {path!r} was made for another base model: {why}")


# ---------------------------------------------------------------------------------------
# loading


def _config_for_file(keys_shapes: dict[str, list[int]], base_unet) -> dict:
    """A `ControlNetModel` configuration for a single file: the base UNet's topology (a
    ControlNet copies its encoder) with the file's conditioning embedding."""
    from diffusers import ControlNetModel

    emb = _indexed(keys_shapes, "controlnet_cond_embedding.blocks.", ".weight")
    conv_in = keys_shapes.get("controlnet_cond_embedding.conv_in.weight")
    kwargs: dict[str, Any] = {}
    if conv_in is not None:
        widths = [conv_in[0]] + [keys_shapes[k][0] for k in emb[1::2]]
        kwargs = dict(conditioning_embedding_out_channels=tuple(widths), conditioning_channels=conv_in[1])
    net = ControlNetModel.from_unet(base_unet, load_weights_from_unet=False, **kwargs)
    return dict(net.config)


def load_controlnet(path: str | os.PathLike, base_unet=None, *, device=None, dtype=None):
    """A `ControlNetModel` from a diffusers folder or a single `.safetensors` file, in eval
    mode without gradients. A single file takes its topology from `base_unet` (the UNet it
    conditions); the original layout is converted by diffusers' `from_single_file`."""
    from diffusers import ControlNetModel

    from zeroshot.trained.inflate import quiet_diffusers

    p = Path(path).expanduser()
    with quiet_diffusers():
        if p.is_dir():
            net = ControlNetModel.from_pretrained(str(p), local_files_only=True)
        else:
            net = _load_file(p, base_unet)
    net.requires_grad_(False).eval()
    return net.to(**{k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})


#: How many loaded ControlNets `cached_controlnet` keeps (least recently used dropped first).
CACHE_SIZE = 4
_LOADED: OrderedDict = OrderedDict()  # key -> ControlNetModel, most recently used last
_LOADED_LOCK = threading.Lock()


def _files_key(path: Path) -> tuple[str, int]:
    """The resolved path and the newest modification time (ns) of a ControlNet's files (a
    folder's own files: config and weights), so a rewritten ControlNet is loaded again."""
    if path.is_dir():
        return str(path.resolve()), max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0)
    return str(path.resolve()), path.stat().st_mtime_ns


def cached_controlnet(path: str | os.PathLike, base_unet=None, *, device=None, dtype=None):
    """`load_controlnet`, kept for the process: a ControlNet already loaded from the same files
    (resolved path and modification time), for the same device and dtype (and, for a single
    file, a base UNet of the same configuration) is returned as it is, not read again. The
    `CACHE_SIZE` most recently used are kept (`clear_controlnet_cache` drops them)."""
    p = Path(path).expanduser()
    base = None
    if base_unet is not None and not p.is_dir():  # a single file's topology comes from its base
        base = json.dumps(dict(base_unet.config), sort_keys=True, default=str)
    key = (*_files_key(p), None if device is None else str(torch.device(device)), str(dtype), base)
    with _LOADED_LOCK:
        net = _LOADED.pop(key, None)
        if net is None:
            net = load_controlnet(p, base_unet, device=device, dtype=dtype)
        _LOADED[key] = net
        while len(_LOADED) > CACHE_SIZE:
            _LOADED.popitem(last=False)
    return net


def clear_controlnet_cache() -> None:
    """Drop every ControlNet `cached_controlnet` keeps."""
    with _LOADED_LOCK:
        _LOADED.clear()


def _load_file(path: Path, base_unet):
    import tempfile

    from diffusers import ControlNetModel
    from safetensors import safe_open
    from safetensors.torch import load_file

    if base_unet is None:
        raise ValueError("load_controlnet: a single-file ControlNet needs the base UNet it conditions")
    with safe_open(str(path), framework="pt") as handle:
        shapes = {k: list(handle.get_slice(k).get_shape()) for k in handle.keys()}
    if file_layout(shapes) == "diffusers":
        net = ControlNetModel.from_config(_config_for_file(shapes, base_unet))
        net.load_state_dict(load_file(str(path)), strict=True)
        return net
    with tempfile.TemporaryDirectory() as tmp:
        config = ControlNetModel.from_unet(base_unet, load_weights_from_unet=False).config
        (Path(tmp) / "config.json").write_text(json.dumps(dict(config)))
        return ControlNetModel.from_single_file(str(path), config=tmp, local_files_only=True)


__all__ = [
    "CACHE_SIZE",
    "KINDS",
    "Signature",
    "cached_controlnet",
    "canny",
    "check_controlnet",
    "clear_controlnet_cache",
    "control_maps",
    "fit",
    "load_controlnet",
    "parse_signal",
    "read_input_video",
    "resample",
    "signature",
    "signature_of_config",
    "signature_of_file",
]
