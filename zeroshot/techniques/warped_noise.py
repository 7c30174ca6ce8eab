"""Flow-warped noise (`noise.prior = "flow-warped"`, zeroshot.noise.flow_warped): the noise
follows the recipe's motion request, on every family.

The motion request (`recipe.motion`: a pan, camera, keyframed path, trajectories or a
reference video) is evaluated at the output-pixel grid (one sub-cell per pixel of each latent
cell) and frame 0 of the initial noise is carried along it. It replaces

- the initial noise (frame 0 of the drawn or given noise is the one carried), so a technique
  that samples all frames together (t2i with cross-frame attention, AnimateDiff, a video
  model) starts from noise that moves as asked;
- T2V-Zero's re-noising noise (T' -> T), when its dynamics run (`motion.dynamics`, the
  default), so the noise added to the warped frames moves with them;
- the per-step noise of stochastic samplers (`noise.per_step`).

`motion.dynamics = false` keeps the motion request for the noise only and skips T2V-Zero's
warp. For a network whose latent frames are fewer than the video's frames (time-compressed
latents), latent frame j follows video frame c j for a family with causal compression c
(`temporal_compression`: CogVideoX's latent frame j ends at frame 4j), else
round(j (F - 1) / (f - 1)).

It wraps the run's sampler last (outermost), so FreeInit and T2V-Zero see the warped noise
as their initial noise.
"""

from __future__ import annotations

import torch

from zeroshot import noise as priors
from zeroshot.recipe import RecipeError

PRIOR = "flow-warped"


def check(recipe, family) -> None:
    from zeroshot.motion import check_request

    m = recipe.motion
    if m is not None:
        check_request(m)
    if recipe.noise.prior != PRIOR:
        flow_adapter = recipe.animatediff is not None and recipe.animatediff.flow_adapter is not None
        if m is not None and not m.dynamics and not flow_adapter:
            raise RecipeError(
                "motion.dynamics=false leaves the motion request unused; set noise.prior=flow-warped "
                "or animatediff.flow_adapter (or motion.dynamics=true for T2V-Zero's warp)"
            )
        return
    if m is None:
        raise RecipeError(
            "noise.prior=flow-warped follows the motion request; give one (motion.translate, motion.path, "
            "motion.trajectories or motion.from_video)"
        )
    if not m.dynamics and recipe.smoothing is not None:
        raise RecipeError("smoothing runs inside T2V-Zero's dynamics; it needs motion.dynamics=true")


def latent_frame_sources(num_latent_frames: int, num_frames: int, compression: int | None = None) -> list[int]:
    """The video frame each latent frame follows: all of them when the counts agree; with a
    causal time compression c (latent frame j ends at video frame c j), frame min(c j, F - 1);
    otherwise frames spread evenly, round(j (F - 1) / (f - 1))."""
    if num_latent_frames == num_frames or num_latent_frames == 1:
        return list(range(num_latent_frames))
    if compression:
        return [min(compression * j, num_frames - 1) for j in range(num_latent_frames)]
    return [round(j * (num_frames - 1) / (num_latent_frames - 1)) for j in range(num_latent_frames)]


def latent_flow(recipe, latent_shape, compression: int | None = None) -> tuple[torch.Tensor, tuple[float, float]]:
    """The motion request's backward flow for every latent frame at the output-pixel grid,
    `(f, 2, H, W)` in output px, and the output px per latent cell (sy, sx)."""
    from zeroshot.motion import field_from_recipe

    H, W, F = recipe.height, recipe.width, recipe.num_frames
    f, h, w = latent_shape[-3:]
    field = field_from_recipe(recipe.motion, F, H, W)
    flow = field.flow(F, H, W, grid=(H, W))
    return flow[latent_frame_sources(f, F, compression)], (H / h, W / w)


def apply(run) -> None:
    recipe = run.recipe
    if recipe.noise.prior != PRIOR:
        return
    model = run.model
    shape = model.latent_shape(1, recipe.num_frames, recipe.height, recipe.width)
    flow, scale = latent_flow(recipe, shape, getattr(model, "temporal_compression", None))
    degradation = recipe.noise.degradation or 0.0

    def draw(shape, base=None) -> torch.Tensor:
        f = shape[2]
        if f > flow.shape[0]:
            raise ValueError(f"flow-warped noise for {f} frames, but the motion request has {flow.shape[0]}")
        return priors.flow_warped(
            shape, run.generator, flow_px=flow[:f], scale=scale, degradation=degradation, base=base,
            device=model.device, dtype=model.dtype,
        )

    if recipe.noise.per_step:
        run.noise_fn = draw
    if run.renoise_noise is not None and recipe.motion.dynamics:
        run.renoise_noise = draw(run.renoise_noise.shape, base=run.renoise_noise[:, :, 0])
    inner = run.sample

    def sample(latents: torch.Tensor, num_steps: int) -> torch.Tensor:
        return inner(draw(latents.shape, base=latents[:, :, 0]), num_steps)

    run.sample = sample
