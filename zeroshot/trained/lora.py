"""Low-rank adapters (LoRA, Hu et al., ICLR 2022) on a UNet's linear and convolution layers.

Used to personalise the embedded text-to-image model (a new drawing style) so we can
show AnimateDiff's claim: a motion module trained on the base model animates a
personalised variant without retraining.

`add_lora` wraps the chosen `nn.Linear` and `nn.Conv2d` layers of a module *in place*
(call it on a copy); the low-rank update starts at zero (`up` is zero), so the wrapped
module equals the original until trained. A convolution's adapter is a `rank`-channel
convolution with the base's kernel, stride and padding followed by a 1x1 convolution back
to the output channels (the "LoCon" form), so its update is again one weight of the
base's shape. `merged` returns a copy of a UNet with a saved LoRA folded into its weights;
the UNet passed in is never changed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

METADATA_KEY = "zeroshot.lora"
#: the attention projections of diffusers' `Attention` (self- and cross-attention)
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: a style LoRA: attention projections, the transformers' in/out projections and the
#: ResNet convolutions (texture and edges live in the convolutions)
STYLE_TARGETS = DEFAULT_TARGETS + ("proj_in", "proj_out", "conv1", "conv2")
STYLE_UNDER = ("attentions", "resnets")


class LoRALayer(nn.Module):
    """`base(x) + (alpha / rank) * up(down(x))` for an `nn.Linear` or `nn.Conv2d` base; `up` starts at zero."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if isinstance(base, nn.Conv2d) and (base.groups != 1 or base.padding_mode != "zeros"):
            raise ValueError("LoRA supports Conv2d with groups=1 and zero padding only")
        self.base, self.rank, self.alpha = base, rank, alpha
        fan_in = base.weight[0].numel()
        self.down = nn.Parameter(torch.empty(rank, *base.weight.shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.down.uniform_(-bound, bound, generator=generator)
        self.up = nn.Parameter(torch.zeros(base.weight.shape[0], rank))
        self.to(device=base.weight.device, dtype=base.weight.dtype)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        """The weight update (the shape of `base.weight`) this adapter adds."""
        return delta_weight(self.up, self.down, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        if isinstance(base, nn.Linear):
            low = nn.functional.linear(nn.functional.linear(x, self.down), self.up)
        else:
            low = nn.functional.conv2d(x, self.down, None, base.stride, base.padding, base.dilation)
            low = nn.functional.conv2d(low, self.up[:, :, None, None])
        return base(x) + self.scale * low


def delta_weight(up: torch.Tensor, down: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale * up @ down` reshaped to the base weight: (out, in) or (out, in, kh, kw)."""
    return (scale * up @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


def _targets(module: nn.Module, targets: tuple[str, ...], under: tuple[str, ...]) -> list[str]:
    names = []
    for name, sub in module.named_modules():
        if (
            isinstance(sub, (nn.Linear, nn.Conv2d))
            and any(u in name for u in under)
            and any(name.endswith("." + t) for t in targets)
        ):
            names.append(name)
    return names


def add_lora(
    module: nn.Module,
    *,
    rank: int = 4,
    alpha: float | None = None,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    under: str | tuple[str, ...] = "attentions",
    seed: int = 0,
) -> dict[str, LoRALayer]:
    """Wrap every target layer (`nn.Linear`/`nn.Conv2d` named `*.<target>` inside `under`) in place.

    Returns {layer name: LoRALayer}. Only the LoRA parameters require grad afterwards.
    `alpha=None` means alpha = rank (scale 1).
    """
    generator = torch.Generator().manual_seed(seed)
    alpha = float(rank if alpha is None else alpha)
    under = (under,) if isinstance(under, str) else tuple(under)
    module.requires_grad_(False)
    wrapped = {}
    for name in _targets(module, targets, under):
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        lora = LoRALayer(getattr(parent, child), rank, alpha, generator)
        setattr(parent, child, lora)
        wrapped[name] = lora
    if not wrapped:
        raise ValueError(f"no nn.Linear/nn.Conv2d named like {targets} under {under} in {type(module).__name__}")
    return wrapped


def lora_state(wrapped: dict[str, LoRALayer]) -> dict[str, torch.Tensor]:
    """The LoRA tensors, keyed `<layer>.down` / `<layer>.up`."""
    out = {}
    for name, lora in wrapped.items():
        out[f"{name}.down"] = lora.down.detach().cpu().contiguous()
        out[f"{name}.up"] = lora.up.detach().cpu().contiguous()
    return out


def save_lora(wrapped: dict[str, LoRALayer], path: str | Path, *, extra: dict | None = None) -> Path:
    """One `.safetensors` file; rank, alpha and `extra` (JSON values) go in its metadata."""
    from safetensors.torch import save_file

    first = next(iter(wrapped.values()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(lora_state(wrapped), str(tmp), metadata={METADATA_KEY: json.dumps({**(extra or {}), "rank": first.rank, "alpha": first.alpha})})
    tmp.replace(path)
    return path


def lora_file_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a LoRA `.safetensors` file; FileNotFoundError / ValueError in one line."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({exc})") from None


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, {"rank", "alpha", ...extra}) of a file written by `save_lora`."""
    from safetensors.torch import load_file

    meta = lora_file_metadata(path)
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: not a zeroshot LoRA file (no {METADATA_KEY} metadata)")
    return load_file(str(path)), json.loads(meta[METADATA_KEY])


def merged(unet: nn.Module, lora: str | Path | tuple[dict, dict], *, scale: float = 1.0) -> nn.Module:
    """A copy of `unet` with the LoRA's update (times `scale`) added to its weights."""
    tensors, meta = load_lora(lora) if isinstance(lora, (str, Path)) else lora
    factor = scale * float(meta["alpha"]) / int(meta["rank"])
    out = copy.deepcopy(unet)
    layers = sorted({k.rsplit(".", 1)[0] for k in tensors})
    with torch.no_grad():
        for name in layers:
            try:
                layer = out.get_submodule(name)
            except AttributeError:
                raise ValueError(f"LoRA layer {name!r} is not in this UNet") from None
            up, down = tensors[f"{name}.up"], tensors[f"{name}.down"]
            shape = (up.shape[0], *down.shape[1:])
            if not isinstance(layer, (nn.Linear, nn.Conv2d)) or tuple(layer.weight.shape) != shape:
                raise ValueError(f"LoRA layer {name!r} does not match this UNet ({type(layer).__name__})")
            layer.weight += delta_weight(up.to(layer.weight), down.to(layer.weight), factor)
    return out


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """`FILE` or `FILE:SCALE` (the CLI's `--lora`) -> (path, scale)."""
    path, sep, scale = text.rpartition(":")
    if sep and path:
        try:
            return Path(path), float(scale)
        except ValueError:
            pass
    return Path(text), 1.0


def personalised_model(model: Any, lora: str | Path, *, scale: float = 1.0) -> Any:
    """A `zeroshot.models.Model` sharing `model`'s parts but with a LoRA-merged UNet copy."""
    from dataclasses import replace

    return replace(model, unet=merged(model.unet, lora, scale=scale), model_id=f"{model.model_id}+{Path(lora).stem}")
