"""Techniques as separate parts: re-basing a recipe on another method, context windows
over a model function, refusals when a model offers no layer, explicit per-step noise."""

import contextlib
import copy
import types

import pytest
import torch

from zeroshot.families.base import Cond, guided
from zeroshot.recipe import CrossFrame, Recipe, RecipeError, apply_override, get_method
from zeroshot.techniques import cross_frame
from zeroshot.techniques.windows import window_ranges, windowed


def test_set_method_rebases_the_recipe():
    r = apply_override(apply_override(get_method("t2v-zero"), "num_frames", 12), "guidance_scale", 4.0)
    ad = apply_override(r, "method", "animatediff")
    assert ad.method == "animatediff" and ad.animatediff is not None
    assert ad.motion is None and ad.cross_frame is None  # the parts of the new method, not a relabel
    assert ad.num_frames == 12 and ad.guidance_scale == 4.0  # top-level settings kept
    with pytest.raises(RecipeError, match="unknown method"):
        apply_override(r, "method", "nope")


def test_windows_are_exact_for_a_per_frame_model_and_slice_the_conditioning():
    # a model whose frames are independent: windowing and fusing must give the same result
    def model_fn(x, t, cond):
        per_frame = cond.positive["image"]  # (b, f, c): a frame-wise conditioning tensor
        return 2 * x + per_frame[:, None, :, 0, None, None]

    x = torch.randn(1, 4, 11, 3, 3)
    cond = Cond({"image": torch.randn(1, 11, 1)}, frame_keys=("image",))
    full = model_fn(x, 0, cond)
    for length, stride in ((4, 2), (5, 3), (11, 4), (16, 4)):
        assert torch.allclose(windowed(model_fn, length, stride)(x, 0, cond), full, atol=1e-6)
    assert window_ranges(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (7, 11)]


def test_windows_fuse_overlaps_with_pyramid_weights():
    seen = []

    def model_fn(x, t, cond):
        seen.append(x.shape[2])
        return torch.full_like(x, float(len(seen)))  # window k predicts the constant k

    out = windowed(model_fn, 4, 2)(torch.zeros(1, 1, 6, 1, 1), 0, Cond({}))
    assert seen == [4, 4]  # windows (0, 4), (2, 6)
    # frames 2 and 3 are in both windows: pyramid weights (1, 2, 2, 1) -> frame 2: (2*1 + 1*2)/3
    assert torch.allclose(out[0, 0, :, 0, 0], torch.tensor([1, 1, 4 / 3, 5 / 3, 2, 2]))


def test_guidance_is_one_batched_call():
    calls = []

    def forward(x, t, tensors):
        calls.append(x.shape[0])
        return x * tensors["e"][:, None, None, None, None]

    cond = Cond({"e": torch.tensor([3.0])}, {"e": torch.tensor([1.0])})
    x = torch.ones(1, 1, 2, 1, 1)
    out = guided(forward, 5.0)(x, 0, cond)
    assert calls == [2] and torch.allclose(out, torch.full_like(x, 1 + 5 * (3 - 1)))
    assert torch.allclose(guided(forward, 5.0)(x, 0, Cond({"e": torch.tensor([3.0])})), 3 * x)


def test_cross_frame_refuses_a_model_with_no_per_frame_self_attention():
    model = types.SimpleNamespace(family="stub", attention_layers=lambda kind: [], denoiser=None)
    recipe = Recipe(method="t2v-zero", cross_frame=CrossFrame())
    run = types.SimpleNamespace(model=model, recipe=recipe, stack=contextlib.ExitStack())
    with pytest.raises(RecipeError, match="no per-frame spatial self-attention"):
        cross_frame.apply(run)


@pytest.mark.parametrize("name", ["DDPMScheduler", "EulerAncestralDiscreteScheduler"])
def test_explicit_noise_equals_the_schedulers_own_draw(name):
    """A scheduler that draws its noise inside `step` gets ours instead: with our noise set
    to exactly what its generator would draw, the step is the scheduler's own."""
    import diffusers

    from zeroshot.sampling import step

    sched = getattr(diffusers, name)(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched.set_timesteps(10)
    x = torch.randn(2, 4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    t = sched.timesteps[3]
    if hasattr(sched, "_init_step_index"):
        sched._init_step_index(t)
    other_sched = copy.deepcopy(sched)
    ref = copy.deepcopy(sched).step(eps, t, x, generator=torch.Generator().manual_seed(9), return_dict=False)[0]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    ours = step(sched, eps, t, x, generator=None, noise_fn=lambda shape: z)
    assert torch.allclose(ours, ref, atol=1e-5)
    other = step(other_sched, eps, t, x, noise_fn=lambda shape: -z)
    assert (other - ours).abs().max() > 1e-2  # the noise given is the noise used


def test_set_method_to_the_same_method_keeps_part_settings():
    r = apply_override(get_method("t2v-zero"), "cross_frame.mode", "sparse-causal")
    assert apply_override(r, "method", "t2v-zero") == r


def test_given_latents_must_fit_the_recipe(tiny_model):
    from zeroshot.generate import generate

    recipe = Recipe(method="t2i", num_frames=1, height=32, width=32, num_inference_steps=2)
    with pytest.raises(RecipeError, match=r"latents must have shape \(1, 4, 1, 8, 8\)"):
        generate(tiny_model, "a red cat", recipe, latents=torch.zeros(1, 4, 2, 8, 8), progress=False)


@pytest.mark.parametrize("mode,anchor", [("first", 0), ("first", 5), ("sparse-causal", 0)])
@pytest.mark.parametrize("size", [2, 3, 4])
def test_chunked_t2v_zero_equals_one_batch(tiny_model, mode, anchor, size):
    from dataclasses import replace

    from zeroshot.generate import generate
    from zeroshot.recipe import Chunks, Motion

    recipe = Recipe(method="t2v-zero", num_frames=7, height=32, width=32, num_inference_steps=4,
                    guidance_scale=3.0, cross_frame=CrossFrame(mode=mode, anchor=anchor),
                    motion=Motion(translate=(4.0, 0.0)))
    whole = generate(tiny_model, "a red cat", recipe, num_videos=2, progress=False).frames
    chunked = generate(tiny_model, "a red cat", replace(recipe, chunks=Chunks(size)), num_videos=2,
                       progress=False).frames
    assert (whole - chunked).abs().max() <= 1e-5
    assert (whole[:, 1:] - whole[:, :1]).abs().max() > 1e-3


def test_chunks_are_refused_where_they_would_change_the_video():
    from zeroshot.families import FAMILY_CLASSES
    from zeroshot.recipe import Chunks, validate

    with pytest.raises(RecipeError, match="use windows"):
        validate(Recipe(method="video", chunks=Chunks(4)), family=FAMILY_CLASSES["unet3d"])
    with pytest.raises(RecipeError, match="chunks.size must be >= 2"):
        validate(Recipe(method="t2i", chunks=Chunks(1)))


def test_prompt_travel_weights_interpolate_and_hold():
    from zeroshot.techniques.prompt_travel import weights

    w = weights([0, 4, 6], 8)
    assert torch.allclose(w.sum(1), torch.ones(8, dtype=w.dtype))
    assert w[2].tolist() == [0.5, 0.5, 0.0] and w[5].tolist() == [0.0, 0.5, 0.5] and w[7].tolist() == [0, 0, 1]


def test_prompt_travel_through_generate(tiny_model):
    from dataclasses import replace

    from zeroshot.generate import generate
    from zeroshot.recipe import Chunks, Motion

    base = Recipe(method="t2v-zero", num_frames=6, height=32, width=32, num_inference_steps=4, guidance_scale=3.0,
                  cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))
    plain = generate(tiny_model, "a red cat", base, progress=False).frames
    same = generate(tiny_model, "a red cat", replace(base, prompt_at=("3:a red cat",)), progress=False).frames
    assert (same - plain).abs().max() <= 1e-5  # travelling to the same prompt changes nothing
    travel = replace(base, prompt_at=("3:a blue dog",))
    moved = generate(tiny_model, "a red cat", travel, progress=False).frames
    assert (moved[:, 0] - plain[:, 0]).abs().max() <= 1e-5  # frame 0 keeps its prompt
    assert (moved[:, 3:] - plain[:, 3:]).abs().max() > 1e-3
    chunked = generate(tiny_model, "a red cat", replace(travel, chunks=Chunks(4)), progress=False).frames
    assert (chunked - moved).abs().max() <= 1e-5  # per-frame text is sliced with the chunks


@pytest.mark.parametrize(
    "entries,needle",
    [(("9:a cat",), "outside the video"), (("2:a cat", "2:a dog"), "given twice"), (("x:a cat",), "FRAME:PROMPT")],
)
def test_prompt_travel_bad_entries_are_one_line(entries, needle):
    from zeroshot.recipe import validate

    with pytest.raises(RecipeError, match=needle):
        validate(Recipe(method="t2i", num_frames=8, prompt_at=entries))


def test_prompt_travel_refused_on_unet3d():
    from zeroshot.families import FAMILY_CLASSES
    from zeroshot.recipe import validate

    with pytest.raises(RecipeError, match="one text per video"):
        validate(Recipe(method="video", num_frames=8, prompt_at=("2:a cat",)), family=FAMILY_CLASSES["unet3d"])


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--prompt-at", "3:a purple circle on a blue background"], "purple"),
        (["--prompt-at", "40:a red circle on a blue background"], "outside the video"),
        (["--chunk", "1"], "chunks.size"),
    ],
)
def test_cli_travel_and_chunk_flags_bad_input(tmp_path, capsys, flags, needle):
    from zeroshot.cli import main

    rc = main(["generate", "a red circle on a blue background", *flags, "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
