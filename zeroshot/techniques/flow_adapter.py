"""A trained flow adapter on AnimateDiff (`recipe.animatediff.flow_adapter`, `--flow-adapter`).

The motion request's dense field (`zeroshot.motion.field_from_recipe`, the one T2V-Zero's
warp and flow-warped noise use) is evaluated at the latent cells, turned into flow features
(`trained.flow_adapter.flow_features`) and carried in the conditioning as a frame-wise
tensor, so chunks and context windows slice it with the frames; every network call adds
the adapter's residuals to the UNet's skip connections (with a ControlNet's, when one
runs), or, for an attention adapter (OnlyFlow), its features to every temporal attention's
input tokens. The adapter file must be made for this base: checked against the model's unet
config before any weights load (`check_inputs`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from zeroshot.recipe import RecipeError

#: The conditioning key of the flow features `(b, f, 4, h, w)`.
KEY = "flow_adapter"


def _path(recipe, model=None):
    """The adapter file of the recipe; a relative path that is not a file here is looked up in
    the model's folder (`--model shapes-v2 --flow-adapter flow_adapter.safetensors`: the one it ships)."""
    from zeroshot.models import in_model_folder

    path = recipe.animatediff.flow_adapter if recipe.animatediff is not None else None
    return None if path is None else in_model_folder(path, getattr(model, "path", None))


def check(recipe, family) -> None:
    path = _path(recipe)
    if path is None:
        return
    if recipe.motion is None:
        raise RecipeError(
            "animatediff.flow_adapter: the adapter follows a motion request; give --motion, --zoom, --rotate, "
            "--path, --trajectory or --motion-from"
        )
    if family.family not in ("sd", "animatediff"):
        raise RecipeError(f"animatediff.flow_adapter: flow adapters condition AnimateDiff on sd models, not {family.family}")


def _unet_config(model):
    """The base's unet: a loaded model's, or the config.json of a card's folder (None if neither)."""
    import json

    unet = getattr(model, "unet", None)
    if unet is None and getattr(model, "path", None):
        config = Path(model.path) / "unet" / "config.json"
        unet = json.loads(config.read_text()) if config.is_file() else None
    return unet


def check_inputs(model, recipe) -> dict | None:
    """The adapter file's header, checked against the base (RecipeError in one line, before
    any model work); None without an adapter."""
    path = _path(recipe, model)
    if path is None:
        return None
    from zeroshot.trained import flow_adapter

    try:
        return flow_adapter.check_file(path, _unet_config(model))
    except ValueError as exc:
        raise RecipeError(f"animatediff.flow_adapter: {exc}") from None


def flow_encode(encode, features: torch.Tensor):
    """`encode` with the flow features `(f, 4, h, w)` added to every branch of the
    conditioning as the frame-wise key `KEY` `(b, f, 4, h, w)`."""
    from zeroshot.families.base import inputs_for

    def fn(prompts, negative, image=None, recipe=None, generator=None):
        cond = encode(prompts, negative, **inputs_for(encode, image=image, recipe=recipe, generator=generator))
        n = len(prompts)
        extra = {KEY: features[None].expand(n, *features.shape)}

        def add(part):
            return None if part is None else {**part, **extra}

        return replace(cond, positive=add(cond.positive), negative=add(cond.negative), partial=add(cond.partial),
                       frame_keys=cond.frame_keys + (KEY,), _batched={})

    return fn


def residuals_fn(adapter, previous):
    """`(x, t, c) -> UNet keywords`: the adapter's residuals of `c[KEY]`, added to those of
    `previous` (a ControlNet's residuals_fn, or None)."""

    def fn(x: torch.Tensor, t, c: dict) -> dict:
        extra = dict(previous(x, t, c)) if previous is not None else {}
        features = c[KEY].flatten(0, 1).to(device=x.device, dtype=adapter.stem[0].weight.dtype)  # (b f) 4 h w
        ours = adapter.residuals(features, dtype=x.dtype)
        if "down_block_additional_residuals" in extra:
            ours["down_block_additional_residuals"] = tuple(
                a + b for a, b in zip(extra["down_block_additional_residuals"], ours["down_block_additional_residuals"])
            )
        if extra.get("mid_block_additional_residual") is not None:
            ours["mid_block_additional_residual"] = extra["mid_block_additional_residual"] + ours["mid_block_additional_residual"]
        return {**extra, **ours}

    return fn


def attention_fn(injection, previous):
    """`(x, t, c) -> UNet keywords`: sets the attention injection's flow features of `c[KEY]`
    for this call and passes on `previous`'s keywords (a ControlNet's, or none)."""

    def fn(x: torch.Tensor, t, c: dict) -> dict:
        flow = c[KEY]  # (B, f, 4, h, w)
        injection.set(flow.flatten(0, 1).to(device=x.device, dtype=injection.adapter.stem[0].weight.dtype), *flow.shape[:2])
        return dict(previous(x, t, c)) if previous is not None else {}

    return fn


def apply(run) -> None:
    path = _path(run.recipe, run.model)
    if path is None:
        return
    from zeroshot.motion import field_from_recipe
    from zeroshot.techniques.controlnet import residuals_on
    from zeroshot.trained import flow_adapter

    recipe, model = run.recipe, run.model
    header = check_inputs(model, recipe)
    try:
        adapter = flow_adapter.load(path, model.unet, device=model.device, dtype=model.dtype)
    except ValueError as exc:
        raise RecipeError(f"animatediff.flow_adapter: {exc}") from None
    if header["config"]["block_out_channels"] != [int(c) for c in model.unet.config.block_out_channels]:
        raise RecipeError(f"animatediff.flow_adapter: {path} does not fit this model's UNet")
    f, height, width = recipe.num_frames, recipe.height, recipe.width
    grid = (height // model.vae_scale_factor, width // model.vae_scale_factor)
    flow_px = field_from_recipe(recipe.motion, f, height, width).flow(f, height, width, grid)  # (f, 2, h, w)
    features = flow_adapter.flow_features(flow_px, height, width).to(device=model.device, dtype=model.dtype)
    run.extras["flow_adapter"] = adapter
    run.encode = flow_encode(run.encode, features)
    if adapter.injection == "attention":
        try:
            injection = flow_adapter.AttentionInjection(model.unet, adapter)
        except ValueError as exc:
            raise RecipeError(f"animatediff.flow_adapter: {path}: {exc}") from None
        run.stack.callback(injection.remove)
        run.stack.enter_context(residuals_on(model, attention_fn(injection, model.residuals_fn)))
    else:
        run.stack.enter_context(residuals_on(model, residuals_fn(adapter, model.residuals_fn)))
