"""DeepCache-style step caching (zeroshot.techniques.step_cache): interval 1 is the uncached
run exactly, deep blocks are skipped between full steps, chunks see the same cache, the
UNet is restored, refusals are one line."""

from dataclasses import replace

import pytest
import torch

from zeroshot.generate import generate
from zeroshot.recipe import Chunks, CrossFrame, Motion, Recipe, RecipeError, StepCache, validate
from zeroshot.techniques.step_cache import deep_modules, step_cache

RECIPE = Recipe(method="t2v-zero", num_frames=5, height=32, width=32, num_inference_steps=7, guidance_scale=3.0,
                cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))


def forwards(unet):
    return {name: "forward" in vars(m) for name, m in unet.named_modules()}


def test_interval_one_is_the_uncached_run_exactly(tiny_model):
    plain = generate(tiny_model, "a red cat", RECIPE, num_videos=2, progress=False)
    cached = generate(tiny_model, "a red cat", replace(RECIPE, step_cache=StepCache(interval=1)), num_videos=2,
                      progress=False)
    assert torch.equal(plain.latents, cached.latents)


def test_cached_steps_skip_the_deep_blocks_and_change_little(tiny_model):
    unet = tiny_model.unet
    before = forwards(unet)
    calls = []
    handle = unet.mid_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        plain = generate(tiny_model, "a red cat", RECIPE, progress=False).latents
        n_plain = len(calls)
        calls.clear()
        cached = generate(tiny_model, "a red cat", replace(RECIPE, step_cache=StepCache(interval=3)),
                          progress=False).latents
    finally:
        handle.remove()
    # the hook on the mid block fires on every call (the patched forward runs inside it);
    # the mid block's own compute is counted by the cache state instead
    assert len(calls) == n_plain
    assert forwards(unet) == before  # every patched forward removed
    diff = (plain - cached).abs().max()
    assert 0 < diff < 0.5 * plain.abs().max()


def test_full_and_cached_calls_follow_the_interval(tiny_model):
    unet = tiny_model.unet
    x = torch.randn(2, 4, 8, 8)
    e = torch.randn(2, 77, 32)
    with torch.no_grad():
        plain = [unet(x, 500 - 50 * i, encoder_hidden_states=e).sample for i in range(7)]
        with step_cache(unet, interval=3) as state:
            outs = []
            for index in range(7):
                state.begin_step(index)
                outs.append(unet(x, 500 - 50 * index, encoder_hidden_states=e).sample)
            assert (state.full_calls, state.cached_calls) == (3, 4)  # steps 0, 3, 6 full
            state.begin_step(0)  # the schedule starts again (another pass): full
            again = unet(x, 500, encoder_hidden_states=e).sample
            state.begin_step(1)
            unet(x[:1], 450, encoder_hidden_states=e[:1])  # another shape than the kept one: full
            assert (state.full_calls, state.cached_calls) == (5, 4)
            state.begin_step(2)
            same = unet(x, 500, encoder_hidden_states=e).sample  # cached, at the kept step's input
    for i in (0, 3, 6):
        assert torch.equal(outs[i], plain[i])  # full steps are the plain UNet
    for i in (1, 2, 4, 5):
        assert not torch.equal(outs[i], plain[i])  # cached steps reuse the deep feature
    assert torch.equal(again, plain[0]) and torch.equal(same, plain[0])


def test_order_one_forecasts_the_kept_feature_from_the_last_two_full_steps(tiny_model):
    """StepCache(order=1): a cached step k after full steps k0 < k1 of the same call gets
    F(k1) + (k - k1) / (k1 - k0) * (F(k1) - F(k0)) as the kept feature; with one full step
    behind it (or after the schedule starts again, or a new input shape) it reuses F(k1)."""
    unet = tiny_model.unet
    _, kept_name = deep_modules(unet, 0)
    kept_module = unet.get_submodule(kept_name)
    seen = []
    handle = kept_module.register_forward_hook(lambda module, args, out: seen.append(out))
    x = torch.randn(2, 4, 8, 8)
    e = torch.randn(2, 77, 32)
    try:
        with torch.no_grad(), step_cache(unet, interval=2, order=1) as state:
            for index in range(6):  # full 0, 2, 4; cached 1, 3, 5
                state.begin_step(index)
                unet(x + 0.1 * index, 500 - 50 * index, encoder_hidden_states=e)
            state.begin_step(0)  # a new pass over the schedule: no step behind it
            unet(x, 500, encoder_hidden_states=e)
            state.begin_step(1)
            unet(x, 450, encoder_hidden_states=e)
    finally:
        handle.remove()
    f0, c1, f2, c3, f4, c5, again, c_again = seen
    assert torch.equal(c1, f0)  # one full step behind: reused
    torch.testing.assert_close(c3, f2 + 0.5 * (f2 - f0))
    torch.testing.assert_close(c5, f4 + 0.5 * (f4 - f2))
    assert not torch.equal(c3, f2)
    assert torch.equal(c_again, again)
    # order 0 (DeepCache) reuses the last full step's feature as before
    seen.clear()
    handle = kept_module.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        with torch.no_grad(), step_cache(unet, interval=2) as state:
            for index in range(4):
                state.begin_step(index)
                unet(x + 0.1 * index, 500 - 50 * index, encoder_hidden_states=e)
    finally:
        handle.remove()
    assert torch.equal(seen[3], seen[2])
    with pytest.raises(RecipeError, match="order must be 0"):
        validate(replace(RECIPE, step_cache=StepCache(order=2)))
    # in a render it runs and stays close to the uncached video
    plain = generate(tiny_model, "a red cat", RECIPE, progress=False).latents
    forecast = generate(tiny_model, "a red cat", replace(RECIPE, step_cache=StepCache(interval=2, order=1)),
                        progress=False).latents
    assert 0 < (plain - forecast).abs().max() < 0.5 * plain.abs().max()


def test_start_keeps_the_first_steps_whole(tiny_model):
    """StepCache(start=s): the first ceil(s x steps) steps run the whole UNet, then the interval
    applies; so caching only the later steps leaves the early latents exactly uncached."""
    unet = tiny_model.unet
    x = torch.randn(2, 4, 8, 8)
    e = torch.randn(2, 77, 32)
    with torch.no_grad(), step_cache(unet, interval=3) as state:
        state.full_until = 4
        for index in range(7):
            state.begin_step(index)
            unet(x, 500 - 50 * index, encoder_hidden_states=e)
        assert (state.full_calls, state.cached_calls) == (5, 2)  # 0-3 whole, 4-5 cached, 6 whole

    seen = {}

    def keep(i, t, latents):
        seen.setdefault(len(seen), latents.clone())

    recipe = replace(RECIPE, method="t2i", motion=None, cross_frame=None)
    plain, late = [], []
    generate(tiny_model, "a red cat", recipe, callback=lambda i, t, x: plain.append(x.clone()), progress=False)
    generate(tiny_model, "a red cat", replace(recipe, step_cache=StepCache(interval=2, start=0.5)),
             callback=lambda i, t, x: late.append(x.clone()), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain[:4], late[:4]))  # ceil(0.5 x 7) = 4 whole steps
    assert not torch.equal(plain[-1], late[-1])
    with pytest.raises(RecipeError, match=r"start must be in \[0, 1\)"):
        validate(replace(RECIPE, step_cache=StepCache(start=1.0)))


def test_chunks_share_the_cache(tiny_model):
    cached = replace(RECIPE, num_frames=7, step_cache=StepCache(interval=2))
    whole = generate(tiny_model, "a red cat", cached, num_videos=2, progress=False).frames
    chunked = generate(tiny_model, "a red cat", replace(cached, chunks=Chunks(3)), num_videos=2,
                       progress=False).frames
    assert (whole - chunked).abs().max() <= 1e-5


def test_restored_after_an_error(tiny_model):
    unet = tiny_model.unet
    before = forwards(unet)
    processors = dict(unet.attn_processors)

    def boom(i, t, latents):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate(tiny_model, "a red cat", replace(RECIPE, step_cache=StepCache(interval=2)), callback=boom,
                 progress=False)
    assert forwards(unet) == before and dict(unet.attn_processors) == processors
    assert not unet._forward_pre_hooks


def test_refusals_are_one_line(tiny_model):
    from zeroshot.families import FAMILY_CLASSES

    with pytest.raises(RecipeError, match="interval must be >= 1"):
        validate(replace(RECIPE, step_cache=StepCache(interval=0)))
    with pytest.raises(RecipeError, match="transformer"):
        validate(Recipe(method="video", step_cache=StepCache()), family=FAMILY_CLASSES["wan"])
    with pytest.raises(RecipeError, match=r"branch must be in \[0, 0\]"):
        deep_modules(tiny_model.unet, 1)
