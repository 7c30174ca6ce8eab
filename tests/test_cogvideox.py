"""The `cogvideox` family (CogVideoX text-to-video, joint 3-D attention, time compressed 4x):
parity with diffusers' `CogVideoXPipeline` for 1.0 models (3-D rotary or sin-cos positions)
and a 1.5 model (temporal patches, padded latent frames), the frame counts and sizes it
takes, and the techniques it refuses in one line before any model work."""

import warnings
from dataclasses import replace

import pytest
import torch

from zeroshot import models, testing
from zeroshot.families import CogVideoX
from zeroshot.generate import generate, prepare_recipe
from zeroshot.recipe import Noise, Recipe, RecipeError

VARIANTS = {"rotary": dict(rotary=True), "sincos": dict(rotary=False), "v1.5": dict(rotary=True, patch_size_t=2)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: testing.build_cogvideox_folder(tmp_path_factory.mktemp(name), **kw) for name, kw in VARIANTS.items()}


@pytest.fixture(scope="module")
def model(folders):
    return models.load(str(folders["rotary"]))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    "variant,frames,size,num_videos,steps,guidance",
    [("rotary", 9, (32, 48), 2, 4, 6.0), ("sincos", 8, (32, 32), 1, 3, 4.0), ("v1.5", 9, (32, 48), 1, 3, 6.0)],
)
def test_cogvideox_matches_the_diffusers_pipeline(folders, variant, frames, size, num_videos, steps, guidance):
    from diffusers import CogVideoXPipeline

    folder = folders[variant]
    pipe = _quiet(CogVideoXPipeline.from_pretrained, str(folder))
    pipe.set_progress_bar_config(disable=True)
    m = models.load(str(folder))
    h, w = size
    shape = m.latent_shape(num_videos, frames, h, w)  # b c f h w, 1.5's padding frame included
    assert shape[2] == {"rotary": 3, "sincos": 2, "v1.5": 4}[variant]
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    theirs = _quiet(
        pipe, ["a red cat"] * num_videos, num_frames=frames, height=h, width=w, num_inference_steps=steps,
        guidance_scale=guidance, latents=latents.permute(0, 2, 1, 3, 4).clone(), max_sequence_length=16,
        output_type="np",
    ).frames  # b f H W 3
    recipe = Recipe(method="video", num_frames=frames, height=h, width=w, num_inference_steps=steps,
                    guidance_scale=guidance)
    ours = generate(m, "a red cat", recipe, latents=latents, num_videos=num_videos, progress=False)
    ours_np = ours.frames.permute(0, 1, 3, 4, 2).numpy()
    assert ours_np.shape == theirs.shape == (num_videos, frames, h, w, 3)
    assert abs(ours_np - theirs).max() <= 1e-4
    assert abs(ours_np[:, 1:] - ours_np[:, :1]).max() > 1e-3


def test_a_pipeline_object_is_wrapped_and_shared(folders, model):
    from diffusers import CogVideoXPipeline

    pipe = _quiet(CogVideoXPipeline.from_pretrained, str(folders["rotary"]))
    recipe = Recipe(method="video", num_frames=8, height=32, width=32, num_inference_steps=2)
    assert torch.equal(generate(pipe, "a red cat", recipe, progress=False).frames,
                       generate(model, "a red cat", recipe, progress=False).frames)


def test_the_frames_it_makes():
    assert CogVideoX.frame_counts(50) == [1, 8, 9, 16, 17, 24, 25, 32, 33, 40, 41, 48, 49]
    assert [CogVideoX.latent_frames(f) for f in (1, 8, 9, 48, 49)] == [1, 2, 3, 12, 13]


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(num_frames=5), "nearest 1 or 8"),
        (dict(num_frames=13), "nearest 9 or 16"),
        (dict(height=40), "multiple of 16"),
        (dict(scheduler="ddim"), "own scheduler"),
        (dict(image="x.png"), "generate from text"),
        (dict(noise=Noise(prior="videofusion", key_frame=3)), "key_frame must be in \\[0, 1\\]"),
    ],
)
def test_what_cogvideox_cannot_take_is_one_line(model, change, needle):
    recipe = replace(Recipe(method="video", num_frames=8, height=32, width=32, num_inference_steps=2), **change)
    with pytest.raises(RecipeError, match=needle) as info:
        prepare_recipe(model, recipe)
    assert "\n" not in str(info.value)


def test_the_dpm_scheduler_is_refused_in_one_line(folders):
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

    pipe = _quiet(CogVideoXPipeline.from_pretrained, str(folders["sincos"]))
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(models.ModelError, match="CogVideoXDDIMScheduler") as info:
        CogVideoX.from_pipeline(pipe)
    assert "\n" not in str(info.value)


def test_cli_refuses_a_frame_count_before_loading(folders, refused_before_loading):
    base = ["generate", "a red cat", "--model", str(folders["rotary"]), "--height", "32", "--width", "32"]
    refused_before_loading([*base, "--frames", "12"], "8k+1")
    refused_before_loading([*base, "--frames", "8", "--set", "cross_frame=on"], "3-D attention")


# --- image-to-video (CogVideoXImageToVideoPipeline) -------------------------------------


@pytest.mark.parametrize(
    "variant,frames,num_videos",
    [("rotary", 9, 1), ("sincos", 8, 2), ("v1.5", 9, 1)],
)
def test_cogvideox_i2v_matches_the_diffusers_pipeline(tmp_path, variant, frames, num_videos):
    """Same latents and generator seed (the image's posterior sample is the generator's first
    draw in both): 1.0 with rotary or sin-cos positions, 1.5 with a padding frame and `ofs`."""
    from diffusers import CogVideoXImageToVideoPipeline
    from PIL import Image

    folder = testing.build_cogvideox_folder(tmp_path / variant, image_to_video=True, **VARIANTS[variant])
    pipe = _quiet(CogVideoXImageToVideoPipeline.from_pretrained, str(folder))
    pipe.set_progress_bar_config(disable=True)
    m = models.load(str(folder))
    assert m.family == "cogvideox-i2v"
    image = str(testing.write_test_image(tmp_path / "in.png"))
    latents = torch.randn(m.latent_shape(num_videos, frames, 32, 48), generator=torch.Generator().manual_seed(1))
    pil = Image.open(image).convert("RGB")
    theirs = _quiet(
        pipe, image=[pil] * num_videos if num_videos > 1 else pil, prompt=["a red cat"] * num_videos,
        num_frames=frames, height=32, width=48, num_inference_steps=3, guidance_scale=6.0,
        latents=latents.permute(0, 2, 1, 3, 4).clone(), max_sequence_length=16, output_type="np",
        generator=torch.Generator().manual_seed(5),
    ).frames
    recipe = Recipe(method="video", num_frames=frames, height=32, width=48, num_inference_steps=3,
                    guidance_scale=6.0, image=image)
    ours = generate(m, "a red cat", recipe, latents=latents, num_videos=num_videos, seed=5, progress=False)
    assert abs(ours.frames.permute(0, 1, 3, 4, 2).numpy() - theirs).max() <= 1e-4
    other = str(testing.write_test_image(tmp_path / "other.png", seed=7))  # the image conditions the video
    again = generate(m, "a red cat", replace(recipe, image=other), latents=latents, num_videos=num_videos, seed=5,
                     progress=False)
    assert (again.frames - ours.frames).abs().max() > 1e-3


def test_cogvideox_i2v_needs_an_image_in_one_line(tmp_path, refused_before_loading):
    folder = testing.build_cogvideox_folder(tmp_path / "i2v", image_to_video=True)
    card = models.peek(str(folder))
    with pytest.raises(RecipeError, match="input image") as info:
        prepare_recipe(card, Recipe(method="video", num_frames=9, height=32, width=32))
    assert "\n" not in str(info.value)
    refused_before_loading(["generate", "a red cat", "--model", str(folder), "--frames", "9", "--height", "32",
                            "--width", "32"], "input image")
