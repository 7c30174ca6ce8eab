"""Memory options for large models: model CPU offload and tiled VAE decoding.

`enable_offload(model, "cuda")` keeps every component in CPU memory and moves each to the GPU
only while it runs, the previous one going back (diffusers' `enable_model_cpu_offload`, built
on the same `accelerate` hooks): peak GPU memory is the largest component plus activations
instead of all of them. `enable_vae_tiling(model)` decodes (and encodes) in overlapping
spatial tiles blended at the seams, so the VAE's activation memory no longer grows with the
frame size; the result differs from whole-frame decoding by the blending (small, not zero).
`zeroshot generate --offload --vae-tiling` (and `render`) apply them when the model loads.
"""

from __future__ import annotations

import torch


class MemoryOptionError(ValueError):
    """A memory option the model or the machine cannot take (one line for users)."""


def offload_order(model) -> list[torch.nn.Module]:
    """The model's modules in the order a generation runs them: encoders, denoiser, VAE."""
    modules = model.modules()
    last = [m for m in (model.denoiser, getattr(model, "vae", None)) if m is not None and any(m is x for x in modules)]
    return [m for m in modules if not any(m is x for x in last)] + last


def enable_offload(model, device: str | torch.device = "cuda"):
    """Model CPU offload onto `device` (in place; returns the model). The model then reports
    `device` as where its tensors go (`Components.execution_device`)."""
    from accelerate import cpu_offload_with_hook

    device = torch.device(device)
    model.to(device="cpu")
    hook = None
    for module in offload_order(model):
        _, hook = cpu_offload_with_hook(module, execution_device=device, prev_module_hook=hook)
    model.execution_device = device
    return model


def enable_vae_tiling(model, **tiles):
    """Tiled VAE encoding and decoding (in place; returns the model); `tiles` are the VAE's own
    `enable_tiling` options (tile sizes, strides or overlaps; its defaults otherwise).
    MemoryOptionError in one line for a VAE without tiling (SVD's temporal decoder)."""
    vae = getattr(model, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        name = type(vae).__name__ if vae is not None else "none"
        raise MemoryOptionError(f"vae_tiling: the {model.family} model's VAE ({name}) has no tiled decoding")
    vae.enable_tiling(**tiles)
    return model


def check(family, *, offload: bool = False, vae_tiling: bool = False, device: str | None = None) -> None:
    """Before any weights load: `offload` needs a CUDA device; `vae_tiling` a VAE that tiles."""
    if offload:
        target = torch.device(device) if device else torch.device("cuda")
        if target.type != "cuda" or not torch.cuda.is_available():
            raise MemoryOptionError(
                "offload: model CPU offload moves components onto a CUDA GPU one at a time; "
                + ("no CUDA device is available here" if not torch.cuda.is_available() else f"--device is {target}")
            )
    if vae_tiling and family is not None and getattr(family, "family", None) == "svd":
        raise MemoryOptionError("vae_tiling: the svd model's VAE (AutoencoderKLTemporalDecoder) has no tiled decoding")
