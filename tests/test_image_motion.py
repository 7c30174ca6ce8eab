"""Image-to-video with motion on the SD families: `--image` is frame 0 of T2V-Zero's motion
(techniques/t2v_zero.py, methods/t2v_zero.sample with `image_latents`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from zeroshot.generate import generate, prepare_recipe
from zeroshot.recipe import Motion, Recipe, RecipeError, get_method
from zeroshot.testing import write_test_image

SMALL = dict(height=32, width=32, num_inference_steps=4, num_frames=3)


@pytest.fixture
def image(tmp_path):
    return str(write_test_image(tmp_path / "in.png", size=(40, 48)))  # not the output size: resized


def reconstruction(model, recipe):
    """The VAE's reconstruction `(3, H, W)` of the recipe's input image at the recipe's size."""
    from zeroshot.families.sd import encode_frames
    from zeroshot.techniques.t2v_zero import image_frame

    return model.decode(encode_frames(model.vae, image_frame(recipe)[None]))[0, 0]


def test_frame_0_is_the_image_and_the_others_move(tiny_model, image):
    recipe = replace(get_method("t2v-zero"), image=image, motion=Motion(translate=(4.0, 0.0)), **SMALL)
    result = generate(tiny_model, "a red cat", recipe, seed=3, progress=False)
    frames = result.frames[0]
    assert frames.shape == (3, 3, 32, 32)
    assert torch.allclose(frames[0], reconstruction(tiny_model, result.recipe), atol=1e-4)
    assert (frames[1] - frames[0]).abs().mean() > 1e-3 and (frames[2] - frames[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("scheduler", ["dpm++", "euler"])
def test_frame_0_is_held_with_several_videos_and_other_schedulers(tiny_model, image, scheduler):
    recipe = replace(get_method("t2v-zero"), image=image, scheduler=scheduler, **SMALL)
    result = generate(tiny_model, "a red cat", recipe, seed=0, num_videos=2, progress=False)
    want = reconstruction(tiny_model, result.recipe)
    for video in result.frames:
        assert torch.allclose(video[0], want, atol=1e-4)


def test_image_is_frame_0_without_its_denoising_pass(tiny_model, image):
    """From an image frame 0 is not denoised: the network runs only the last pass."""
    from zeroshot.techniques.t2v_zero import unet_calls

    calls = []
    recipe = replace(get_method("t2v-zero"), image=image, **SMALL)
    generate(tiny_model, "a red cat", recipe, seed=0, progress=False, callback=lambda i, t, x: calls.append(i))
    resolved = prepare_recipe(tiny_model, recipe)
    assert len(calls) == unet_calls(resolved, resolved.num_inference_steps) < unet_calls(
        replace(resolved, image=None), resolved.num_inference_steps
    )


def xcorr_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The integer (dx, dy) that best moves `a` (3, H, W) onto `b` (circular cross-correlation)."""
    a, b = a - a.mean(axis=(1, 2), keepdims=True), b - b.mean(axis=(1, 2), keepdims=True)
    corr = np.fft.ifft2(np.conj(np.fft.fft2(a)) * np.fft.fft2(b)).real.sum(axis=0)
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return int(dx - w if dx > w // 2 else dx), int(dy - h if dy > h // 2 else dy)


def test_embedded_model_follows_the_translation_from_the_image(tmp_path):
    """A shapes-world image as frame 0; frame k is frame 0 shifted by k times the request (1 px)."""
    from PIL import Image

    from zeroshot import models
    from zeroshot.shapes.world import Scene, render_image

    scene = Scene("circle", "red", "blue", (20.0, 30.0), 9.0)
    path = tmp_path / "world.png"
    Image.fromarray((render_image(scene).transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
    recipe = replace(get_method("t2v-zero"), image=str(path), num_frames=6, motion=Motion(translate=(3.0, 1.0)))
    model = models.load()
    video = generate(model, scene.caption, recipe, seed=0, progress=False).frames[0].numpy()
    assert np.abs(video[0] - render_image(scene)).mean() < 0.03  # the image, up to the VAE
    for k in range(1, 6):
        sx, sy = xcorr_shift(video[0], video[k])
        assert abs(sx - 3 * k) <= 1 and abs(sy - k) <= 1, (k, sx, sy)


@pytest.mark.parametrize(
    "recipe,needle",
    [
        (Recipe(method="t2i", **SMALL), "--method t2v-zero"),
        (Recipe(method="t2i", motion=Motion(translate=(2.0, 0.0), dynamics=False),
                noise=replace(get_method("t2i").noise, prior="flow-warped"), **SMALL), "cross-frame attention"),
    ],
)
def test_image_without_anything_carrying_it_to_the_other_frames_is_refused(tiny_model, image, recipe, needle):
    with pytest.raises(RecipeError, match=needle) as info:
        prepare_recipe(tiny_model, replace(recipe, image=image))
    assert "\n" not in str(info.value)


# --- without T2V-Zero's warp: frame 0 held to the image (techniques/image_anchor.py) --------


def _anchor_recipes(tiny_model, tmp_path):
    """Recipes that hold frame 0 to the image without the warp: cross-frame attention with the
    dynamics off, and AnimateDiff's motion modules (an acting tiny module) with no motion."""
    from zeroshot.recipe import METHODS, AnimateDiff, CrossFrame
    from zeroshot.trained.animatediff import save_motion_adapter
    from zeroshot.trained.inflate import new_motion_adapter

    mm = save_motion_adapter(new_motion_adapter(tiny_model.unet, seed=3, max_seq_length=8, zero_init=False),
                             tmp_path / "mm.safetensors")
    return {
        "cross-frame": Recipe(method="t2i", cross_frame=CrossFrame(), motion=Motion(translate=(2.0, 0.0), dynamics=False),
                              noise=replace(get_method("t2i").noise, prior="flow-warped"), **SMALL),
        "animatediff": replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=str(mm)), **SMALL),
    }


@pytest.mark.parametrize("which", ["cross-frame", "animatediff"])
def test_frame_0_is_held_to_the_image_without_the_warp(tiny_model, image, tmp_path, which):
    recipe = _anchor_recipes(tiny_model, tmp_path)[which]
    result = generate(tiny_model, "a red cat", replace(recipe, image=image), seed=3, num_videos=2, progress=False)
    want = reconstruction(tiny_model, result.recipe)
    plain = generate(tiny_model, "a red cat", recipe, seed=3, num_videos=2, progress=False)
    for video, free in zip(result.frames, plain.frames):
        assert torch.allclose(video[0], want, atol=1e-4)
        assert (video[1:] - free[1:]).abs().max() > 1e-3  # the others see the image through the run
        assert (video[1] - video[0]).abs().mean() > 1e-3


def test_an_animatediff_folder_takes_an_image_as_frame_0(tmp_path, image):
    """An AnimateDiff pipeline folder (its own motion modules): the image is frame 0 held through
    its sampling, and frame 0 of T2V-Zero's motion with the dynamics on."""
    from zeroshot import models
    from zeroshot.testing import build_animatediff_folder

    model = models.load(str(build_animatediff_folder(tmp_path / "ad")))
    for recipe in (Recipe(method="animatediff", **SMALL),
                   replace(get_method("animatediff"), motion=Motion(translate=(4.0, 0.0)), **SMALL)):
        result = generate(model, "a red cat", replace(recipe, image=image), seed=2, progress=False)
        free = generate(model, "a red cat", recipe, seed=2, progress=False)
        assert torch.allclose(result.frames[0, 0], reconstruction(model, result.recipe), atol=1e-4)
        assert (result.frames[0, 1:] - free.frames[0, 1:]).abs().max() > 1e-3


def test_an_unreadable_image_is_refused(tiny_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    for path, needle in ((bad, "not a readable image"), (tmp_path / "missing.png", "does not exist")):
        with pytest.raises(RecipeError, match=needle):
            prepare_recipe(tiny_model, replace(get_method("t2v-zero"), image=str(path), **SMALL))


def test_cli_writes_a_video_from_an_image(tiny_sd, image, tmp_path):
    from zeroshot.cli import main

    out = tmp_path / "o.mp4"
    rc = main(["generate", "a red circle on a blue background", "--model", str(tiny_sd), "--image", image,
               "--method", "t2v-zero", "--motion", "4,0", "--height", "32", "--width", "32", "--steps", "4",
               "--frames", "3", "--out", str(out), "--quiet"])
    assert rc == 0 and out.exists() and out.with_suffix(".json").exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--method", "t2i", "--image", "IMAGE"], "--method t2v-zero"),
        (["--image", "BAD"], "not a readable image"),
    ],
)
def test_cli_refusals_are_one_line_exit_2(tiny_sd, image, tmp_path, capsys, extra, needle):
    from zeroshot.cli import main

    bad = tmp_path / "bad.png"
    bad.write_text("x")
    extra = [{"IMAGE": image, "BAD": str(bad)}.get(a, a) for a in extra]
    out = tmp_path / "out"
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--out", str(out / "o.mp4"), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_sdxl_holds_frame_0_to_the_image(tmp_path, image):
    from zeroshot import models
    from zeroshot.testing import build_sdxl_folder

    model = models.load(str(build_sdxl_folder(tmp_path / "sdxl")))
    recipe = replace(get_method("t2v-zero"), image=image, **SMALL)
    result = generate(model, "a red cat", recipe, seed=0, progress=False)
    assert torch.allclose(result.frames[0, 0], reconstruction(model, result.recipe), atol=1e-4)
