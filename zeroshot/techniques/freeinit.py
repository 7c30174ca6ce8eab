"""FreeInit (`recipe.freeinit`, zeroshot.methods.freeinit) around whatever sampler the run has."""

from __future__ import annotations

from zeroshot.recipe import RecipeError
from zeroshot.sampling import make_scheduler


def check(recipe, family) -> None:
    fi = recipe.freeinit
    if fi is None:
        return
    from zeroshot.methods.freeinit import FILTERS

    if getattr(family, "continuous_timesteps", False):
        raise RecipeError(
            f"freeinit: {family.family} models sample continuous noise levels; its re-noising needs "
            "a discrete schedule with alphas_cumprod"
        )
    if getattr(family, "zero_terminal_snr", False):
        raise RecipeError(
            f"freeinit: {family.family} schedules start at zero SNR, where the re-noised latent keeps nothing "
            "of the last result to re-initialise from"
        )
    if fi.iterations < 1:
        raise RecipeError(f"freeinit.iterations must be >= 1, got {fi.iterations}")
    if fi.filter not in FILTERS:
        raise RecipeError(f"freeinit.filter must be one of {', '.join(FILTERS)}, got {fi.filter!r}")
    if fi.d_s <= 0 or fi.d_t <= 0:
        raise RecipeError(f"freeinit.d_s and freeinit.d_t must be > 0, got {fi.d_s}, {fi.d_t}")


def apply(run) -> None:
    config = run.recipe.freeinit
    if config is None:
        return
    from zeroshot.methods.freeinit import freeinit

    ref = make_scheduler(run.recipe.scheduler, run.model.scheduler)
    if not hasattr(ref, "alphas_cumprod"):
        raise RecipeError(f"freeinit needs a scheduler with alphas_cumprod; {type(ref).__name__} has none")

    def first_timestep(num_steps: int) -> int:
        ref.set_timesteps(num_steps)
        return int(ref.timesteps[0])  # coarse-to-fine schedules start elsewhere

    inner = run.sample

    def sample(latents, num_steps):
        return freeinit(
            inner,
            latents,
            config=config,
            alphas_cumprod=ref.alphas_cumprod,
            timestep=first_timestep,
            num_inference_steps=num_steps,
            generator=run.generator,
            noise_fn=run.noise_fn,
        )

    run.sample = sample


def unet_calls(recipe, one_pass) -> int:
    """Network calls of the whole sampling, `one_pass(num_steps)` per iteration."""
    if recipe.freeinit is None:
        return one_pass(recipe.num_inference_steps)
    from zeroshot.methods.freeinit import step_counts

    return sum(one_pass(n) for n in step_counts(recipe.freeinit, recipe.num_inference_steps))
