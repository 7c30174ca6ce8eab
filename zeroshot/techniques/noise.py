"""The noise prior (`recipe.noise`): its parameters, and per-step noise of stochastic steps."""

from __future__ import annotations

from zeroshot import noise as priors


def check(recipe, family) -> None:
    """The prior's parameters; its frames are latent frames (fewer where the family compresses time)."""
    latent_frames = getattr(family, "latent_frames", None)
    frames = recipe.num_frames  # None: not yet resolved against the model (checked again then)
    priors.check(recipe.noise, latent_frames(frames) if latent_frames and frames is not None else frames)


def apply(run) -> None:
    """Per-step noise of stochastic samplers comes from the prior (`noise.per_step`)."""
    m = run.model
    run.noise_fn = priors.step_noise_fn(run.recipe.noise, run.generator, device=m.device, dtype=m.dtype)
