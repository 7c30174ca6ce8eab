"""ControlNet-conditioned video: parity with diffusers' ControlNet pipelines on tiny components
(per frame; Text2Video-Zero's ControlNet mode with cross-frame attention on UNet and
ControlNet; SDXL; AnimateDiff), control signals, loading, and the one-line refusals."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from zeroshot import control, models, testing
from zeroshot.generate import generate
from zeroshot.recipe import ControlNet, CrossFrame, Noise, Recipe, RecipeError

F, SIZE, STEPS = 3, 32, 4


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def sd_setup(tiny_sd, tmp_path_factory):
    """(model, ControlNet folder, control video) on the tiny SD folder."""
    tmp = tmp_path_factory.mktemp("cn")
    model = models.load(str(tiny_sd))
    net = testing.tiny_controlnet(model.unet, seed=1, vae_scale_factor=model.vae_scale_factor)
    net.save_pretrained(str(tmp / "controlnet"))
    video = testing.write_control_video(tmp / "clip", num_frames=F, size=SIZE)
    return model, tmp / "controlnet", video


def _pil(maps: torch.Tensor):
    from PIL import Image

    arr = (maps.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def _sd_pipeline(model, net):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        controlnet=net, scheduler=type(model.scheduler).from_config(model.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _recipe(cn_path, video, **kw):
    controlnet = ControlNet(models=(str(cn_path),), signals=(f"canny:{video}",), scales=(0.8,))
    return Recipe(method="t2i", num_frames=F, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                  guidance_scale=6.0, controlnet=controlnet, **kw)


def test_canny_maps_are_edges_of_the_frames(sd_setup):
    _, _, video = sd_setup
    maps = control.control_maps(f"canny:{video}", F, SIZE, SIZE)
    assert maps.shape == (F, 3, SIZE, SIZE)
    assert set(maps.unique().tolist()) == {0.0, 1.0}
    assert 0.01 < maps.mean() < 0.5  # an outline, not a filled image
    assert not torch.equal(maps[0], maps[-1])  # the square moves


@pytest.mark.parametrize("guess_mode", [False, True])
def test_per_frame_matches_diffusers_controlnet_pipeline(sd_setup, guess_mode, record_property):
    model, cn_path, video = sd_setup
    net = control.load_controlnet(cn_path)
    maps = control.control_maps(f"canny:{video}", F, SIZE, SIZE)
    latents = torch.randn(F, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = _quiet(
        _sd_pipeline(model, net), ["a red cat"] * F, image=_pil(maps), latents=latents, num_inference_steps=STEPS,
        guidance_scale=6.0, controlnet_conditioning_scale=0.8, guess_mode=guess_mode, output_type="np",
    ).images
    recipe = _recipe(cn_path, video)
    recipe = replace(recipe, controlnet=replace(recipe.controlnet, guess_mode=guess_mode))
    ours = generate(model, "a red cat", recipe, latents=latents.permute(1, 0, 2, 3)[None], progress=False)
    ours = ours.frames[0].permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - theirs).max()
    record_property("max_abs_diff", float(diff))
    assert diff <= 1e-4, f"max |diff| = {diff}"
    plain = generate(model, "a red cat", replace(recipe, controlnet=None), latents=latents.permute(1, 0, 2, 3)[None],
                     progress=False).frames[0].permute(0, 2, 3, 1).numpy()
    assert np.abs(plain - theirs).max() > 1e-3  # the ControlNet really acts


def test_cross_frame_matches_text2video_zero_controlnet_mode(sd_setup, record_property):
    """diffusers' Text2Video-Zero ControlNet recipe: StableDiffusionControlNetPipeline with
    CrossFrameAttnProcessor on the UNet and the ControlNet, one latent repeated for all frames."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor,
    )

    model, cn_path, video = sd_setup
    net = control.load_controlnet(cn_path)
    pipe = _sd_pipeline(model, net)
    maps = control.control_maps(f"canny:{video}", F, SIZE, SIZE)
    before = dict(model.unet.attn_processors)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    recipe = replace(_recipe(cn_path, video), method="controlnet", cross_frame=CrossFrame(),
                     noise=Noise(prior="videofusion", lam=1.0))
    ours = generate(model, "a red cat", recipe, seed=5, progress=False)
    assert dict(model.unet.attn_processors) == before  # the prior (one shared latent) draws the same numbers
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor(batch_size=2))
    pipe.controlnet.set_attn_processor(CrossFrameAttnProcessor(batch_size=2))
    try:
        theirs = _quiet(
            pipe, ["a red cat"] * F, image=_pil(maps), latents=latent.repeat(F, 1, 1, 1), num_inference_steps=STEPS,
            guidance_scale=6.0, controlnet_conditioning_scale=0.8, output_type="np",
        ).images
    finally:
        model.unet.set_attn_processor(before)
    ours = ours.frames[0].permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - theirs).max()
    record_property("max_abs_diff", float(diff))
    assert diff <= 1e-4, f"max |diff| = {diff}"


def test_sdxl_per_frame_matches_diffusers(tmp_path, record_property):
    from diffusers import StableDiffusionXLControlNetPipeline

    folder = testing.build_sdxl_folder(tmp_path / "sdxl")
    model = models.load(str(folder))
    net = testing.tiny_controlnet(model.unet, seed=2, vae_scale_factor=model.vae_scale_factor)
    net.save_pretrained(str(tmp_path / "cn"))
    video = testing.write_control_video(tmp_path / "clip", num_frames=F, size=SIZE)
    maps = control.control_maps(f"canny:{video}", F, SIZE, SIZE)
    latents = torch.randn(F, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    pipe = StableDiffusionXLControlNetPipeline(
        vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet, controlnet=net,
        scheduler=type(model.scheduler).from_config(model.scheduler.config),
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = _quiet(
        pipe, ["a red cat"] * F, image=_pil(maps), latents=latents, num_inference_steps=STEPS, height=SIZE,
        width=SIZE, guidance_scale=6.0, controlnet_conditioning_scale=0.8, output_type="np",
    ).images
    ours = generate(model, "a red cat", _recipe(tmp_path / "cn", video), latents=latents.permute(1, 0, 2, 3)[None],
                    progress=False).frames[0].permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - theirs).max()
    record_property("max_abs_diff", float(diff))
    assert diff <= 1e-4, f"max |diff| = {diff}"


def test_animatediff_matches_diffusers(tmp_path, record_property):
    from diffusers import AnimateDiffControlNetPipeline, AnimateDiffPipeline

    folder = testing.build_animatediff_folder(tmp_path / "ad")
    model = models.load(str(folder))
    image_unet = testing.build_sd_components("tiny", seed=0, directory=tmp_path / "tok")["unet"]
    net = testing.tiny_controlnet(image_unet, seed=3, vae_scale_factor=model.vae_scale_factor)
    net.save_pretrained(str(tmp_path / "cn"))
    video = testing.write_control_video(tmp_path / "clip", num_frames=F, size=SIZE)
    maps = control.control_maps(f"canny:{video}", F, SIZE, SIZE)
    base = _quiet(AnimateDiffPipeline.from_pretrained, str(folder))
    pipe = AnimateDiffControlNetPipeline(**base.components, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, F, 8, 8, generator=torch.Generator().manual_seed(6))
    theirs = _quiet(
        pipe, "a red cat", num_frames=F, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=6.0,
        latents=latents.clone(), conditioning_frames=_pil(maps), controlnet_conditioning_scale=0.8, output_type="np",
    ).frames[0]
    recipe = replace(_recipe(tmp_path / "cn", video), method="animatediff")
    from zeroshot.recipe import apply_override

    recipe = apply_override(recipe, "animatediff", "on")
    ours = generate(model, "a red cat", recipe, latents=latents, progress=False).frames[0].permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - theirs).max()
    record_property("max_abs_diff", float(diff))
    assert diff <= 1e-4, f"max |diff| = {diff}"


# --- loading, signals, refusals -------------------------------------------------------------


def test_single_file_loads_like_the_folder(sd_setup, tmp_path):
    from safetensors.torch import save_file

    model, cn_path, _ = sd_setup
    net = control.load_controlnet(cn_path)
    file = tmp_path / "cn.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(file))
    assert control.signature(file) == control.signature(cn_path)
    assert control.signature(file).mismatch(control.signature_of_config(dict(model.unet.config), vae_scale_factor=4)) is None
    single = control.load_controlnet(file, model.unet)
    x, image = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 32, 32)
    emb = torch.randn(2, 77, 32)
    a = net(x, 10, encoder_hidden_states=emb, controlnet_cond=image, return_dict=False)
    b = single(x, 10, encoder_hidden_states=emb, controlnet_cond=image, return_dict=False)
    assert all(torch.equal(p, q) for p, q in zip(a[0], b[0])) and torch.equal(a[1], b[1])


def test_controlnets_are_loaded_once_across_jobs(sd_setup, tiny_sd, tmp_path, monkeypatch):
    """Batch renders call generate() per job: a ControlNet is read once per process (kept by
    resolved path, modification time, device and dtype), again when its files change."""
    import os

    from zeroshot import render

    model, cn_path, video = sd_setup
    control.clear_controlnet_cache()
    loads = []
    real = control.load_controlnet
    monkeypatch.setattr(control, "load_controlnet", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    recipe = _recipe(cn_path, video)
    first = generate(model, "a red cat", recipe, progress=False).frames
    before = {n: dict(net.attn_processors) for n, net in enumerate(control._LOADED.values())}
    again = generate(model, "a red cat", replace(recipe, cross_frame=CrossFrame()), progress=False).frames
    assert len(loads) == 1
    assert {n: dict(net.attn_processors) for n, net in enumerate(control._LOADED.values())} == before  # restored
    assert torch.equal(generate(model, "a red cat", recipe, progress=False).frames, first)
    assert (again - first).abs().max() > 1e-4 and len(loads) == 1
    jobs = [render.Job("a red cat", seed, recipe) for seed in (0, 1, 2)]
    report = render.render(jobs, tmp_path / "r", model=str(tiny_sd), progress=False)
    assert report.ok and len(report.rendered) == 3 and len(loads) == 1
    config = cn_path / "config.json"
    stamp = config.stat().st_mtime_ns + 10**9
    os.utime(config, ns=(stamp, stamp))  # a rewritten ControlNet is read again
    generate(model, "a red cat", recipe, progress=False)
    assert len(loads) == 2
    control.clear_controlnet_cache()
    generate(model, "a red cat", recipe, progress=False)
    assert len(loads) == 3
    control.clear_controlnet_cache()


def test_resize_resamples_frames_and_size(sd_setup):
    _, _, video = sd_setup
    maps = control.control_maps(f"depth:{video}", 6, 16, 24, resize=True)
    assert maps.shape == (6, 3, 16, 24) and 0 <= maps.min() and maps.max() <= 1
    with pytest.raises(RecipeError, match="--control-resize"):
        control.control_maps(f"depth:{video}", 6, 32, 32)


def test_families_without_residuals_refuse_controlnet():
    from zeroshot.families import UNet3D
    from zeroshot.recipe import validate

    recipe = replace(_recipe("cn", "clip"), method="video")
    with pytest.raises(RecipeError, match="unet3d models take no ControlNet"):
        validate(recipe, family=UNet3D)


def test_cli_generates_with_a_controlnet(sd_setup, tiny_sd, tmp_path):
    import json

    from zeroshot.cli import main

    _, cn_path, video = sd_setup
    out = tmp_path / "o.mp4"
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--controlnet", f"{cn_path}:0.7", "--control",
               f"canny:{video}", "--frames", str(F), "--height", "32", "--width", "32", "--steps", "2", "--quiet",
               "--out", str(out)])
    assert rc == 0 and out.exists()
    recipe = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert recipe["method"] == "controlnet" and recipe["motion"] is None and recipe["cross_frame"] is not None
    assert recipe["controlnet"]["scales"] == [0.7] and recipe["noise"]["lam"] == 1.0


@pytest.fixture(scope="module")
def sdxl_controlnet(tmp_path_factory):
    """A ControlNet made for the tiny SDXL UNet (another base for the tiny SD model)."""
    from diffusers import UNet2DConditionModel

    tmp = tmp_path_factory.mktemp("xl_cn")
    folder = testing.build_sdxl_folder(tmp / "sdxl")
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    testing.tiny_controlnet(unet).save_pretrained(str(tmp / "cn"))
    return tmp / "cn"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--control", "canny:{video}", "--frames", "5"], "has 3 frames of 32x32; the request is 5 frames"),
        (["--control", "canny:{video}", "--height", "64", "--width", "64"], "--control-resize"),
        (["--control", "edges:{video}"], "unknown control kind 'edges'"),
        (["--control", "canny:/no/such/clip.mp4"], "does not exist"),
        ([], "one KIND:VIDEO per ControlNet"),
        (["--control", "canny:{video}", "--controlnet", "{cn}"], "one KIND:VIDEO per ControlNet"),
        (["--control", "canny:{video}", "--set", "controlnet.start=0.9", "--set", "controlnet.end=0.5"], "start < end"),
    ],
)
def test_bad_control_input_is_one_line_before_model_work(sd_setup, tiny_sd, tmp_path, capsys, monkeypatch, args,
                                                          needle):
    from zeroshot.cli import main

    _, cn_path, video = sd_setup

    def no_model_work(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(models, "load", no_model_work)
    args = [a.format(video=video, cn=cn_path) for a in args]
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--controlnet", str(cn_path), "--frames", str(F),
               "--height", "32", "--width", "32", "--out", str(tmp_path / "o.mp4"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.parametrize("single_file", [False, True])
def test_controlnet_for_another_base_is_refused(sd_setup, sdxl_controlnet, tiny_sd, tmp_path, capsys, monkeypatch,
                                                single_file):
    from safetensors.torch import save_file

    from zeroshot.cli import main

    _, _, video = sd_setup
    path = sdxl_controlnet
    if single_file:
        net = control.load_controlnet(sdxl_controlnet)
        path = tmp_path / "xl.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--controlnet", str(path), "--control",
               f"canny:{video}", "--frames", str(F), "--height", "32", "--width", "32", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "made for another base model: text width 64, the model's is 32" in err


def test_a_model_folder_names_its_own_controlnet(sd_setup, tiny_sd, tmp_path):
    """zeroshot.json `controlnet.models` (relative to the folder) is the ControlNet of a
    `--control` request that names none, as the embedded model ships its edge ControlNet;
    the CLI picks the conditioned recipe from `--control` alone."""
    import json
    import shutil

    from zeroshot.cli import main
    from zeroshot.generate import prepare_recipe

    _, cn_path, video = sd_setup
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd, folder)
    shutil.copytree(cn_path, folder / "controlnet_canny")
    card = folder / "zeroshot.json"
    data = json.loads(card.read_text()) if card.is_file() else {}
    data.setdefault("defaults", {})["controlnet.models"] = ["controlnet_canny"]
    data["defaults"]["controlnet.scales"] = [1.5]
    card.write_text(json.dumps(data))
    model = models.load(str(folder))
    recipe = replace(_recipe("unused", video), controlnet=ControlNet(signals=(f"canny:{video}",)))
    own = prepare_recipe(model, recipe).controlnet
    assert own.models == (str(folder / "controlnet_canny"),) and own.scales == (1.5,)  # with its recommended scale
    mine = replace(recipe, controlnet=ControlNet(signals=(f"canny:{video}",), scales=(0.5,)))
    assert prepare_recipe(model, mine).controlnet.scales == (0.5,)  # a scale given wins
    given = prepare_recipe(model, _recipe(cn_path, video))
    assert given.controlnet.models == (str(cn_path),)  # a ControlNet given wins
    assert prepare_recipe(model, replace(recipe, controlnet=None)).controlnet is None  # no request, no ControlNet
    out = tmp_path / "o.mp4"
    rc = main(["generate", "a red cat", "--model", str(folder), "--control", f"canny:{video}", "--frames", str(F),
               "--height", "32", "--width", "32", "--steps", "2", "--quiet", "--out", str(out)])
    assert rc == 0
    written = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert written["method"] == "controlnet" and written["controlnet"]["models"] == [str(folder / "controlnet_canny")]


@pytest.mark.slow
def test_the_embedded_model_ships_an_edge_controlnet_that_it_follows(tmp_path):
    """The default model names its own edge ControlNet (zeroshot.json `controlnet.models`, in
    its folder, <= 10 MB), so `--control canny:CLIP` works offline with nothing else; its videos
    follow the control edges far more than the same recipe without it (held-out world-v2 clips
    on plain backgrounds, where edges are the object's outline alone; bench/control.py measures
    16 clips per table)."""
    from zeroshot.io import write_video
    from zeroshot.metrics import edge_f_score
    from zeroshot.recipe import METHODS
    from zeroshot.shapes import world

    model = models.load()
    names = model.defaults["controlnet.models"]
    folder = models.EMBEDDED_MODELS["shapes-v2"] / names[0]
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 10 * 2**20
    combos = sorted(c for c in world.HELD_OUT_V2 if c[3] == "plain")
    rng = np.random.default_rng(7)
    scores = {"with": [], "without": []}
    for i in (3, 40):
        shape, fg, bg, pattern = combos[i]
        scene = world.sample_scene_v2(rng, pattern=pattern, shape=shape, fg=fg, bg=bg)
        clip = world.render_video(scene, world.sample_motion_v2(rng, "translate"), 4)
        path = write_video(torch.from_numpy(clip.frames), tmp_path / f"clip{i}.png")
        edges = control.canny(torch.from_numpy(clip.frames))
        conditioned = replace(METHODS["controlnet"], num_frames=4, controlnet=ControlNet(signals=(f"canny:{path}",)))
        for key, recipe in (("with", conditioned), ("without", replace(conditioned, controlnet=None))):
            frames = generate(model, clip.caption, recipe, seed=i, progress=False).frames[0]
            scores[key].append(edge_f_score(control.canny(frames), edges)["edge_f"])
    assert np.mean(scores["with"]) >= np.mean(scores["without"]) + 0.25, scores
