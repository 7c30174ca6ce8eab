"""The trained flow adapter for AnimateDiff (zeroshot.trained.flow_adapter, train_flow, techniques.flow_adapter)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randn
from zeroshot.trained import flow_adapter as fa
from zeroshot.trained.inflate import inflate, new_motion_adapter


@pytest.fixture(scope="module")
def parts(tiny_parts):
    return tiny_parts


@pytest.fixture(scope="module")
def motion_unet(parts):
    """The tiny UNet with a motion module that is not the identity (random output projections)."""
    return inflate(parts["unet"], new_motion_adapter(parts["unet"], seed=3, max_seq_length=8, zero_init=False))


def _call(unet, x, emb, t=500):
    return unet(x, torch.tensor([t] * x.shape[0]), encoder_hidden_states=emb.repeat_interleave(x.shape[2], 0)).sample


def _inputs(parts, b=2, f=6, seed=0):
    h = parts["unet"].config.sample_size
    x = randn(b, 4, f, h, h, seed=seed)
    emb = randn(b, 77, parts["unet"].config.cross_attention_dim, seed=seed + 1)
    flow = fa.flow_features(randn(f, 2, h, h, seed=seed + 2) * 6, 4 * h, 4 * h)  # (f, 4, h, w)
    return x, emb, flow[None].expand(b, *flow.shape)


@torch.no_grad()
def test_untrained_adapter_is_exactly_todays_animatediff(parts, motion_unet):
    adapter = fa.new_flow_adapter(parts["unet"], seed=1)
    down, mid = adapter(torch.ones(3, 4, 8, 8))
    assert all(float(r.abs().max()) == 0.0 for r in (*down, mid))
    x, emb, flow = _inputs(parts)
    model = fa.FlowConditioned(motion_unet, adapter)
    model.flow = flow
    assert float((model(x, torch.tensor([500, 500]), emb.repeat_interleave(6, 0)).sample - _call(motion_unet, x, emb))
                 .abs().max()) <= 1e-6
    # one residual per skip connection, at its channels and size
    down, mid = adapter(flow.flatten(0, 1))
    assert [(r.shape[1], r.shape[2]) for r in down] == [(32, 8), (32, 8), (32, 4), (64, 4)]
    assert mid.shape[1:] == (64, 4, 4)


def _trained_briefly(parts, motion_unet, model, x, emb, flow):
    """Three optimizer steps of the adapter inside `model` (a FlowConditioned), then the motion
    UNet's plain output and the model's with the flow and with zero flow."""
    from zeroshot.trained.train_motion import diffusion_loss

    adapter = model.adapter.train().requires_grad_(True)
    model.flow = flow
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    for _ in range(3):
        loss = diffusion_loss(model, parts["scheduler"], x, emb, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    adapter.eval()
    t = torch.tensor([500] * x.shape[0])
    with torch.no_grad():
        plain = _call(motion_unet, x, emb)  # outside FlowConditioned's call nothing is added
        with_flow = model(x, t, emb.repeat_interleave(x.shape[2], 0)).sample
        model.flow = torch.zeros_like(flow)
        still = model(x, t, emb.repeat_interleave(x.shape[2], 0)).sample
    return plain, with_flow, still


def test_flow_changes_the_output_after_a_few_optimizer_steps(parts, motion_unet):
    adapter = fa.new_flow_adapter(parts["unet"], seed=1)
    model = fa.FlowConditioned(motion_unet, adapter)
    x, emb, flow = _inputs(parts)
    plain, with_flow, still = _trained_briefly(parts, motion_unet, model, x, emb, flow)
    assert float((with_flow - plain).abs().max()) > 1e-3  # the adapter now acts
    assert float((with_flow - still).abs().max()) > 1e-3  # and what it adds depends on the flow
    assert all(not p.requires_grad for p in motion_unet.parameters())  # only the adapter trained


def test_save_load_round_trip_and_bad_files(parts, tmp_path):
    from zeroshot.testing import build_sd_components
    from zeroshot.trained.animatediff import save_motion_adapter
    from zeroshot.trained.zoo import base_identity

    adapter = fa.new_flow_adapter(parts["unet"], seed=2, hidden=16)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    path = fa.save(adapter, tmp_path / "flow.safetensors", base=base_identity(parts["unet"]), notes={"steps": 3})
    loaded = fa.load(path, parts["unet"])
    assert loaded.config == adapter.config and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), loaded.state_dict().values()))
    header = fa.read_header(path)
    assert header["notes"] == {"steps": 3} and header["base"] == base_identity(parts["unet"])
    with torch.no_grad():
        features = torch.randn(2, 4, 8, 8)
        assert all(torch.equal(a, b) for a, b in zip(adapter(features)[0], loaded(features)[0]))
    # refused in one line: another base, a motion module, a broken file, a missing one
    other = build_sd_components("tiny", seed=0)["unet"]
    other.register_to_config(cross_attention_dim=48)
    mm = save_motion_adapter(new_motion_adapter(parts["unet"], max_seq_length=4), tmp_path / "mm.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"nope")
    for bad, unet, needle in [
        (path, other, "another base model"),
        (path, {**dict(parts["unet"].config), "_class_name": "UNetMotionModel", "block_out_channels": [8, 8]},
         "another base model"),
        (mm, parts["unet"], "not a flow adapter"),
        (tmp_path / "broken.safetensors", parts["unet"], "not a readable"),
        (tmp_path / "missing.safetensors", parts["unet"], "not a file"),
    ]:
        with pytest.raises(ValueError, match=needle) as info:
            fa.load(bad, unet)
        assert "\n" not in str(info.value)


def test_world_flow_is_exact_backward_flow():
    """Frame 0 sampled at q + flow(q) reproduces frame k on the object and the background."""
    import cv2

    from zeroshot.shapes import world
    from zeroshot.trained.train_flow import backward_flow, to_latent_grid

    rng = np.random.default_rng(4)
    for video in (
        world.render_video(world.Scene("square", "red", "blue", (20.0, 24.0), 9.0), world.ShapeMotion("translate", (2.0, 1.0)), 6),
        world.render_video(world.Scene("circle", "yellow", "black", (32.0, 32.0), 8.0), world.ShapeMotion("zoom", zoom=1.08), 6),
        world.render_video(
            world.sample_scene_v2(rng, pattern="striped", shape="ring", fg="red", bg="white"),
            world.ShapeMotion("curve", (1.5, 0.0), turn_deg=20.0), 6, world.BackgroundMotion("pan", (1.0, -0.5)),
        ),
    ):
        flow = backward_flow(video)  # (f, 2, H, W)
        assert np.abs(flow[0]).max() < 1e-5
        size = video.frames.shape[-1]
        grid = np.mgrid[:size, :size].astype(np.float32)
        first = video.frames[0].transpose(1, 2, 0)
        for k in range(1, len(flow)):
            back = cv2.remap(first, grid[1] + flow[k, 0], grid[0] + flow[k, 1], cv2.INTER_LINEAR)
            inner = cv2.erode(video.masks[k].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            inside = (grid[1] + flow[k, 0] >= 1) & (grid[1] + flow[k, 0] <= size - 2)
            inside &= (grid[0] + flow[k, 1] >= 1) & (grid[0] + flow[k, 1] <= size - 2)
            error = np.abs(back - video.frames[k].transpose(1, 2, 0)).max(-1)
            assert np.median(error[inner & inside]) < 0.02  # the object moved (and scaled) as its flow says
            if video.background.kind == "pan":
                away = ~cv2.dilate(video.masks[k].astype(np.uint8) | video.masks[0].astype(np.uint8),
                                   np.ones((5, 5), np.uint8)).astype(bool) & inside
                assert np.median(error[away]) < 0.02  # the pattern moved with the pan
        assert to_latent_grid(flow, 4).shape == (len(flow), 2, size // 4, size // 4)


def test_estimated_flow_clips_follow_their_exact_flow():
    """`--estimated-flow 1`: each clip's flow comes from DIS on its frames, close to the world's
    exact flow on the object's cells; 0 keeps the exact flow and the same clips."""
    from zeroshot.trained.train_flow import ShapesFlowVideos

    exact = ShapesFlowVideos(0, 2, (8,), 64, 4, factor=8, world="v2")
    estimated = ShapesFlowVideos(0, 2, (8,), 64, 4, factor=8, world="v2", estimated=1.0)
    for i in range(4):
        frames, caption, want = exact[i]
        frames2, caption2, got = estimated[i]
        assert torch.equal(frames, frames2) and caption == caption2
        assert got.shape == want.shape and not torch.equal(got, want)
        # flow features are in units of 1/8 of the short side (8 px here): a median cell within 1 px
        assert float((got[:, :2] - want[:, :2]).abs().median()) * 8 < 1.0
    with pytest.raises(ValueError, match="estimated"):
        ShapesFlowVideos(0, 2, (8,), 64, 4, factor=8, estimated=1.5)


def test_trainer_resumes_and_cli_writes_a_loadable_adapter(tiny_sd, parts, tmp_path):
    from zeroshot.trained.animatediff import save_motion_adapter
    from zeroshot.trained.train_flow import FlowTrainConfig, main, train

    mm = save_motion_adapter(new_motion_adapter(parts["unet"], seed=3, max_seq_length=8, zero_init=False),
                             tmp_path / "mm.safetensors")

    def config(name, **kw):
        return FlowTrainConfig(motion_module=str(mm), out=str(tmp_path / f"{name}.safetensors"),
                               checkpoint=str(tmp_path / f"{name}.pt"), steps=4, batch_size=1, frames=(4,), lr=1e-2,
                               warmup=1, save_every=0, **kw)

    whole = train(config("a"), components=parts, progress=False)
    first = train(config("b"), components=parts, progress=False, stop_at=2)
    resumed = train(config("b"), components=parts, progress=False)
    assert first["steps"] == 2 and resumed["steps"] == 4
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5, abs=1e-9)
    a, b = whole["adapter"].state_dict(), resumed["adapter"].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(float(a[k].abs().max()) > 0 for k in a if k.startswith("zero_convs"))  # the zero convs moved
    assert fa.read_header(tmp_path / "a.safetensors")["notes"]["steps"] == 4

    out, log = tmp_path / "cli.safetensors", tmp_path / "log.json"
    argv = ["--model", str(tiny_sd), "--motion-module", str(mm), "--out", str(out), "--checkpoint", "",
            "--steps", "1", "--batch-size", "1", "--frames", "3", "--log", str(log)]
    assert main(argv) == 0
    assert len(json.loads(log.read_text())["losses"]) == 1
    assert fa.load(out, parts["unet"]).config["hidden"] == 32
    onlyflow = tmp_path / "onlyflow.safetensors"
    argv[argv.index("--out") + 1] = str(onlyflow)
    assert main([*argv, "--injection", "attention"]) == 0
    loaded = fa.load(onlyflow, parts["unet"])
    assert loaded.injection == "attention" and any(float(c.weight.abs().max()) > 0 for c in loaded.site_convs)


# ---------------------------------------------------------------------------------------
# generation: --flow-adapter


def _recipe(motion_module, flow_adapter=None, **kw):
    from zeroshot.recipe import METHODS, AnimateDiff, Motion

    base = {"num_frames": 4, "height": 32, "width": 32, "num_inference_steps": 3, "guidance_scale": 4.0,
            "motion": Motion(translate=(0.0, 0.0), trajectories=("4,4 20,12",), dynamics=False)}
    base.update(kw)
    ad = AnimateDiff(adapter=str(motion_module), flow_adapter=flow_adapter and str(flow_adapter))
    return replace(METHODS["animatediff"], animatediff=ad, **base)


@pytest.fixture(scope="module")
def files(tiny_model, tmp_path_factory):
    from zeroshot.trained.animatediff import save_motion_adapter
    from zeroshot.trained.zoo import base_identity

    folder = tmp_path_factory.mktemp("flow_adapter")
    unet = tiny_model.unet
    mm = save_motion_adapter(new_motion_adapter(unet, seed=3, max_seq_length=8, zero_init=False), folder / "mm.safetensors")
    zero = fa.save(fa.new_flow_adapter(unet), folder / "zero.safetensors", base=base_identity(unet))
    trained = fa.new_flow_adapter(unet, seed=5)
    with torch.no_grad():
        for conv in (*trained.zero_convs, trained.mid_conv):
            conv.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(conv.weight.numel()))
    acting = fa.save(trained, folder / "acting.safetensors", base=base_identity(unet))
    return {"mm": mm, "zero": zero, "acting": acting}


def test_generate_with_a_zero_adapter_equals_animatediff_and_a_trained_one_acts(tiny_model, files):
    from zeroshot.generate import generate

    before = {k: v.clone() for k, v in tiny_model.unet.state_dict().items()}
    plain = generate(tiny_model, "a red circle", _recipe(files["mm"], motion=None), seed=1, progress=False)
    zero = generate(tiny_model, "a red circle", _recipe(files["mm"], files["zero"]), seed=1, progress=False)
    acting = generate(tiny_model, "a red circle", _recipe(files["mm"], files["acting"]), seed=1, progress=False)
    assert float((zero.latents - plain.latents).abs().max()) <= 1e-6
    assert float((acting.latents - plain.latents).abs().max()) > 1e-3
    recipe = _recipe(files["mm"], files["acting"])
    recipe = replace(recipe, motion=replace(recipe.motion, trajectories=("4,20 28,20",)))
    other = generate(tiny_model, "a red circle", recipe, seed=1, progress=False)
    assert float((other.latents - acting.latents).abs().max()) > 1e-4  # another request, another video
    assert all(torch.equal(before[k], v) for k, v in tiny_model.unet.state_dict().items())
    assert tiny_model.residuals_fn is None  # the hook is gone


def test_an_image_is_frame_0_and_the_adapter_moves_the_rest(tiny_model, files, tmp_path):
    """Image-to-video with motion through the adapter (techniques.image_anchor): frame 0 is the
    image (up to the VAE) whatever the adapter, and an acting adapter changes the other frames."""
    from zeroshot.families.sd import encode_frames
    from zeroshot.generate import generate
    from zeroshot.techniques.t2v_zero import image_frame
    from zeroshot.testing import write_test_image

    image = str(write_test_image(tmp_path / "in.png", size=(32, 32)))
    zero = generate(tiny_model, "a red circle", replace(_recipe(files["mm"], files["zero"]), image=image), seed=1,
                    progress=False)
    acting = generate(tiny_model, "a red circle", replace(_recipe(files["mm"], files["acting"]), image=image), seed=1,
                      progress=False)
    want = tiny_model.decode(encode_frames(tiny_model.vae, image_frame(zero.recipe)[None]))[0, 0]
    for result in (zero, acting):
        assert torch.allclose(result.frames[0, 0], want, atol=1e-4)
    assert float((acting.frames[0, 1:] - zero.frames[0, 1:]).abs().max()) > 1e-3


def test_recipe_checks(tiny_model, files):
    from zeroshot.generate import prepare_recipe
    from zeroshot.recipe import RecipeError

    with pytest.raises(RecipeError, match="follows a motion request"):
        prepare_recipe(tiny_model, _recipe(files["mm"], files["zero"], motion=None))
    with pytest.raises(RecipeError, match="animatediff.flow_adapter: .* not a flow adapter"):
        prepare_recipe(tiny_model, _recipe(files["mm"], files["mm"]))


@pytest.mark.parametrize(
    ("which", "needle"),
    [("other", "another base model"), ("mm", "not a flow adapter"), ("missing", "not a file")],
)
def test_cli_refuses_a_bad_flow_adapter_before_the_model_loads(tiny_sd, files, tmp_path, capsys, monkeypatch, which,
                                                               needle):
    from zeroshot import models
    from zeroshot.cli import main

    other = None
    if which == "other":
        from zeroshot.testing import build_sd_components
        from zeroshot.trained.zoo import base_identity

        unet = build_sd_components("tiny", seed=0)["unet"]
        unet.register_to_config(cross_attention_dim=48)
        other = fa.save(fa.new_flow_adapter(unet), tmp_path / "other.safetensors", base=base_identity(unet))
    path = {"other": other, "mm": files["mm"], "missing": tmp_path / "missing.safetensors"}[which]

    def no_model_work(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(models, "load", no_model_work)
    argv = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "animatediff", "--motion-adapter",
            str(files["mm"]), "--height", "32", "--width", "32", "--frames", "4", "--trajectory", "4,4 20,12",
            "--flow-adapter", str(path), "--out", str(tmp_path / "o.mp4")]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "animatediff.flow_adapter" in err and needle in err


# ---------------------------------------------------------------------------------------
# OnlyFlow's injection: into every temporal attention


def test_attention_adapter_is_identity_at_init_then_steers_the_temporal_attention(parts, motion_unet, tmp_path):
    from zeroshot.trained.inflate import temporal_transformers
    from zeroshot.trained.zoo import base_identity

    adapter = fa.new_flow_adapter(parts["unet"], seed=1, injection="attention", motion_unet=motion_unet)
    sites = adapter.config["sites"]
    assert len(sites) == len(temporal_transformers(motion_unet)) and all(n.count("motion_modules") for n, _, _ in sites)
    x, emb, flow = _inputs(parts)
    model = fa.FlowConditioned(motion_unet, adapter)
    model.flow = flow
    t = torch.tensor([500, 500])
    with torch.no_grad():
        assert float((model(x, t, emb.repeat_interleave(6, 0)).sample - _call(motion_unet, x, emb)).abs().max()) == 0.0
        maps = adapter(flow.flatten(0, 1))
        assert [m.shape[1] for m in maps] == [c for _, c, _ in sites]
    with pytest.raises(ValueError, match="adds no residuals"):
        adapter.residuals(flow.flatten(0, 1))
    plain, with_flow, still = _trained_briefly(parts, motion_unet, model, x, emb, flow)
    assert float((with_flow - plain).abs().max()) > 1e-3
    assert float((with_flow - still).abs().max()) > 1e-3
    assert all(not p.requires_grad for p in motion_unet.parameters())
    model._injection.remove()
    path = fa.save(adapter, tmp_path / "onlyflow.safetensors", base=base_identity(parts["unet"]))
    again = fa.load(path, parts["unet"])
    assert again.injection == "attention" and again.config["sites"] == sites
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), adapter.state_dict().values()))


def test_generate_with_an_attention_adapter(tiny_model, files, tmp_path):
    from zeroshot.generate import generate
    from zeroshot.trained.animatediff import load_motion_adapter
    from zeroshot.trained.zoo import base_identity

    unet = tiny_model.unet
    motion_unet = inflate(unet, load_motion_adapter(files["mm"]))
    zero = fa.save(fa.new_flow_adapter(unet, injection="attention", motion_unet=motion_unet), tmp_path / "z.safetensors",
                   base=base_identity(unet))
    acting = fa.new_flow_adapter(unet, seed=5, injection="attention", motion_unet=motion_unet)
    with torch.no_grad():
        for conv in acting.site_convs:
            conv.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(conv.weight.numel()))
    acting = fa.save(acting, tmp_path / "a.safetensors", base=base_identity(unet))
    plain = generate(tiny_model, "a red circle", _recipe(files["mm"], motion=None), seed=1, progress=False)
    same = generate(tiny_model, "a red circle", _recipe(files["mm"], zero), seed=1, progress=False)
    moved = generate(tiny_model, "a red circle", _recipe(files["mm"], acting), seed=1, progress=False)
    assert float((same.latents - plain.latents).abs().max()) <= 1e-6
    assert float((moved.latents - plain.latents).abs().max()) > 1e-3
    again = generate(tiny_model, "a red circle", _recipe(files["mm"], motion=None), seed=1, progress=False)
    assert torch.equal(again.latents, plain.latents)  # no hook left behind


def test_shapes_v2_ships_a_trained_adapter_found_by_name_in_its_folder(tmp_path, monkeypatch):
    """`--model shapes-v2 --flow-adapter flow_adapter.safetensors` finds the file the model
    ships (a relative name that is not a file here), which fits its UNet and was trained
    (its zero-initialised output convolutions moved); a name in neither place stays an error."""
    from safetensors.torch import load_file

    from zeroshot.models import peek
    from zeroshot.recipe import RecipeError
    from zeroshot.techniques import flow_adapter as technique

    monkeypatch.chdir(tmp_path)  # nothing of that name here
    card = peek("shapes-v2")
    recipe = _recipe("motion_module.safetensors", "flow_adapter.safetensors")
    header = technique.check_inputs(card, recipe)
    assert header["notes"]["world"] == "v2" and header["notes"]["steps"] >= 2000
    path = technique._path(recipe, card)
    assert Path(path) == Path(card.path) / "flow_adapter.safetensors"
    weights = load_file(path)
    outs = [v for k, v in weights.items() if k.startswith(("zero_convs", "mid_conv")) and k.endswith("weight")]
    assert outs and all(float(v.abs().max()) > 0 for v in outs)
    with pytest.raises(RecipeError, match="animatediff.flow_adapter"):
        technique.check_inputs(card, _recipe("motion_module.safetensors", "no_such_adapter.safetensors"))
