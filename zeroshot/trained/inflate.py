"""Inflate a text-to-image UNet into a video UNet with AnimateDiff motion modules.

AnimateDiff (Guo et al., ICLR 2024, Sec. 4.2) inserts temporal self-attention blocks
after every resolution level of a frozen SD UNet. Their output projections start at
zero, so the inflated model reproduces the image model frame by frame until trained.
diffusers 0.42's `MotionAdapter()` does *not* zero them; `new_motion_adapter` does.

The inflated model is a new `UNetMotionModel` whose image layers are copies of the
given UNet's; the UNet itself is never modified.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

# MotionAdapter config keys, in the order diffusers declares them.
ADAPTER_KEYS = (
    "block_out_channels",
    "motion_layers_per_block",
    "motion_transformer_layers_per_block",
    "motion_mid_block_layers_per_block",
    "motion_transformer_layers_per_mid_block",
    "motion_num_attention_heads",
    "motion_norm_num_groups",
    "motion_max_seq_length",
    "use_motion_mid_block",
    "conv_in_channels",
)


def adapter_config_for(
    unet: Any,
    *,
    num_attention_heads: int | None = None,
    max_seq_length: int = 32,
    transformer_layers: int = 1,
    use_mid_block: bool = True,
) -> dict:
    """A `MotionAdapter` config that fits `unet` (a `UNet2DConditionModel`).

    `num_attention_heads=None` picks the largest of 8, 4, 2, 1 that divides every block's
    channel count. The motion layers per block equal the UNet's `layers_per_block`, as
    `UNetMotionModel.from_unet2d` requires.
    """
    channels = tuple(int(c) for c in unet.config.block_out_channels)
    if num_attention_heads is None:
        num_attention_heads = next(h for h in (8, 4, 2, 1) if all(c % h == 0 for c in channels))
    bad = [c for c in channels if c % num_attention_heads]
    if bad:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} must divide every block's channels {channels}"
        )
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
    layers = unet.config.layers_per_block
    return {
        "block_out_channels": channels,
        "motion_layers_per_block": layers if isinstance(layers, int) else tuple(layers),
        "motion_transformer_layers_per_block": transformer_layers,
        "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": transformer_layers,
        "motion_num_attention_heads": num_attention_heads,
        "motion_norm_num_groups": int(unet.config.norm_num_groups),
        "motion_max_seq_length": max_seq_length,
        "use_motion_mid_block": use_mid_block,
        "conv_in_channels": None,
    }


def temporal_transformers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every `AnimateDiffTransformer3D` (one motion layer) inside `module`."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    return [m for m in module.modules() if isinstance(m, AnimateDiffTransformer3D)]


def zero_output_projections(module: torch.nn.Module) -> int:
    """Zero the output projection of every motion layer in `module`; returns how many.

    With `proj_out` at zero each motion layer returns its input unchanged (it is a
    residual block), so the inflated UNet equals its image UNet frame by frame.
    """
    layers = temporal_transformers(module)
    with torch.no_grad():
        for layer in layers:
            layer.proj_out.weight.zero_()
            layer.proj_out.bias.zero_()
    return len(layers)


def new_motion_adapter(
    unet: Any,
    *,
    seed: int = 0,
    zero_init: bool = True,
    **config: Any,
) -> Any:
    """A freshly initialised `MotionAdapter` for `unet`, deterministic in `seed`.

    Options go to `adapter_config_for`. The global RNG is left as it was: initialisation
    runs inside `torch.random.fork_rng` seeded with `seed`.
    """
    from diffusers import MotionAdapter

    cfg = adapter_config_for(unet, **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(**cfg)
    if zero_init:
        zero_output_projections(adapter)
    return move(adapter, device=unet.device, dtype=unet.dtype)


def inflate(unet: Any, adapter: Any) -> Any:
    """A new `UNetMotionModel`: copies of `unet`'s weights plus `adapter`'s motion layers.

    `unet` is read, never changed. The result takes `(b, c, f, h, w)` samples and text
    embeddings repeated per frame (`(b f) n d`, frame-major within each video).
    """
    from diffusers import UNetMotionModel

    if tuple(unet.config.block_out_channels) != tuple(adapter.config.block_out_channels):
        raise ValueError(
            "motion adapter does not fit this UNet: block_out_channels "
            f"{tuple(adapter.config.block_out_channels)} != {tuple(unet.config.block_out_channels)}"
        )
    adapter_device = next(adapter.parameters()).device
    with quiet_diffusers():  # from_unet2d's no-op dtype cast logs a warning
        motion_unet = UNetMotionModel.from_unet2d(unet, adapter)
    adapter.to(adapter_device)  # from_unet2d moves the adapter to the UNet's device
    move(motion_unet, device=unet.device, dtype=unet.dtype)
    motion_unet.eval()
    motion_unet.requires_grad_(False)
    return motion_unet


def motion_parameters(motion_unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The motion-layer parameters of an inflated UNet (what training updates)."""
    return [p for name, p in motion_unet.named_parameters() if ".motion_modules." in name]


def motion_state_dict(motion_unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The motion layers' tensors, keyed as in a `MotionAdapter` state dict."""
    return {
        name: tensor.detach().clone()
        for name, tensor in motion_unet.state_dict().items()
        if ".motion_modules." in name
    }


def adapter_config_of(motion_unet: Any) -> dict:
    """The full `MotionAdapter` config of an inflated UNet.

    diffusers' `UNetMotionModel.save_motion_modules` leaves out the transformer-layer
    counts, so an adapter with more than one layer per motion block cannot be saved by
    it; this config carries every field.
    """
    cfg = motion_unet.config
    return {
        "block_out_channels": tuple(cfg.block_out_channels),
        "motion_layers_per_block": cfg.layers_per_block,
        "motion_transformer_layers_per_block": cfg.temporal_transformer_layers_per_block,
        "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": cfg.temporal_transformer_layers_per_mid_block,
        "motion_num_attention_heads": cfg.motion_num_attention_heads,
        "motion_norm_num_groups": cfg.norm_num_groups,
        "motion_max_seq_length": cfg.motion_max_seq_length,
        "use_motion_mid_block": cfg.use_motion_mid_block,
        "conv_in_channels": None,
    }


def extract_adapter(motion_unet: Any) -> Any:
    """The motion layers of an inflated UNet as a standalone `MotionAdapter` (copied)."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        adapter = MotionAdapter(**adapter_config_of(motion_unet))
    adapter.load_state_dict(motion_state_dict(motion_unet), strict=True)
    return move(adapter, device=motion_unet.device, dtype=motion_unet.dtype)


@contextlib.contextmanager
def quiet_diffusers():
    """Silence diffusers' warnings and diffusers'/transformers' loading progress bars inside
    the block; the previous state is restored."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    log = logging.getLogger("diffusers")
    level = log.level
    bars = [m for m in (diffusers_logging, transformers_logging) if m.is_progress_bar_enabled()]
    log.setLevel(logging.ERROR)
    for m in bars:
        m.disable_progress_bar()
    try:
        yield
    finally:
        log.setLevel(level)
        for m in bars:
            m.enable_progress_bar()


def move(module: Any, *, device: Any = None, dtype: torch.dtype | None = None) -> Any:
    """`module.to(device, dtype)`, casting only when the dtype really changes.

    (diffusers' `ModelMixin.to` logs a warning on every dtype argument, even a no-op one.)
    """
    first = next(module.parameters(), None)
    if dtype is not None and first is not None and first.dtype != dtype:
        module.to(dtype=dtype)
    if device is not None:
        module.to(device=device)
    return module
