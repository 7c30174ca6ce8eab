"""The `svd` family (Stable Video Diffusion, image-to-video): parity with diffusers'
`StableVideoDiffusionPipeline`, its frame-wise guidance through context windows, the
techniques it takes, and the one-line refusals of bad input before any model work."""

import warnings
from dataclasses import replace

import pytest
import torch

from zeroshot import models, testing
from zeroshot.families import SVD, Cond, guided
from zeroshot.generate import generate, prepare_recipe
from zeroshot.recipe import SVD as SVDSettings
from zeroshot.recipe import Chunks, CrossFrame, FreeInit, Recipe, RecipeError, Windows, get_method, natural_method

SMALL = dict(height=32, width=32, num_inference_steps=3, num_frames=4)


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory):
    return testing.build_svd_folder(tmp_path_factory.mktemp("svd"))


@pytest.fixture(scope="module")
def svd_model(svd_folder):
    return models.load(str(svd_folder))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return str(testing.write_test_image(tmp_path_factory.mktemp("img") / "input.png"))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def pipe(svd_folder):
    from diffusers import StableVideoDiffusionPipeline

    p = _quiet(StableVideoDiffusionPipeline.from_pretrained, str(svd_folder))
    p.set_progress_bar_config(disable=True)
    return p


# --- parity with diffusers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "frames,steps,size,num_videos,settings,guidance",
    [
        (5, 6, (32, 32), 1, SVDSettings(), 3.0),
        (4, 4, (32, 48), 2, SVDSettings(fps=6, motion_bucket_id=60, noise_aug_strength=0.1, min_guidance_scale=1.5,
                                        decode_chunk_size=2), 4.0),
    ],
)
def test_svd_matches_the_diffusers_pipeline(svd_model, pipe, image, frames, steps, size, num_videos, settings, guidance):
    from PIL import Image

    h, w = size
    s = svd_model.vae_scale_factor
    latents = torch.randn(num_videos, frames, 4, h // s, w // s, generator=torch.Generator().manual_seed(5))  # b f c h w
    theirs = _quiet(
        pipe,
        Image.open(image),
        num_frames=frames,
        height=h,
        width=w,
        num_inference_steps=steps,
        min_guidance_scale=settings.min_guidance_scale,
        max_guidance_scale=guidance,
        fps=settings.fps,
        motion_bucket_id=settings.motion_bucket_id,
        noise_aug_strength=settings.noise_aug_strength,
        decode_chunk_size=settings.decode_chunk_size,
        num_videos_per_prompt=num_videos,
        generator=torch.Generator().manual_seed(3),  # draws the image's noise augmentation
        latents=latents.clone(),
        output_type="np",
    ).frames  # b f H W 3
    recipe = Recipe(method="video", num_frames=frames, height=h, width=w, num_inference_steps=steps,
                    guidance_scale=guidance, image=image, svd=settings)
    ours = generate(svd_model, "", recipe, latents=latents.permute(0, 2, 1, 3, 4), seed=3, num_videos=num_videos,
                    progress=False)
    ours_np = ours.frames.permute(0, 1, 3, 4, 2).numpy()
    assert ours_np.shape == theirs.shape
    assert abs(ours_np - theirs).max() <= 1e-4
    assert abs(ours_np[:, 1:] - ours_np[:, :1]).max() > 1e-3
    assert ours.recipe.svd == settings


def test_a_pipeline_object_is_wrapped_and_shared(svd_model, pipe, image):
    recipe = Recipe(method="video", **SMALL, image=image)
    a = generate(pipe, "", recipe, progress=False)
    b = generate(svd_model, "", recipe, progress=False)
    assert torch.equal(a.frames, b.frames)


# --- frame-wise guidance, in one place ---------------------------------------------------


def test_per_frame_guidance_is_sliced_with_the_frames():
    def forward(x, t, c):  # "network": the conditioning value, broadcast
        return x * 0 + c["v"].view(-1, 1, 1, 1, 1)

    x = torch.zeros(1, 2, 5, 3, 3)
    scales = torch.linspace(1.0, 3.0, 5)
    cond = Cond({"v": torch.ones(1)}, {"v": torch.zeros(1)}, guidance=scales)
    out = guided(forward, 7.5)(x, 0, cond)  # neg 0, pos 1: the output is the scale
    assert torch.allclose(out[0, 0, :, 0, 0], scales)
    part = cond.frames(1, 4)
    assert torch.equal(part.guidance, scales[1:4])
    assert torch.allclose(guided(forward, 7.5)(x[:, :, 1:4], 0, part)[0, 0, :, 0, 0], scales[1:4])
    assert torch.allclose(guided(forward, scales)(x, 0, Cond(cond.positive, cond.negative))[0, 0, :, 0, 0], scales)
    with pytest.raises(ValueError, match="per-frame guidance"):
        guided(forward, 7.5)(x[:, :, :2], 0, cond)


def test_windows_covering_the_video_equal_plain_sampling_and_smaller_ones_run(svd_model, image):
    recipe = Recipe(method="video", **SMALL, image=image, guidance_scale=3.0)
    plain = generate(svd_model, "", recipe, progress=False).frames
    whole = generate(svd_model, "", replace(recipe, windows=Windows(length=4, stride=2)), progress=False).frames
    assert torch.equal(plain, whole)
    windowed = generate(svd_model, "", replace(recipe, windows=Windows(length=2, stride=1)), progress=False).frames
    assert torch.isfinite(windowed).all() and (windowed - plain).abs().max() > 1e-4


# --- techniques on svd ---------------------------------------------------------------------


def test_cross_frame_wraps_only_the_spatial_self_attention(svd_model, image):
    from zeroshot.attention import CrossFrameAttnProcessor
    from zeroshot.hooks import cross_frame_attention
    from zeroshot.techniques.cross_frame import layers

    names = layers(svd_model, ("down", "mid", "up"))
    temporal = set(svd_model.attention_layers("temporal"))
    assert names and temporal and not (set(names) & temporal)
    assert all(".transformer_blocks." in n and ".attn1." in n for n in names)
    with cross_frame_attention(svd_model.unet, 4, names=names):
        wrapped = {n for n, p in svd_model.unet.attn_processors.items() if isinstance(p, CrossFrameAttnProcessor)}
    assert wrapped == set(names)
    recipe = Recipe(method="video", **SMALL, image=image)
    plain = generate(svd_model, "", recipe, progress=False).frames
    crossed = generate(svd_model, "", replace(recipe, cross_frame=CrossFrame()), progress=False).frames
    assert (plain[:, 1:] - crossed[:, 1:]).abs().max() > 1e-4


def test_a_noise_prior_reaches_the_latents(svd_model, image):
    recipe = Recipe(method="video", **SMALL, image=image)
    iid = generate(svd_model, "", recipe, progress=False)
    mixed = generate(svd_model, "", replace(get_method("pyoco-mixed"), **SMALL, image=image), progress=False)
    assert mixed.recipe.noise.prior == "mixed"
    assert (iid.frames - mixed.frames).abs().max() > 1e-4


def test_the_recipe_gets_svd_defaults_and_the_pipeline_recommendations(svd_model, image):
    recipe = prepare_recipe(svd_model, replace(get_method("video"), image=image))
    assert recipe.svd == SVDSettings()
    assert (recipe.height, recipe.width, recipe.num_inference_steps, recipe.guidance_scale) == (576, 1024, 25, 3.0)
    assert natural_method(SVD) == "video"


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(image=None), "input image"),
        (dict(negative_prompt="blurry"), "not on text"),
        (dict(scheduler="ddim"), "auto or euler"),
        (dict(svd=SVDSettings(fps=0)), "svd.fps"),
        (dict(svd=SVDSettings(decode_chunk_size=0)), "svd.decode_chunk_size"),
        (dict(method="t2v-zero", motion=get_method("t2v-zero").motion), "continuous noise levels"),
        (dict(freeinit=FreeInit()), "continuous noise levels"),
        (dict(chunks=Chunks()), "windows"),
        (dict(prompt_at=("2:a dog",)), "prompt_at"),
        (dict(height=30), "multiple"),
    ],
)
def test_what_svd_cannot_take_is_one_line(svd_model, image, change, needle):
    recipe = replace(Recipe(method="video", **SMALL, image=image), **change)
    with pytest.raises(RecipeError, match=needle) as info:
        prepare_recipe(svd_model, recipe)
    assert "\n" not in str(info.value)


def test_text_families_refuse_an_image_and_svd_settings(tiny_model, image):
    for change, needle in ((dict(image=image), "the other frames follow it through T2V-Zero's motion"), (dict(svd=SVDSettings()), "settings of svd")):
        with pytest.raises(RecipeError, match=needle):
            prepare_recipe(tiny_model, replace(Recipe(method="t2i", **SMALL), **change))


# --- the command line: bad input is one line, exit 2, before any model work ---------------


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models.ModelSpec, "load", refuse)


@pytest.mark.parametrize(
    "extra,needle",
    [
        ([], "input image"),
        (["--image", "MISSING"], "does not exist"),
        (["--image", "TEXT"], "not a readable image"),
        (["--image", "IMAGE", "--scheduler", "ddim"], "auto or euler"),
        (["--image", "IMAGE", "--freeinit", "2"], "continuous noise levels"),
        (["--image", "IMAGE", "--method", "t2v-zero"], "continuous noise levels"),
        (["--image", "IMAGE", "--set", "svd.fps=0"], "svd.fps"),
        (["--image", "IMAGE", "--height", "30"], "multiple"),
    ],
)
def test_cli_refuses_bad_svd_input_before_loading(svd_folder, image, tmp_path, capsys, no_loading, extra, needle):
    from zeroshot.cli import main

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    names = {"MISSING": str(tmp_path / "missing.png"), "TEXT": str(text), "IMAGE": image}
    extra = [names.get(a, a) for a in extra]
    out = tmp_path / "out"
    rc = main(["generate", "a cat", "--model", str(svd_folder), "--out", str(out / "o.mp4"), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_refuses_an_image_for_a_text_family(tiny_sd, image, tmp_path, capsys, no_loading):
    from zeroshot.cli import main

    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", "--image", image,
               "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--method t2v-zero" in err and len(err.splitlines()) == 1


def test_cli_generates_from_an_image(svd_folder, image, tmp_path):
    import json

    from zeroshot.cli import main

    video = tmp_path / "clip.mp4"
    args = ["--height", "32", "--width", "32", "--steps", "2", "--frames", "4", "--quiet", "--set", "svd.fps=6"]
    assert main(["generate", "a cat", "--model", str(svd_folder), "--image", image, "--out", str(video), *args]) == 0
    record = json.loads(video.with_suffix(".json").read_text())
    assert record["recipe"]["method"] == "video" and record["recipe"]["image"] == image
    assert record["recipe"]["svd"]["fps"] == 6 and record["recipe"]["guidance_scale"] == 3.0
