"""Video Instruct-Pix2Pix (the `pix2pix` family and method): three-way guidance in
`families.base.guided`; per frame with cross-frame attention off it equals diffusers'
StableDiffusionInstructPix2PixPipeline, with it on the pipeline with Text2Video-Zero's
CrossFrameAttnProcessor on its UNet; bad input is one line before any model work."""

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroshot import models, testing
from zeroshot.families import Pix2Pix
from zeroshot.families.base import Cond, guided
from zeroshot.generate import generate
from zeroshot.io import read_video
from zeroshot.recipe import Noise
from zeroshot.recipe import Pix2Pix as Settings
from zeroshot.recipe import Recipe, RecipeError, get_method

F, SIZE, STEPS, GUIDANCE, IMAGE_GUIDANCE = 3, 32, 6, 6.0, 1.8
PROMPT = "a green circle"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pix2pix")
    folder = testing.build_pix2pix_folder(root / "model")
    video = testing.write_control_video(root / "clip", num_frames=F, size=SIZE)
    return folder, models.load(str(folder)), video


def _recipe(video, **kw):
    base = dict(method="t2i", num_frames=F, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, video=str(video), pix2pix=Settings(IMAGE_GUIDANCE), noise=Noise())
    return Recipe(**{**base, **kw})


def _pipeline(folder, scheduler: str):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(folder), local_files_only=True)
    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[scheduler]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _theirs(pipe, frames, latents, **kw):
    """The pipeline on the frames as one batch of images, from `latents` (f, c, h, w)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe([PROMPT] * len(frames), image=frames, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    image_guidance_scale=IMAGE_GUIDANCE, latents=latents.clone(), output_type="np", **kw).images


def test_the_family_is_read_from_the_folder(setup):
    folder, model, _ = setup
    assert isinstance(model, Pix2Pix) and model.family == "pix2pix" and model.unet.config.in_channels == 8
    assert models.peek(str(folder)).family_class is Pix2Pix
    assert model.latent_shape(2, F, SIZE, SIZE) == (2, 4, F, 8, 8)  # the noise has the output's 4 channels


def test_an_sd_folder_with_an_8_channel_unet_is_pix2pix_and_a_4_channel_one_is_refused(setup, tiny_sd, tmp_path):
    import json
    import shutil

    folder, model, video = setup
    converted = Path(shutil.copytree(folder, tmp_path / "converted"))  # as single-file conversions save it
    index = json.loads((converted / "model_index.json").read_text())
    (converted / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    assert models.peek(str(converted)).family_class is Pix2Pix
    recipe = _recipe(video, num_inference_steps=2)
    a = generate(models.load(str(converted)), PROMPT, recipe, progress=False).frames
    assert torch.equal(a, generate(model, PROMPT, recipe, progress=False).frames)
    wrong = Path(shutil.copytree(tiny_sd, tmp_path / "wrong"))
    index = json.loads((wrong / "model_index.json").read_text())
    (wrong / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    with pytest.raises(ValueError, match="an instruct-pix2pix UNet takes latents and image latents .4 . 4 channels.; "
                                         "this one takes 4") as info:
        models.load(str(wrong))
    assert "\n" not in str(info.value)


def test_three_way_guidance_formula_and_the_two_way_path():
    """`guided` with a partial branch: the batch [negative, partial, positive] and
    neg + ps * (partial - neg) + s * (pos - partial); without one, the two-way batch as before."""
    x = torch.randn(1, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    calls = []

    def forward(batch, t, c):
        calls.append(c["k"].clone())
        return batch * c["k"][:, None, None, None, None]  # each branch scales x by its own k

    one = lambda v: torch.tensor([v])  # noqa: E731
    cond = Cond({"k": one(5.0)}, {"k": one(1.0)}, partial={"k": one(2.0)}, partial_scale=1.5)
    out = guided(forward, 7.0)(x, 0, cond)
    assert torch.equal(calls[-1], torch.tensor([1.0, 2.0, 5.0]))
    assert torch.allclose(out, x * (1 + 1.5 * (2 - 1) + 7.0 * (5 - 2)))
    two = Cond({"k": one(5.0)}, {"k": one(1.0)})
    neg, pos = x * 1.0, x * 5.0
    assert torch.equal(guided(forward, 7.0)(x, 0, two), neg + 7.0 * (pos - neg))
    assert torch.equal(calls[-1], torch.tensor([1.0, 5.0]))
    # frames(s, e) slices the partial branch's frame-wise tensors too
    framed = Cond({"v": torch.zeros(1, 4)}, {"v": torch.ones(1, 4)}, frame_keys=("v",),
                  partial={"v": torch.arange(4.0)[None]}, partial_scale=2.0)
    part = framed.frames(1, 3)
    assert torch.equal(part.partial["v"], torch.tensor([[1.0, 2.0]])) and part.partial_scale == 2.0


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_per_frame_matches_diffusers_instruct_pix2pix(setup, scheduler, record_property):
    """Cross-frame attention off: each frame is the pipeline's edit of that frame (both guidance
    scales > 1; euler's scale_model_input divides the noisy latents, not the image latents)."""
    folder, model, video = setup
    frames = read_video(video)  # f 3 H W in [0, 1]
    latents = torch.randn(F, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = _theirs(_pipeline(folder, scheduler), frames, latents)
    recipe = _recipe(video, scheduler=scheduler)
    ours = generate(model, PROMPT, recipe, latents=latents.permute(1, 0, 2, 3)[None], progress=False)
    ours = ours.frames[0].permute(0, 2, 3, 1).numpy()
    diff = float(np.abs(ours - theirs).max())
    record_property("max_abs_diff", diff)
    assert diff <= 1e-4, f"max |diff| = {diff}"
    assert np.abs(ours - frames.permute(0, 2, 3, 1).numpy()).max() > 1e-2  # the frames changed


def test_cross_frame_matches_the_pipeline_with_text2video_zero_processors(setup, record_property):
    """Text2Video-Zero's Video Instruct-Pix2Pix as diffusers documents it: the pipeline with
    CrossFrameAttnProcessor(batch_size=3) on its UNet, the video's frames as one batch."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor,
    )

    folder, model, video = setup
    frames = read_video(video)
    latents = torch.randn(F, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    pipe = _pipeline(folder, "ddim")
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor(batch_size=3))
    theirs = _theirs(pipe, frames, latents)
    recipe = replace(get_method("pix2pix"), num_frames=F, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                     guidance_scale=GUIDANCE, video=str(video), pix2pix=Settings(IMAGE_GUIDANCE))
    before = dict(model.unet.attn_processors)
    ours = generate(model, PROMPT, recipe, latents=latents.permute(1, 0, 2, 3)[None], progress=False)
    assert dict(model.unet.attn_processors) == before  # hooks restored
    ours_np = ours.frames[0].permute(0, 2, 3, 1).numpy()
    diff = float(np.abs(ours_np - theirs).max())
    record_property("max_abs_diff", diff)
    assert diff <= 1e-4, f"max |diff| = {diff}"
    plain = generate(model, PROMPT, replace(recipe, cross_frame=None), latents=latents.permute(1, 0, 2, 3)[None],
                     progress=False).frames
    assert (plain[:, 1:] - ours.frames[:, 1:]).abs().max() > 1e-3  # cross-frame attention changed frames 1..
    assert (plain[:, 0] - ours.frames[:, 0]).abs().max() < 1e-5  # and kept the anchor


def test_image_guidance_changes_the_edit_and_two_videos_are_one_batch(setup):
    _, model, video = setup
    latents = torch.randn(1, 4, F, 8, 8, generator=torch.Generator().manual_seed(5))
    run = lambda s, **kw: generate(model, PROMPT, _recipe(video, pix2pix=Settings(s)), latents=latents,  # noqa: E731
                                   progress=False, **kw).frames
    low, high = run(1.0), run(3.0)
    assert (low - high).abs().max() > 1e-3
    two = generate(model, PROMPT, _recipe(video), latents=latents.expand(2, -1, -1, -1, -1), num_videos=2,
                   progress=False).frames
    assert torch.allclose(two[0], two[1], atol=1e-5)
    assert torch.allclose(two[:1], run(IMAGE_GUIDANCE), atol=1e-5)


def test_other_techniques_compose(setup):
    """Context windows and chunks slice the image latents with the frames; T2V-Zero's motion
    runs its frame-0 pass on frame 0's latents, background smoothing reads the attention of the
    positive part of the three-way batch; FreeInit re-samples."""
    from zeroshot.recipe import Chunks, FreeInit, Motion, Smoothing, Windows

    _, model, video = setup
    base = replace(get_method("pix2pix"), num_frames=F, height=SIZE, width=SIZE, num_inference_steps=3,
                   video=str(video))
    latents = torch.randn(1, 4, F, 8, 8, generator=torch.Generator().manual_seed(6))
    ref = generate(model, PROMPT, base, latents=latents, progress=False).frames
    chunked = generate(model, PROMPT, replace(base, chunks=Chunks(2)), latents=latents, progress=False).frames
    assert torch.allclose(ref, chunked, atol=1e-5)  # chunks: identical output
    motion = dict(method="t2v-zero", motion=Motion(translate=(4.0, 0.0)))
    outs = []
    for change in (dict(windows=Windows(length=2, stride=1)), dict(freeinit=FreeInit(iterations=2)), motion,
                   dict(**motion, smoothing=Smoothing(dilate=1))):  # dilate 1: a background on 8x8 latents
        outs.append(generate(model, PROMPT, replace(base, **change), progress=False).frames)
        assert outs[-1].shape == (1, F, 3, SIZE, SIZE) and torch.isfinite(outs[-1]).all()
    assert (outs[-1][:, 1:] - outs[-2][:, 1:]).abs().max() > 1e-4  # smoothing blended the backgrounds


@pytest.mark.parametrize(
    "changes,needle",
    [
        (dict(video=None), "video: pix2pix models edit an input video"),
        (dict(num_frames=5), "has 3 frames of 32x32; the request is 5 frames"),
        (dict(pix2pix=Settings(-1.0)), "pix2pix.image_guidance_scale must be >= 0"),
        (dict(image="x.png"), "image: pix2pix models generate from text"),
        (dict(method="edit", edit=__import__("zeroshot.recipe").recipe.Edit()), "edit: pix2pix models condition"),
        (dict(controlnet=__import__("zeroshot.recipe").recipe.ControlNet()), "controlnet: pix2pix models take no"),
        (dict(prompt_at=("1:a red circle",)), "prompt_at: pix2pix models take one text per video"),
    ],
)
def test_bad_input_is_refused_in_one_line(setup, changes, needle):
    _, model, video = setup
    with pytest.raises(RecipeError) as info:
        generate(model, PROMPT, replace(_recipe(video), **changes), progress=False)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_method_on_a_text_to_image_model_is_refused(tiny_model, setup):
    _, _, video = setup
    recipe = replace(get_method("pix2pix"), num_frames=F, height=SIZE, width=SIZE, video=str(video))
    with pytest.raises(RecipeError, match="pix2pix: settings of pix2pix models .StableDiffusionInstructPix2Pix"):
        generate(tiny_model, PROMPT, recipe, progress=False)


def test_cli_edit_with_a_pix2pix_model(setup, tmp_path):
    import json

    from zeroshot.cli import main

    folder, _, video = setup
    out = tmp_path / "o.mp4"
    rc = main(["edit", str(video), PROMPT, "--model", str(folder), "--image-guidance", "1.2", "--steps", "3",
               "--quiet", "--out", str(out)])  # no --method: the model's own (pix2pix)
    assert rc == 0 and out.exists()
    recipe = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert recipe["method"] == "pix2pix" and recipe["pix2pix"]["image_guidance_scale"] == 1.2
    assert recipe["cross_frame"] is not None and recipe["num_frames"] == F and recipe["video"] == str(video)


@pytest.mark.parametrize(
    "model,args,needle",
    [
        ("sd", ["{video}", "--method", "pix2pix"], "pix2pix: settings of pix2pix models"),
        ("sd", ["{video}", "--image-guidance", "2"], "pix2pix: settings of pix2pix models"),
        ("pix2pix", ["{video}", "--method", "edit"], "edit: pix2pix models condition every step"),
        ("pix2pix", ["{video}", "--strength", "0.5"], "edit: pix2pix models condition every step"),
        ("pix2pix", ["{video}", "--image-guidance", "-1"], "pix2pix.image_guidance_scale must be >= 0"),
        ("pix2pix", ["/no/such/clip.mp4"], "video: '/no/such/clip.mp4' does not exist"),
        ("pix2pix", ["{video}", "--controlnet", "{video}"], "controlnet: pix2pix models take no ControlNet"),
    ],
)
def test_cli_bad_input_is_one_line_before_model_work(setup, tiny_sd, tmp_path, capsys, monkeypatch, model, args,
                                                     needle):
    from zeroshot.cli import main

    folder, _, video = setup
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    args = [a.format(video=video) for a in args]
    path = str(tiny_sd if model == "sd" else folder)
    rc = main(["edit", args[0], PROMPT, "--model", path, "--out", str(tmp_path / "o.mp4"), *args[1:]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "o.mp4").exists()
