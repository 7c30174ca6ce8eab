"""Video-to-video (`recipe.edit`): strength 0 is the input's reconstruction; per frame with
iid noise and cross-frame attention off it equals diffusers' StableDiffusionImg2ImgPipeline."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from zeroshot import models, testing
from zeroshot.families.sd import decode_frames, encode_frames
from zeroshot.generate import generate
from zeroshot.io import read_video
from zeroshot.recipe import Edit, Noise, Recipe, RecipeError, get_method

F, SIZE = 3, 32


@pytest.fixture(scope="module")
def setup(tiny_sd, tmp_path_factory):
    model = models.load(str(tiny_sd))
    video = testing.write_control_video(tmp_path_factory.mktemp("edit") / "clip", num_frames=F, size=SIZE)
    return model, video


def _recipe(video, **kw):
    base = dict(method="edit", num_frames=F, height=SIZE, width=SIZE, num_inference_steps=10, guidance_scale=6.0,
                video=str(video), edit=Edit(strength=0.6), noise=Noise())
    return Recipe(**{**base, **kw})


def test_strength_zero_returns_the_reconstruction(setup):
    model, video = setup
    frames = read_video(video)
    out = generate(model, "a green circle", _recipe(video, edit=Edit(strength=0.0)), progress=False)
    recon = decode_frames(model.vae, encode_frames(model.vae, frames[None]))
    assert torch.equal(out.frames, recon)


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_per_frame_matches_diffusers_img2img(setup, strength, record_property):
    from diffusers import StableDiffusionImg2ImgPipeline

    model, video = setup
    frames = read_video(video)
    x0 = encode_frames(model.vae, frames[None])[0].permute(1, 0, 2, 3)  # f c h w
    pipe = StableDiffusionImg2ImgPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=type(model.scheduler).from_config(model.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pipe(["a green circle"] * F, image=x0, strength=strength, num_inference_steps=10, guidance_scale=6.0,
                      generator=torch.Generator().manual_seed(2), output_type="np").images
    noise = torch.randn(F, 4, 8, 8, generator=torch.Generator().manual_seed(2))  # the pipeline's one draw
    recipe = _recipe(video, edit=Edit(strength=strength))
    ours = generate(model, "a green circle", recipe, latents=noise.permute(1, 0, 2, 3)[None], progress=False)
    ours = ours.frames[0].permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - theirs).max()
    record_property("max_abs_diff", float(diff))
    assert diff <= 1e-4, f"max |diff| = {diff}"
    assert np.abs(ours - frames.permute(0, 2, 3, 1).numpy()).max() > 1e-2  # the frames changed


def test_edit_method_runs_with_cross_frame_and_shared_noise(setup):
    model, video = setup
    recipe = replace(get_method("edit"), num_frames=F, height=SIZE, width=SIZE, num_inference_steps=4,
                     video=str(video))
    before = dict(model.unet.attn_processors)
    out = generate(model, "a green circle", recipe, progress=False)
    assert out.frames.shape == (1, F, 3, SIZE, SIZE) and torch.isfinite(out.frames).all()
    assert dict(model.unet.attn_processors) == before


@pytest.mark.parametrize(
    "changes,needle",
    [
        (dict(video=None), "edit: no input video"),
        (dict(edit=Edit(strength=1.5)), "edit.strength must be in [0, 1]"),
        (dict(num_frames=5), "has 3 frames of 32x32; the request is 5 frames"),
        (dict(video="/no/such/clip.mp4"), "does not exist"),
        (dict(edit=None), "video: an input video is edited by the edit method"),
    ],
)
def test_bad_edit_input_is_refused(setup, changes, needle):
    model, video = setup
    with pytest.raises(RecipeError) as info:
        generate(model, "a green circle", replace(_recipe(video), **changes), progress=False)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_cli_edit_with_a_controlnet_on_the_input_edges(setup, tiny_sd, tmp_path):
    import json

    from zeroshot.cli import main

    model, video = setup
    testing.tiny_controlnet(model.unet, seed=1).save_pretrained(str(tmp_path / "cn"))
    out = tmp_path / "o.mp4"
    rc = main(["edit", str(video), "a green circle", "--model", str(tiny_sd), "--strength", "0.5", "--steps", "4",
               "--controlnet", str(tmp_path / "cn"), "--quiet", "--out", str(out)])
    assert rc == 0 and out.exists()
    recipe = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert recipe["method"] == "edit" and recipe["edit"]["strength"] == 0.5 and recipe["num_frames"] == F
    assert recipe["controlnet"]["signals"] == [f"canny:{video}"] and recipe["cross_frame"] is not None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["/no/such/clip.mp4"], "video: '/no/such/clip.mp4' does not exist"),
        (["{video}", "--strength", "2"], "edit.strength must be in [0, 1]"),
        (["{video}", "--set", "motion=on"], "edit: the edited video keeps its input's motion"),
    ],
)
def test_cli_edit_bad_input_is_one_line_before_model_work(setup, tiny_sd, tmp_path, capsys, monkeypatch, args,
                                                           needle):
    from zeroshot.cli import main

    _, video = setup
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    args = [a.format(video=video) for a in args]
    rc = main(["edit", args[0], "a green circle", "--model", str(tiny_sd), "--out", str(tmp_path / "o.mp4"),
               *args[1:]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert needle in err, err
