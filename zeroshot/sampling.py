"""Sampling helpers over any model callable (k-diffusion style).

`denoise` runs a diffusers scheduler over a slice of its timesteps with an `eps_fn`
(any function of `(latents, t) -> eps`); `renoise` is the exact DDPM forward jump between
two timesteps. Latents are `(b, c, f, h, w)`; schedulers work elementwise, so any shape
goes through.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Size], torch.Tensor]


#: Scheduler names a recipe takes -> diffusers class; "auto" means the model's own.
SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
SCHEDULERS = ("auto",) + tuple(SCHEDULER_CLASSES)


def make_scheduler(name: str, scheduler):
    """A fresh scheduler of a named kind (`SCHEDULERS`) from a model's scheduler (or its config).

    "auto" is the model's own scheduler class with its own config.
    """
    import diffusers

    config = getattr(scheduler, "config", scheduler)
    if name == "auto":
        cls = type(scheduler) if hasattr(scheduler, "step") else getattr(diffusers, config["_class_name"])
    elif name in SCHEDULER_CLASSES:
        cls = getattr(diffusers, SCHEDULER_CLASSES[name])
    else:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    return cls.from_config(config)


@functools.lru_cache(maxsize=None)
def _step_params(cls) -> frozenset[str]:
    return frozenset(inspect.signature(cls.step).parameters)


def init_noise_sigma(scheduler) -> float:
    """The scale of the first step's noise (1 for flow-matching schedulers, which have none)."""
    return getattr(scheduler, "init_noise_sigma", 1.0)


def step(scheduler, eps, t, latents, *, eta=0.0, generator=None, noise_fn: NoiseFn | None = None):
    """One scheduler step; a stochastic step draws its noise from `noise_fn` if given.

    Schedulers that take `variance_noise` (DDIM, DPM-Solver) get it directly. Others (DDPM,
    Euler ancestral) draw it inside `step` from `generator`; their step is affine in that
    draw, `x' = m + s z` with one scalar `s`, so two draws on copies of the scheduler give
    `m` and `s`, and the result is `m + s * noise_fn(shape)`. Nothing global is patched.
    """
    params = _step_params(type(scheduler))
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if noise_fn is None:
        if "generator" in params:
            kwargs["generator"] = generator
        return scheduler.step(eps, t, latents, return_dict=False, **kwargs)[0]
    if "variance_noise" in params:
        stochastic = eta > 0 if "eta" in params else str(scheduler.config.get("algorithm_type", "")).startswith("sde")
        if stochastic:
            kwargs["variance_noise"] = noise_fn(latents.shape).to(latents.device, latents.dtype)
        return scheduler.step(eps, t, latents, return_dict=False, **kwargs)[0]
    if "generator" not in params:  # deterministic: no noise to give
        return scheduler.step(eps, t, latents, return_dict=False, **kwargs)[0]
    return _affine_noise_step(scheduler, eps, t, latents, noise_fn, kwargs)


def _affine_noise_step(scheduler, eps, t, latents, noise_fn: NoiseFn, kwargs) -> torch.Tensor:
    """`step` of a scheduler that draws `z` from a generator inside, with `z` replaced by
    `noise_fn`'s draw (see `step`)."""
    outs, draws = [], []
    for seed in (1, 2):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        draws.append(torch.randn(eps.shape, generator=gen, dtype=eps.dtype).double())  # as randn_tensor draws
        trial = copy.deepcopy(scheduler)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        outs.append(trial.step(eps, t, latents, generator=gen, return_dict=False, **kwargs)[0].double().cpu())
    dz = draws[0] - draws[1]
    s = float((outs[0] - outs[1]).flatten() @ dz.flatten() / (dz.flatten() @ dz.flatten()))
    mean = outs[0] - s * draws[0]
    # advance the real scheduler's own state (step index, multistep memory) exactly once
    scheduler.step(eps, t, latents, generator=torch.Generator(device="cpu").manual_seed(1), return_dict=False, **kwargs)
    noise = noise_fn(latents.shape).to(device="cpu", dtype=torch.float64)
    return (mean + s * noise).to(device=latents.device, dtype=latents.dtype)


def _begin_index(scheduler, first_t) -> int:
    matches = (scheduler.timesteps == first_t).nonzero()
    if len(matches) == 0:
        raise ValueError(f"timestep {int(first_t)} is not in the scheduler's schedule")
    return int(matches[0])


def denoise(
    eps_fn: EpsFn,
    scheduler,
    latents: torch.Tensor,
    timesteps,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise_fn: NoiseFn | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress=None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise `latents` over `timesteps` (a contiguous slice of `scheduler.timesteps`).

    The scheduler must have had `set_timesteps` called; it is not modified (a copy runs,
    so stateful multistep schedulers can restart at any slice). `callback(i, t, latents)`
    runs after every step with `i` the index into the full schedule. `after_step(i, latents)`
    returns the latents the next step starts from (before the callback sees them), e.g. with a
    frame replaced (T2V-Zero from an image).
    """
    if len(timesteps) == 0:
        return latents
    sched = copy.deepcopy(scheduler)
    begin = _begin_index(sched, timesteps[0])
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    for j, t in enumerate(timesteps):
        x_in = sched.scale_model_input(latents, t) if hasattr(sched, "scale_model_input") else latents
        eps = eps_fn(x_in, t)
        latents = step(sched, eps, t, latents, eta=eta, generator=generator, noise_fn=noise_fn)
        if after_step is not None:
            latents = after_step(begin + j, latents)
        if callback is not None:
            callback(begin + j, t, latents)
        if progress is not None:
            progress.update(1)
    return latents


def renoise(
    x: torch.Tensor,
    t_from,
    t_to,
    generator: torch.Generator | None = None,
    *,
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDPM forward jump from timestep `t_from` to a later (noisier) `t_to`.

    x_to = sqrt(a) x_from + sqrt(1 - a) eps with a = alphabar[t_to] / alphabar[t_from], the
    exact ratio (Text2Video-Zero's code multiplies `alphas[t_from:t_to]`, one index off).
    """
    t_from, t_to = int(t_from), int(t_to)
    if t_to < t_from:
        raise ValueError(f"renoise goes to a noisier timestep: t_to={t_to} < t_from={t_from}")
    ac = alphas_cumprod.to(torch.float64)
    a = float(ac[t_to] / ac[t_from])
    if noise is None:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (a**0.5) * x + ((1 - a) ** 0.5) * noise


def guided_eps_fn(unet, cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float) -> EpsFn:
    """An eps function `(latents (b, c, f, h, w), t) -> eps` for a 2-D UNet and text
    embeddings `(b, L, D)` (the `sd` family's network call and the one CFG of
    `zeroshot.families.base.guided`), for loops written by hand."""
    from zeroshot.families.base import Cond, guided
    from zeroshot.families.sd import unet2d_forward

    c = Cond({"prompt_embeds": cond}, None if uncond is None else {"prompt_embeds": uncond})
    fn = guided(functools.partial(unet2d_forward, unet), guidance_scale)
    return lambda x, t: fn(x, t, c)
