"""AnimateDiff motion modules on an image model (`recipe.animatediff`).

On an `sd` model the recipe's adapter (or the model's default one) is inflated into a new
`UNetMotionModel` and the run's model becomes an `animatediff` model; an `animatediff`
folder animates with its own modules. Videos longer than the module's positional table run
its temporal layers on FreeNoise context windows (`trained.animatediff.context_windows`).

A module file of another zoo design (`trained.zoo`; the file records its design and base)
inflates into a `ZooUNet` the same way; those have no positional table and need no windows.
"""

from __future__ import annotations

import contextlib

from zeroshot.recipe import RecipeError

FAMILIES = ("sd", "animatediff")


def check(recipe, family) -> None:
    ad = recipe.animatediff
    if ad is None:
        return
    if ad.context_length is not None and ad.context_length < 1:
        raise RecipeError(f"animatediff.context_length must be >= 1, got {ad.context_length}")
    if ad.context_stride < 1:
        raise RecipeError(f"animatediff.context_stride must be >= 1, got {ad.context_stride}")
    if recipe.cross_frame is not None:
        raise RecipeError("cross_frame cannot be combined with animatediff (its temporal layers attend across frames)")
    if family.family not in FAMILIES:
        raise RecipeError(
            f"animatediff: motion modules apply to sd models (or an animatediff folder), not to {family.family} models"
        )
    if family.family == "animatediff" and ad.adapter is not None:
        raise RecipeError("animatediff.adapter: an animatediff model carries its own motion modules; leave it unset")
    if ad.motion_free_scale is not None and ad.motion_free_scale < 0:
        raise RecipeError(f"animatediff.motion_free_scale must be >= 0, got {ad.motion_free_scale}")


def motion_free_guided(model, guidance_scale: float, motion_scale: float):
    """GenTron's motion-free guidance (Chen et al., arXiv 2312.04557, Eq. 3) as a model
    function: with the temporal layers off (`trained.animatediff.motion_off`: the frozen image
    model) the negative and positive predictions, with them on the positive one;
    `off_neg + s_T (off_pos - off_neg) + s_M (on_pos - off_pos)`, s_T the recipe's guidance
    scale (per frame where the conditioning carries one), s_M `motion_scale`. Without a
    negative (guidance <= 1): `off_pos + s_M (on_pos - off_pos)`. Three network calls' worth
    of batch where plain guidance takes two."""
    import torch

    from zeroshot.families.base import _frame_scale
    from zeroshot.trained.animatediff import motion_off

    def model_fn(x, t, cond):
        with motion_off(model.unet):
            if cond.guided:
                neg_off, pos_off = model.forward(torch.cat([x, x]), t, cond.batched()).chunk(2)
            else:
                pos_off = model.forward(x, t, cond.positive)
        pos_on = model.forward(x, t, cond.positive)
        out = pos_off + motion_scale * (pos_on - pos_off)
        if cond.guided:
            scale = _frame_scale(guidance_scale if cond.guidance is None else cond.guidance, x.shape[2], pos_off)
            out = out + (scale - 1) * (pos_off - neg_off)
        return out

    return model_fn


def check_module_file(model, path) -> dict:
    """The motion-module file's header (`trained.zoo.read_header`), checked against the base
    it goes onto, in one line and before any model work: `model` is a loaded model or a
    `ModelCard` (whose folder's unet/config.json is read)."""
    import json
    from pathlib import Path

    from zeroshot.trained import zoo

    unet = getattr(model, "unet", None)
    if unet is None and getattr(model, "path", None):
        config = Path(model.path) / "unet" / "config.json"
        unet = json.loads(config.read_text()) if config.is_file() else None
    try:
        return zoo.check_file(path, unet)
    except ValueError as exc:
        raise RecipeError(f"animatediff.adapter: {exc}") from None


def apply(run) -> None:
    ad = run.recipe.animatediff
    if ad is None:
        return
    from zeroshot.families import AnimateDiff
    from zeroshot.trained.animatediff import context_windows, load_motion_adapter, resolve_adapter_path

    model = run.model
    if not isinstance(model, AnimateDiff):
        path = resolve_adapter_path(model, ad.adapter)
        header = check_module_file(model, path)
        if header["design"] == "animatediff":
            adapter = load_motion_adapter(path, device=model.device, dtype=model.dtype)
            run.model = AnimateDiff.from_image_model(model, adapter)
        else:
            from zeroshot.trained import zoo
            from zeroshot.trained.zoo.family import ZooAnimateDiff

            if ad.context_length is not None:
                raise RecipeError(
                    f"animatediff.context_length: a {header['design']} module has no positional table to window over"
                )
            run.model = ZooAnimateDiff.from_zoo(model, zoo.load(path, model.unet, device=model.device, dtype=model.dtype))
        run.reset_model_fn()
        run.encode = run.model.encode
    if ad.motion_free_scale is not None:
        run.model_fn = motion_free_guided(run.model, run.recipe.guidance_scale, ad.motion_free_scale)
    motion_unet = run.model.unet
    max_len = run.model.max_frames
    if max_len is None:  # a zoo design: the temporal layers see every frame at once
        return
    length = max_len if ad.context_length is None else ad.context_length
    if not 1 <= length <= max_len:
        raise RecipeError(f"animatediff.context_length must be in [1, {max_len}], got {length}")
    inner = run.model_fn

    def model_fn(x, t, cond):
        long = x.shape[2] > length
        with context_windows(motion_unet, length, ad.context_stride) if long else contextlib.nullcontext():
            return inner(x, t, cond)

    run.model_fn = model_fn
