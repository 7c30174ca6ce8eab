"""`Run`: the state of one `generate()` call that techniques wire themselves into."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from zeroshot.families.base import Cond, ModelFn, inputs_for
from zeroshot.sampling import denoise, init_noise_sigma, make_scheduler

#: (initial latents at the first timestep (b, c, f, h, w), number of steps) -> clean latents
SampleFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Run:
    """What a technique may read and change while `generate()` prepares sampling.

    model: the video model (a technique may replace it, e.g. animatediff);
    model_fn: `(x, t, cond) -> prediction`, guided; techniques wrap it;
    sample: `(latents, num_steps) -> x0`; plain denoising unless a technique swaps it;
    stack: scoped hooks are entered here and undone when `generate()` leaves;
    renoise_noise: T2V-Zero's re-noising noise (drawn by its technique unless given);
    timesteps: the schedule of the pass that is running (for step-gated hooks);
    before_final: `fn(denoise_rest) -> (x_T -> x_T)` for T2V-Zero's last pass (smoothing).
    """

    model: Any
    recipe: Any
    prompt: str
    stack: contextlib.ExitStack
    generator: torch.Generator
    shape: tuple[int, ...] = ()  # the latents' (b, c, f, h, w)
    noise_fn: Callable | None = None
    callback: Callable | None = None
    progress: Any = None
    renoise_noise: torch.Tensor | None = None
    cond: Cond | None = None
    model_fn: ModelFn | None = None
    sample: SampleFn | None = None
    timesteps: torch.Tensor | None = None
    before_final: Callable | None = None
    scheduler: Any = None
    encode: Callable | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.reset_model_fn()
        self.sample = self.plain_sample
        self.encode = self.model.encode  # (prompts, negative) -> Cond; prompt travel replaces it

    def step(self, t) -> tuple[int, int]:
        """(index of timestep `t` in the running schedule, the schedule's length), for hooks
        gated by step; (0, 1) outside a schedule, and a `t` not in it reads as step 0."""
        steps = self.timesteps
        if steps is None:
            return 0, 1
        hit = (steps == t).nonzero()
        return (int(hit[0]) if len(hit) else 0), len(steps)

    def encode_prompt(self, num_videos: int) -> Cond:
        """The run's conditioning: the prompt (and its negative when guided) for every video,
        plus what the family's `encode` names (an input image or video, the recipe, the generator)."""
        r = self.recipe
        negative = [r.negative_prompt] * num_videos if r.guidance_scale > 1.0 else None
        extra = inputs_for(self.encode, image=r.image, video=r.video, recipe=r, generator=self.generator)
        self.cond = self.encode([self.prompt] * num_videos, negative, **extra)
        return self.cond

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames `(b, f, 3, H, W)` in [0, 1] of clean latents, by the run's model."""
        return self.model.decode(latents, **inputs_for(self.model.decode, recipe=self.recipe))

    def reset_model_fn(self) -> None:
        """The model's own guided model function (after a technique replaced the model)."""
        self.model_fn = self.model.model_fn(self.recipe.guidance_scale)

    def eps_fn(self) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """The model function bound to this run's conditioning, as `denoise` takes it; a pass
        over the first frames only (T2V-Zero's frame 0) gets their part of per-frame conditioning."""

        def fn(x, t):
            f = x.shape[2]
            cond = self.cond if not self.cond.frame_keys or f == self.recipe.num_frames else self.cond.frames(0, f)
            return self.model_fn(x, t, cond)

        return fn

    def new_scheduler(self, num_steps: int):
        """A fresh scheduler of the recipe's kind with `num_steps` timesteps; it becomes the
        running schedule (`self.timesteps`)."""
        scheduler = make_scheduler(self.recipe.scheduler, self.model.scheduler)
        scheduler.set_timesteps(num_steps, device=self.model.device)
        self.scheduler, self.timesteps = scheduler, scheduler.timesteps
        return scheduler

    def step_kwargs(self, *, callback: bool = True) -> dict:
        return dict(
            eta=self.recipe.eta,
            generator=self.generator,
            noise_fn=self.noise_fn,
            callback=self.callback if callback else None,
            progress=self.progress,
        )

    def plain_sample(self, latents: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Denoise every frame together over the whole schedule."""
        scheduler = self.new_scheduler(num_steps)
        x_T = latents * init_noise_sigma(scheduler)
        return denoise(self.eps_fn(), scheduler, x_T, scheduler.timesteps, **self.step_kwargs())
