"""ControlNet-conditioned video (`recipe.controlnet`): every network call of the run gets the
residuals of one or more ControlNets (Zhang et al., arXiv 2302.05543), each run on the
frames folded into the batch with its own control map per frame.

As diffusers' ControlNet pipelines compute them: each ControlNet sees the same scaled latents,
timestep and text conditioning as the UNet and its frame's map in [0, 1]; its residuals are
multiplied by its scale (by a 0.1..1 ramp over the blocks in guess mode, where only the
positive prompt's half sees the ControlNet and the negative half gets none) and zero outside
the schedule fraction [start, end]; several ControlNets add their residuals. With cross-frame
attention on (Text2Video-Zero Sec. 4.4), the ControlNets' self-attention attends to the anchor
frame as the UNet's does, driven by the same switch.

The control maps travel in the conditioning (`Cond`, frame-wise keys `control_<k>`), so
chunks, context windows and T2V-Zero's frame-0 pass hand each call its own frames' maps.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

import torch

from zeroshot.recipe import RecipeError


def check(recipe, family) -> None:
    cn = recipe.controlnet
    if cn is None:
        return
    from zeroshot.control import parse_signal

    if not getattr(family, "controlnet", False):
        raise RecipeError(
            f"controlnet: {family.family} models take no ControlNet residuals; ControlNets condition sd, sdxl "
            "and animatediff models"
        )
    if len(cn.signals) != len(cn.models):
        raise RecipeError(
            f"controlnet.signals: one KIND:VIDEO per ControlNet, in order; got {len(cn.models)} ControlNets and "
            f"{len(cn.signals)} control signals (--control KIND:VIDEO)"
        )
    for signal in cn.signals:
        parse_signal(signal)
    if cn.scales and len(cn.scales) != len(cn.models):
        raise RecipeError(
            f"controlnet.scales: one scale per ControlNet; got {len(cn.scales)} for {len(cn.models)} ControlNets"
        )
    if not 0.0 <= cn.start < cn.end <= 1.0:
        raise RecipeError(f"controlnet.start/end must satisfy 0 <= start < end <= 1, got {cn.start}, {cn.end}")
    if not 0 <= cn.low_threshold <= cn.high_threshold:
        raise RecipeError(
            f"controlnet thresholds must satisfy 0 <= low_threshold <= high_threshold, got "
            f"{cn.low_threshold}, {cn.high_threshold}"
        )


def base_signature(model):
    """What a ControlNet must share with a loaded model or a `ModelCard` (None: unknown
    without loading, e.g. a single-file model)."""
    import json

    from zeroshot.control import signature_of_config

    factor = getattr(model, "vae_scale_factor", None)
    unet = getattr(model, "unet", None)
    if unet is not None:
        return signature_of_config(dict(unet.config), vae_scale_factor=factor)
    path = getattr(model, "path", None)
    config = Path(path) / "unet" / "config.json" if path else None
    if config is None or not config.is_file():
        return None
    return signature_of_config(json.loads(config.read_text()), vae_scale_factor=factor)


def with_model_controlnets(model, recipe):
    """`recipe` with the model's own ControlNets (its zeroshot.json `controlnet.models`,
    relative to the model folder) where it asks for ControlNet conditioning and names none:
    the embedded model ships an edge ControlNet, so `--control canny:clip.mp4` alone works.
    Their recommended conditioning scales (`controlnet.scales`) come with them unless the
    recipe gives its own."""
    cn = recipe.controlnet
    defaults = getattr(model, "defaults", None) or {}
    names = defaults.get("controlnet.models")
    if cn is None or cn.models or not names:
        return recipe
    root = getattr(model, "path", None)
    paths = tuple(str(p if p.is_absolute() or root is None else Path(root) / p) for p in map(Path, names))
    scales = cn.scales or tuple(float(v) for v in defaults.get("controlnet.scales", ()))
    return replace(recipe, controlnet=replace(cn, models=paths, scales=scales))


def check_inputs(model, recipe) -> None:
    """Before any model work: every ControlNet exists and was made for this model's base,
    every control video is readable and fits the request (or `resize` asks to resample it)."""
    cn = recipe.controlnet
    if cn is None:
        return
    if not cn.models:  # here, not in `check`: a preset may leave its inputs to the command line
        raise RecipeError("controlnet.models: no ControlNet given (--controlnet PATH[:SCALE])")
    from zeroshot.control import check_controlnet, signature

    base = base_signature(model)
    for path in cn.models:
        if base is None:
            signature(path)
        else:
            check_controlnet(path, base)
    maps(recipe)


def maps(recipe) -> list[torch.Tensor]:
    """The control maps `(f, 3, H, W)` in [0, 1] of every signal, in order."""
    from zeroshot.control import control_maps

    cn = recipe.controlnet
    return [
        control_maps(s, recipe.num_frames, recipe.height, recipe.width, resize=cn.resize,
                     low=cn.low_threshold, high=cn.high_threshold)
        for s in cn.signals
    ]


def scales_at(recipe, index: int, num_steps: int) -> list[float]:
    """Each ControlNet's scale at schedule index `index` (zero outside [start, end])."""
    cn = recipe.controlnet
    scales = list(cn.scales) if cn.scales else [1.0] * len(cn.models)
    keep = 1.0 - float(index / num_steps < cn.start or (index + 1) / num_steps > cn.end)
    return [s * keep for s in scales]


def _rows(obj, rows: torch.Tensor):
    """`obj` (a tensor or a dict of them) restricted to the batch rows `rows` (bool)."""
    if isinstance(obj, dict):
        return {k: _rows(v, rows) for k, v in obj.items()}
    return obj[rows]


def _scatter(part: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of `part` back into a zero tensor with `len(rows)` rows."""
    out = part.new_zeros((len(rows), *part.shape[1:]))
    out[rows] = part
    return out


def residuals_fn(run, nets, guess_mode: bool):
    """`(x, t, c) -> UNet keywords` with the summed residuals of `nets` for this call."""
    from zeroshot.families.sd import fold

    model, recipe = run.model, run.recipe

    def fn(x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> dict:
        scales = scales_at(recipe, *run.step(t))
        if not any(scales):
            return {}
        f = x.shape[2]
        kwargs = model.frame_kwargs(x, c)
        flat = fold(x)  # (b f) c h w
        rows = None
        if "control_on" in c and not bool(c["control_on"].all()):  # guess mode: the positive half only
            rows = c["control_on"].bool().repeat_interleave(f)  # (b f)
            flat, kwargs = flat[rows], _rows(kwargs, rows)
        down = mid = None
        for k, (net, scale) in enumerate(zip(nets, scales)):
            if scale == 0:
                continue
            image = c[f"control_{k}"].flatten(0, 1)  # (b f) 3 H W
            if rows is not None:
                image = image[rows]
            d, m = net(flat.to(net.dtype), t, controlnet_cond=image, conditioning_scale=scale,
                       guess_mode=guess_mode, return_dict=False, **kwargs)
            down = list(d) if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if rows is not None:
            down, mid = [_scatter(d, rows) for d in down], _scatter(mid, rows)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    return fn


@contextlib.contextmanager
def residuals_on(model, fn):
    """Install `fn` as the model's residual source for the block (restored in `finally`)."""
    had = "residuals_fn" in vars(model)
    previous = vars(model).get("residuals_fn")
    model.residuals_fn = fn
    try:
        yield
    finally:
        if had:
            model.residuals_fn = previous
        else:
            del model.residuals_fn


def controlled_encode(encode, control: list[torch.Tensor], guess_mode: bool):
    """`encode` with the control maps added to the conditioning as frame-wise keys
    `control_<k>` `(b, f, 3, H, W)`, and in guess mode with CFG which half sees them."""
    from zeroshot.families.base import inputs_for

    def fn(prompts, negative, image=None, recipe=None, generator=None):
        cond = encode(prompts, negative, **inputs_for(encode, image=image, recipe=recipe, generator=generator))
        n = len(prompts)
        extra = {f"control_{k}": m[None].expand(n, *m.shape) for k, m in enumerate(control)}
        positive, negative_part = {**cond.positive, **extra}, None
        if cond.negative is not None:
            negative_part = {**cond.negative, **extra}
            if guess_mode:
                positive["control_on"] = torch.ones(n, dtype=torch.bool)
                negative_part["control_on"] = torch.zeros(n, dtype=torch.bool)
        return replace(cond, positive=positive, negative=negative_part, frame_keys=cond.frame_keys + tuple(extra),
                       _batched={})

    return fn


def cross_frame_on_controlnets(run, nets) -> None:
    """Cross-frame attention on the ControlNets' spatial self-attention, sharing the UNet
    hook's state (`run.extras["frame_state"]`, set by the cross_frame technique)."""
    from zeroshot.families.base import layers_of_kind
    from zeroshot.hooks import cross_frame_attention, in_parts

    cf, state = run.recipe.cross_frame, run.extras.get("frame_state")
    if cf is None or state is None:
        return
    for k, net in enumerate(nets):
        names = [n for n in layers_of_kind(list(net.attn_processors), lambda n: False, "spatial_self")
                 if in_parts(n, cf.layers)]
        if names:
            run.stack.enter_context(
                cross_frame_attention(net, state.num_frames, names=names, state=state, prefix=f"controlnet{k}.")
            )


def apply(run) -> None:
    cn = run.recipe.controlnet
    if cn is None:
        return
    from zeroshot.control import cached_controlnet

    model = run.model
    unet = getattr(model, "unet", None)
    nets = [cached_controlnet(p, unet, device=model.device, dtype=model.dtype) for p in cn.models]
    guess = cn.guess_mode or any(bool(net.config.get("global_pool_conditions", False)) for net in nets)
    control = [m.to(device=model.device, dtype=model.dtype) for m in maps(run.recipe)]
    run.extras["controlnets"] = nets
    run.encode = controlled_encode(run.encode, control, guess)
    run.stack.enter_context(residuals_on(model, residuals_fn(run, nets, guess)))
    cross_frame_on_controlnets(run, nets)


def parse_controlnet_arg(text: str) -> tuple[str, float | None]:
    """`PATH[:SCALE]` -> (path, scale or None); a trailing `:number` is the scale."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            return text, None
        if not math.isfinite(scale):
            raise RecipeError(f"--controlnet {text!r}: the scale must be a finite number")
        return head, scale
    return text, None
