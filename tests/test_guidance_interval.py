"""Guidance on part of the schedule (zeroshot.techniques.guidance_interval): the whole schedule
is plain guidance exactly, an empty interval is the unguided run exactly, the steps outside
run the conditional branch alone (half the batch), it composes with T2V-Zero, chunks, step
caching and smoothing, refusals are one line."""

from dataclasses import replace

import pytest
import torch

from zeroshot.generate import generate
from zeroshot.recipe import (
    Chunks,
    CrossFrame,
    GuidanceInterval,
    Motion,
    Recipe,
    RecipeError,
    Smoothing,
    StepCache,
    validate,
)
from zeroshot.techniques.guidance_interval import guided_steps

RECIPE = Recipe(method="t2v-zero", num_frames=5, height=32, width=32, num_inference_steps=6, guidance_scale=3.0,
                cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))


def test_guided_steps():
    assert guided_steps(10, 0.0, 1.0) == range(0, 10)
    assert list(guided_steps(10, 0.0, 0.5)) == [0, 1, 2, 3, 4]
    assert list(guided_steps(10, 0.2, 0.6)) == [2, 3, 4, 5]
    assert list(guided_steps(7, 0.0, 0.5)) == [0, 1, 2, 3]
    assert list(guided_steps(10, 0.3, 0.3)) == []


def test_the_whole_schedule_is_plain_guidance_and_an_empty_one_no_guidance(tiny_model):
    plain = generate(tiny_model, "a red cat", RECIPE, num_videos=2, seed=3, progress=False).latents
    whole = generate(tiny_model, "a red cat", replace(RECIPE, guidance_interval=GuidanceInterval(0.0, 1.0)),
                     num_videos=2, seed=3, progress=False).latents
    assert torch.equal(plain, whole)
    unguided = generate(tiny_model, "a red cat", replace(RECIPE, guidance_scale=1.0), seed=3, progress=False).latents
    empty = generate(tiny_model, "a red cat", replace(RECIPE, guidance_interval=GuidanceInterval(0.5, 0.5)), seed=3,
                     progress=False).latents
    assert torch.allclose(unguided, empty, atol=1e-6)
    assert float((unguided - plain[:1]).abs().max()) > 1e-3


def test_steps_outside_run_half_the_batch(tiny_model):
    batches = []
    handle = tiny_model.unet.register_forward_pre_hook(
        lambda m, args, kwargs: batches.append((args[0] if args else kwargs["sample"]).shape[0]), with_kwargs=True)
    try:
        plain = generate(tiny_model, "a red cat", RECIPE, seed=1, progress=False).latents
        n_plain = list(batches)
        batches.clear()
        half = generate(tiny_model, "a red cat", replace(RECIPE, guidance_interval=GuidanceInterval(0.0, 0.5)), seed=1,
                        progress=False).latents
    finally:
        handle.remove()
    assert len(batches) == len(n_plain)  # the same calls ...
    assert sum(batches) < sum(n_plain)  # ... the late ones on the conditional half only
    assert set(batches) - set(n_plain) == {max(n_plain) // 2}  # all frames, conditional half
    assert float((half - plain).abs().max()) > 1e-4


@pytest.mark.parametrize("extra", [
    {"chunks": Chunks(2)},
    {"step_cache": StepCache(interval=2)},
    {"smoothing": Smoothing()},
], ids=["chunks", "step_cache", "smoothing"])
def test_composes(tiny_model, extra):
    recipe = replace(RECIPE, **extra)
    out = generate(tiny_model, "a red cat", replace(recipe, guidance_interval=GuidanceInterval(0.0, 0.5)),
                   num_videos=2, seed=2, progress=False)
    assert out.latents.shape[0] == 2 and torch.isfinite(out.latents).all()
    if "chunks" in extra:  # chunking stays exact under the interval
        whole = generate(tiny_model, "a red cat", replace(RECIPE, guidance_interval=GuidanceInterval(0.0, 0.5)),
                         num_videos=2, seed=2, progress=False)
        assert torch.allclose(out.latents, whole.latents, atol=1e-5)


def test_refusals():
    for bad in (GuidanceInterval(0.6, 0.4), GuidanceInterval(-0.1, 0.5), GuidanceInterval(0.0, 1.5)):
        with pytest.raises(RecipeError, match="guidance_interval"):
            validate(replace(RECIPE, guidance_interval=bad))
