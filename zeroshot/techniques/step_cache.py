"""DeepCache-style step caching (`recipe.step_cache`; Ma et al., "DeepCache: Accelerating
Diffusion Models for Free", CVPR 2024, arXiv 2312.00858).

A UNet's high-level features change slowly from one denoising step to the next. At a full
step the whole UNet runs and the output of its deep part is kept: the feature that enters
the up blocks of the `branch` shallowest resolution levels (the output of up block
`len(up_blocks) - 2 - branch`). At the `interval - 1` steps after it only the shallow
levels run: `conv_in`, down blocks `0..branch` (which make the skip connections those up
blocks take), then up blocks from `len(up_blocks) - 1 - branch` on, fed with the kept feature.
The deep down blocks, the mid block and the deep up blocks return placeholders of their
outputs' shapes (zero-stride tensors, no compute) so the UNet's own forward runs unchanged.

Our own implementation over the UNet's modules (scoped `forward` patches, restored on
leaving), at block granularity (the paper also splits inside blocks). The cache is kept per
network call of a step (chunks, classifier-free guidance batches), and a call whose input
shape differs from the kept one (T2V-Zero's frame-0 pass, then all frames) runs full.
The kept features grow with the video's frames: with chunks, memory is no longer flat.

`order=1` forecasts the kept feature at a cached step instead of reusing it: from the last
two full steps k0 < k1 of the same call (same input shape, same pass over the schedule),
F(k) = F(k1) + (k - k1) / (k1 - k0) * (F(k1) - F(k0)) — the first-order Taylor forecast of
TaylorSeer (Liu et al., "From Reusing to Forecasting", ICCV 2025, arXiv 2503.06923), in the
schedule index. Until a call has two full steps behind it, it reuses (order 0). It keeps one
more deep feature per call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from zeroshot.recipe import RecipeError


@dataclass
class CacheState:
    """What the patched modules read: whether the running call is full, and per call of a step
    (`slot`) the input shape, the kept deep feature and the placeholders' shapes."""

    interval: int = 1
    order: int = 0
    full_until: int = 0
    index: int = 0
    full_step: bool = True
    full_call: bool = True
    slot: int = -1
    last_full: int | None = None
    slots: dict[int, dict] = field(default_factory=dict)
    full_calls: int = 0
    cached_calls: int = 0

    def begin_step(self, index: int) -> None:
        """A new denoising step at schedule index `index`: full before `full_until`, then every
        `interval` steps from the last full one (and whenever the schedule starts again)."""
        last = self.last_full
        self.full_step = (last is None or index <= last or index - last >= self.interval
                          or index < self.full_until)
        if self.full_step:
            self.last_full = index
        self.index = index
        self.slot = -1

    def begin_call(self, sample: torch.Tensor) -> None:
        """A UNet call of the running step (its input `sample`)."""
        self.slot += 1
        entry = self.slots.get(self.slot)
        self.full_call = self.full_step or entry is None or entry["shape"] != tuple(sample.shape)
        if self.full_call:
            shape = tuple(sample.shape)
            earlier = (entry if self.order >= 1 and entry is not None and entry["shape"] == shape
                       and entry["index"] < self.index else None)  # order 0 keeps no step before
            if earlier is not None:
                earlier["previous"] = None  # keep one step back, not a chain
            self.slots[self.slot] = {"shape": shape, "index": self.index, "previous": earlier}
            self.full_calls += 1
        else:
            self.cached_calls += 1

    @property
    def entry(self) -> dict:
        return self.slots[self.slot]

    def replay(self, key: str):
        """The kept output `key` for the running cached call: as kept (order 0), or forecast
        from the last two full steps (order 1, when there are two and it is a tensor)."""
        entry = self.entry
        kept, earlier = entry[key], entry["previous"]
        if self.order < 1 or earlier is None or not isinstance(kept, torch.Tensor):
            return kept
        k0, k1 = earlier["index"], entry["index"]
        return torch.lerp(earlier[key], kept, 1.0 + (self.index - k1) / (k1 - k0))


def _placeholder(out):
    """Zero-stride zeros of each tensor's shape in `out` (tensors, tuples and lists of them)."""
    if isinstance(out, torch.Tensor):
        return torch.zeros((), dtype=out.dtype, device=out.device).expand(out.shape)
    if isinstance(out, (tuple, list)):
        return type(out)(_placeholder(o) for o in out)
    return out


def _patch(module, key: str, state: CacheState, *, keep: bool):
    """A `forward` for `module` that runs it on full calls (keeping its output when `keep`, else
    a placeholder of it) and replays what was kept on cached calls."""
    original = module.forward

    def forward(*args, **kwargs):
        if state.full_call:
            out = original(*args, **kwargs)
            state.entry[key] = out if keep else _placeholder(out)
            return out
        return state.replay(key) if keep else state.entry[key]

    return forward


def deep_modules(unet, branch: int) -> tuple[list[tuple[str, torch.nn.Module]], str]:
    """The modules skipped on cached calls (name, module) and the name of the one whose output
    is kept: down blocks after `branch`, the mid block, up blocks before the last `branch + 1`."""
    down, up = list(unet.down_blocks), list(unet.up_blocks)
    if not 0 <= branch <= len(up) - 2:
        raise RecipeError(f"step_cache.branch must be in [0, {len(up) - 2}] for this UNet's {len(up)} levels, got {branch}")
    skipped = [(f"down_blocks.{i}", down[i]) for i in range(branch + 1, len(down))]
    if getattr(unet, "mid_block", None) is not None:
        skipped.append(("mid_block", unet.mid_block))
    kept = len(up) - 2 - branch
    skipped += [(f"up_blocks.{i}", up[i]) for i in range(kept + 1)]
    return skipped, f"up_blocks.{kept}"


@contextlib.contextmanager
def step_cache(unet, *, interval: int, branch: int = 0, order: int = 0) -> Iterator[CacheState]:
    """Install step caching on a UNet with `down_blocks`, `mid_block` and `up_blocks` for the
    block; yields the `CacheState` (call `begin_step(index)` before each step's calls). The
    modules' own `forward` is restored on leaving, even on error."""
    state = CacheState(interval=interval, order=order)
    skipped, kept = deep_modules(unet, branch)
    patched = []
    handle = unet.register_forward_pre_hook(
        lambda module, args, kwargs: state.begin_call(args[0] if args else kwargs["sample"]), with_kwargs=True
    )
    try:
        for name, module in skipped:
            had = "forward" in vars(module)
            previous = vars(module).get("forward")
            module.forward = _patch(module, name, state, keep=name == kept)
            patched.append((module, had, previous))
        yield state
    finally:
        handle.remove()
        for module, had, previous in reversed(patched):
            if had:
                module.forward = previous
            else:
                del module.forward
        state.slots.clear()


def check(recipe, family) -> None:
    c = recipe.step_cache
    if c is None:
        return
    if c.interval < 1:
        raise RecipeError(f"step_cache.interval must be >= 1, got {c.interval}")
    if c.branch < 0:
        raise RecipeError(f"step_cache.branch must be >= 0, got {c.branch}")
    if not 0.0 <= c.start < 1.0:
        raise RecipeError(f"step_cache.start must be in [0, 1), got {c.start}")
    if c.order not in (0, 1):
        raise RecipeError(f"step_cache.order must be 0 (reuse) or 1 (forecast from the last two full steps), got {c.order}")
    if "unet" not in family.component_names():
        raise RecipeError(
            f"step_cache: {family.family} models denoise with a transformer; step caching reuses a UNet's deep levels"
        )


def apply(run) -> None:
    c = run.recipe.step_cache
    if c is None:
        return
    unet = run.model.denoiser
    if not all(hasattr(unet, name) for name in ("down_blocks", "up_blocks")):
        raise RecipeError(f"step_cache: the {run.model.family} model's network has no down and up blocks")
    state = run.stack.enter_context(step_cache(unet, interval=c.interval, branch=c.branch, order=c.order))
    run.extras["step_cache"] = state
    inner = run.model_fn

    def model_fn(x, t, cond):
        index, num_steps = run.step(t)
        state.full_until = math.ceil(c.start * num_steps) if run.timesteps is not None else 0
        state.begin_step(index)
        return inner(x, t, cond)

    run.model_fn = model_fn
