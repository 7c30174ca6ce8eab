"""AnimateDiff motion modules: load, save, context windows and the eps function.

A motion adapter (diffusers `MotionAdapter`) is loaded from a folder
(`config.json` + weights, as `MotionAdapter.save_pretrained` writes it) or from one
`.safetensors` file: ours (config in the file's metadata) or an original AnimateDiff
checkpoint (`mm_sd_v15*.safetensors`; its config is read off the tensor shapes, so no
hub access is needed). `inflate` (zeroshot.trained.inflate) builds a new
`UNetMotionModel` from the model's UNet; the UNet itself is never changed.

Videos longer than the adapter's `motion_max_seq_length` run the temporal layers on
sliding windows fused with pyramid weights (FreeNoise, Qiu et al., ICLR 2024, Sec. 3.3
/ Eq. 9); see `context_windows`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from zeroshot.recipe import RecipeError
from zeroshot.techniques.windows import window_ranges, window_weights
from zeroshot.trained.inflate import (
    ADAPTER_KEYS,
    adapter_config_of,
    extract_adapter,
    inflate,
    move,
)

logger = logging.getLogger(__name__)

#: Metadata key of our single-file adapters (value: the MotionAdapter config as JSON).
METADATA_KEY = "zeroshot.motion_adapter"
#: The motion module trained for the embedded shapes model (zeroshot.trained.train_motion).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EMBEDDED_ADAPTER = WEIGHTS_DIR / "shapes_motion.safetensors"


# ---------------------------------------------------------------------------------------
# load / save


def load_motion_adapter(path: str | Path, *, device: Any = None, dtype: torch.dtype | None = None) -> Any:
    """A `MotionAdapter` from a folder or a single `.safetensors` file (offline)."""
    from diffusers import MotionAdapter

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RecipeError(f"animatediff.adapter: folder {path} has no config.json")
        from zeroshot.trained.inflate import quiet_diffusers

        with quiet_diffusers():
            adapter = MotionAdapter.from_pretrained(str(path), local_files_only=True)
        return move(adapter.eval(), device=device, dtype=dtype)
    if not path.is_file():
        raise RecipeError(f"animatediff.adapter: {path} is neither a folder nor a file")
    if path.suffix != ".safetensors":
        raise RecipeError(f"animatediff.adapter: expected a folder or a .safetensors file, got {path}")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    state = load_file(str(path))
    if METADATA_KEY in metadata:
        config = json.loads(metadata[METADATA_KEY])
    else:
        state = _from_original_keys(state)
        config = _config_from_state(state)
    with torch.random.fork_rng(devices=[]):
        adapter = MotionAdapter(**config)
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    # positional tables are recomputed buffers; everything else must match
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]
    if missing or unexpected:
        raise RecipeError(
            f"animatediff.adapter: {path} does not look like a motion adapter "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
        )
    return move(adapter.eval(), device=device, dtype=dtype)


def save_motion_adapter(source: Any, path: str | Path) -> Path:
    """Save a `MotionAdapter`, or the motion layers of a `UNetMotionModel`.

    `path` ending in `.safetensors`: one file, config in its metadata (what we ship).
    Otherwise a folder that `MotionAdapter.from_pretrained` loads. Unlike diffusers'
    `save_motion_modules`, every config field is kept, so adapters with several
    transformer layers per motion block round-trip.
    """
    from diffusers import MotionAdapter

    adapter = source if isinstance(source, MotionAdapter) else extract_adapter(source)
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        config = {k: _plain(adapter.config[k]) for k in ADAPTER_KEYS}
        state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(config)})
        tmp.replace(path)
        return path
    adapter.save_pretrained(str(path), safe_serialization=True)
    return path


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original AnimateDiff checkpoint's keys to diffusers' MotionAdapter keys."""
    if not any(".temporal_transformer." in k for k in state):
        return state
    from diffusers.loaders.single_file_utils import (
        convert_animatediff_checkpoint_to_diffusers,
    )

    max_len = {k: v.shape[1] for k, v in state.items() if k.endswith("pos_encoder.pe")}
    out = convert_animatediff_checkpoint_to_diffusers(state)
    # keep the positional table length (it fixes motion_max_seq_length)
    for key, length in max_len.items():
        new = (
            key.replace(".attention_blocks.0", ".attn1")
            .replace(".attention_blocks.1", ".attn2")
            .replace(".temporal_transformer", "")
        )
        block = new.rsplit(".attn", 1)[0]
        out[f"{block}.pos_embed.pe"] = state[key][:, :length]
    return out


def _config_from_state(state: dict[str, torch.Tensor]) -> dict:
    """Infer a MotionAdapter config from a diffusers-keyed motion state dict."""
    import re

    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
        return max(found) + 1 if found else 0

    num_down = count(r"down_blocks\.(\d+)\.")
    if num_down == 0:
        raise RecipeError("animatediff.adapter: no motion layers found in the file")
    channels = tuple(
        int(state[f"down_blocks.{i}.motion_modules.0.proj_in.weight"].shape[1]) for i in range(num_down)
    )
    layers = tuple(count(rf"down_blocks\.{i}\.motion_modules\.(\d+)\.") for i in range(num_down))
    transformer_layers = tuple(
        count(rf"down_blocks\.{i}\.motion_modules\.0\.transformer_blocks\.(\d+)\.") for i in range(num_down)
    )
    pe = [v for k, v in state.items() if k.endswith("pos_embed.pe")]
    has_mid = any(k.startswith("mid_block.") for k in state)
    first = state["down_blocks.0.motion_modules.0.proj_in.weight"]
    return {
        "block_out_channels": channels,
        "motion_layers_per_block": layers,
        "motion_transformer_layers_per_block": transformer_layers,
        "motion_mid_block_layers_per_block": count(r"mid_block\.motion_modules\.(\d+)\.") or 1,
        "motion_transformer_layers_per_mid_block": count(
            r"mid_block\.motion_modules\.0\.transformer_blocks\.(\d+)\."
        )
        or 1,
        "motion_num_attention_heads": _heads_guess(int(first.shape[0])),
        "motion_norm_num_groups": 32,
        "motion_max_seq_length": int(pe[0].shape[1]) if pe else 32,
        "use_motion_mid_block": has_mid,
        "conv_in_channels": None,
    }


def _heads_guess(channels: int) -> int:
    """AnimateDiff's released modules use 8 heads (head count is not stored in weights)."""
    return 8 if channels % 8 == 0 else 1


# ---------------------------------------------------------------------------------------
# context windows (FreeNoise)


class WindowedTemporalBlock(torch.nn.Module):
    """Runs a temporal transformer block on frame windows and fuses the outputs.

    Input `(b h w, f, c)` as in `AnimateDiffTransformer3D`. Each window sees positions
    0..length-1, as in training; each output frame is the weighted mean of the windows
    that contain it (weights sum to one per frame).
    """

    def __init__(self, block: torch.nn.Module, length: int, stride: int, weighting: str = "pyramid"):
        super().__init__()
        self.block = block
        self.length, self.stride, self.weighting = length, stride, weighting

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        num_frames = hidden_states.shape[1]
        if num_frames <= self.length:
            return self.block(hidden_states, *args, **kwargs)
        weights = window_weights(self.length, self.weighting).to(hidden_states)[None, :, None]  # 1 L 1
        total = torch.zeros(1, num_frames, 1, dtype=hidden_states.dtype, device=hidden_states.device)
        out = torch.zeros_like(hidden_states)
        for start, end in window_ranges(num_frames, self.length, self.stride):
            out[:, start:end] += self.block(hidden_states[:, start:end], *args, **kwargs) * weights
            total[:, start:end] += weights
        return out / total


@contextlib.contextmanager
def context_windows(
    motion_unet: torch.nn.Module, length: int, stride: int = 4, *, weighting: str = "pyramid"
) -> Iterator[torch.nn.Module]:
    """Within the block, every temporal transformer block of `motion_unet` runs windowed.

    The original blocks are put back (the same objects) on exit, also on error.
    """
    from zeroshot.trained.inflate import temporal_transformers

    max_len = int(motion_unet.config.motion_max_seq_length)
    if not 1 <= length <= max_len:
        raise RecipeError(f"animatediff.context_length must be in [1, {max_len}], got {length}")
    if stride < 1:
        raise RecipeError(f"animatediff.context_stride must be >= 1, got {stride}")
    window_weights(1, weighting)
    swapped: list[tuple[torch.nn.ModuleList, int, torch.nn.Module]] = []
    try:
        for layer in temporal_transformers(motion_unet):
            for i, block in enumerate(layer.transformer_blocks):
                swapped.append((layer.transformer_blocks, i, block))
                layer.transformer_blocks[i] = WindowedTemporalBlock(block, length, stride, weighting)
        yield motion_unet
    finally:
        for blocks, i, block in reversed(swapped):
            blocks[i] = block


@contextlib.contextmanager
def motion_off(unet: Any):
    """Within the block the video UNet's temporal layers pass frames through, so it is the
    frozen image model frame by frame: a `UNetMotionModel`'s motion modules (each returns its
    input), or a zoo model's temporal layers (`zoo.temporal_off`). GenTron's motion-free
    guidance needs both predictions."""
    from zeroshot.trained import zoo
    from zeroshot.trained.inflate import temporal_transformers

    if isinstance(unet, zoo.ZooUNet):
        with zoo.temporal_off(unet):
            yield unet
        return
    modules = temporal_transformers(unet)
    if not modules:
        raise ValueError(f"{type(unet).__name__} has no motion modules to switch off")

    def through(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    handles = [m.register_forward_hook(through, with_kwargs=True) for m in modules]
    try:
        yield unet
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------
# the model side


def resolve_adapter_path(model: Any, adapter: str | Path | None) -> Path:
    """The adapter to use: the given path, else the model's default (its zeroshot.json's
    `animatediff.adapter`, relative to the model folder), else the embedded shapes module."""
    if adapter is not None:
        return Path(adapter)
    defaults = getattr(model, "defaults", None) or {}
    if defaults.get("animatediff.adapter"):
        path = Path(defaults["animatediff.adapter"])
        root = getattr(model, "path", None)
        return path if path.is_absolute() or root is None else Path(root) / path
    if _is_embedded(model) and EMBEDDED_ADAPTER.is_file():
        return EMBEDDED_ADAPTER
    raise RecipeError(
        f"animatediff.adapter is required for model {getattr(model, 'model_id', '?')!r} "
        "(a MotionAdapter folder or .safetensors file)"
    )


def _is_embedded(model: Any) -> bool:
    """The embedded shapes model, or a personalised variant of it (`lora.personalised_model`)."""
    model_id = str(getattr(model, "model_id", "") or "")
    return model_id == "zeroshot/shapes" or model_id.startswith("zeroshot/shapes+")


def motion_unet_for(model: Any, adapter: str | Path | Any | None = None) -> Any:
    """A new `UNetMotionModel` for `model` (its UNet is copied, never changed).

    `adapter`: a path, a loaded `MotionAdapter`, or None for the model's default.
    """
    from diffusers import MotionAdapter

    unet = model.unet
    if not isinstance(adapter, MotionAdapter):
        adapter = load_motion_adapter(resolve_adapter_path(model, adapter), device=unet.device, dtype=unet.dtype)
    return inflate(unet, adapter)


def motion_eps_fn(
    motion_unet: Any,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance_scale: float,
    *,
    context_length: int | None = None,
    context_stride: int = 4,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An eps function `(latents (b, c, f, h, w), t) -> eps` of a `UNetMotionModel`, for
    loops written by hand: the `animatediff` family's network call, the one CFG of
    `zeroshot.families.base.guided`, and FreeNoise context windows for calls longer than
    `context_length` (default: the module's `motion_max_seq_length`)."""
    from zeroshot.families.base import Cond, guided

    max_len = int(motion_unet.config.motion_max_seq_length)
    length = max_len if context_length is None else int(context_length)
    if not 1 <= length <= max_len:
        raise RecipeError(f"animatediff.context_length must be in [1, {max_len}], got {length}")
    if context_stride < 1:
        raise RecipeError(f"animatediff.context_stride must be >= 1, got {context_stride}")
    c = Cond({"prompt_embeds": cond}, None if uncond is None else {"prompt_embeds": uncond})

    def forward(x: torch.Tensor, t, tensors: dict) -> torch.Tensor:
        ctx = tensors["prompt_embeds"].repeat_interleave(x.shape[2], dim=0)  # (b f) L D
        return motion_unet(x.to(motion_unet.dtype), t, encoder_hidden_states=ctx.to(motion_unet.dtype)).sample

    fn = guided(forward, guidance_scale)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        long = x.shape[2] > length
        with context_windows(motion_unet, length, context_stride) if long else contextlib.nullcontext():
            return fn(x, t, c)

    return eps_fn


__all__ = [
    "EMBEDDED_ADAPTER",
    "WindowedTemporalBlock",
    "adapter_config_of",
    "context_windows",
    "load_motion_adapter",
    "motion_eps_fn",
    "motion_unet_for",
    "resolve_adapter_path",
    "save_motion_adapter",
    "window_ranges",
    "window_weights",
]
