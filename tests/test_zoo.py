"""The model zoo's temporal designs (zeroshot.trained.zoo): identity at init, frame mixing
once trained, files, the ModelScope export, the trainer and generation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import randn
from zeroshot.trained import zoo

FRAMES = 5


@pytest.fixture(scope="module")
def unet(tiny_parts):
    return tiny_parts["unet"]


@pytest.fixture(scope="module")
def shapes_unet():
    from diffusers import UNet2DConditionModel

    from zeroshot.trained.train_motion import EMBEDDED_MODEL

    return UNet2DConditionModel.from_pretrained(str(EMBEDDED_MODEL), subfolder="unet").eval()


def _inputs(unet, seed=0, frames=FRAMES):
    size = unet.config.sample_size
    x = randn(2, 4, frames, size, size, seed=seed)
    emb = randn(2, 77, unet.config.cross_attention_dim, seed=seed + 1)
    return x, emb, torch.tensor([700, 30])


def _video(model, x, t, emb):
    return model(x, t, encoder_hidden_states=emb.repeat_interleave(x.shape[2], 0)).sample


def _per_frame(unet, x, t, emb):
    return torch.stack([unet(x[:, :, i], t, encoder_hidden_states=emb).sample for i in range(x.shape[2])], 2)


def _perturbed(model, scale=0.1, seed=0):
    """The model with every trainable tensor moved off its initial value (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in zoo.trainable_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


# ---------------------------------------------------------------------------------------
# identity at init


@pytest.mark.parametrize("base", ["tiny", "shapes"])
@pytest.mark.parametrize("design", zoo.DESIGNS)
@torch.no_grad()
def test_every_design_is_the_per_frame_image_model_at_init(design, base, unet, request):
    image = unet if base == "tiny" else request.getfixturevalue("shapes_unet")
    before = {k: v.clone() for k, v in image.state_dict().items()}
    ids = [id(p) for p in image.parameters()]
    model = zoo.inflate(image, design, seed=1)
    x, emb, t = _inputs(image)
    out = _video(model, x, t, emb)
    assert out.shape == x.shape
    assert float((out - _per_frame(image, x, t, emb)).abs().max()) <= 1e-5
    # the given UNet is untouched and only the temporal layers are trainable
    assert [id(p) for p in image.parameters()] == ids
    assert all(torch.equal(before[k], v) for k, v in image.state_dict().items())
    trainable = {id(p) for p in zoo.trainable_parameters(model)}
    assert trainable and not trainable & set(ids)
    frozen = [p for p in model.parameters() if id(p) not in trainable]
    assert frozen and all(not p.requires_grad for p in frozen)


@torch.no_grad()
def test_video_ldm_takes_widths_32_groups_do_not_divide():
    """The v2 shapes model is 48 channels wide: Video LDM's temporal resnets normalise in the
    largest group count under 32 that divides the width (24), and are still the identity."""
    from diffusers import UNet2DConditionModel

    from zeroshot.trained.train_motion import EMBEDDED_MODEL_V2
    from zeroshot.trained.zoo.layers import TemporalResnet, norm_groups

    from diffusers.models.resnet import TemporalResnetBlock

    from zeroshot.trained.zoo.layers import TemporalResnetBlock as Ours

    assert norm_groups(320) == 32 and norm_groups(48) == 24 and norm_groups(7) == 7
    # at widths 32 divides, the block is diffusers' exactly (the shipped v1 weights load into it)
    theirs, ours = TemporalResnetBlock(64, 64, 16).eval(), Ours(64, 16).eval()
    ours.load_state_dict(theirs.state_dict())
    v, temb = randn(2, 64, 5, 3, 3, seed=3), randn(2, 5, 16, seed=4)
    assert torch.allclose(ours(v, temb), theirs(v, temb), atol=1e-6)
    image = UNet2DConditionModel.from_pretrained(str(EMBEDDED_MODEL_V2), subfolder="unet").eval()
    model = zoo.inflate(image, "video-ldm", seed=1)
    groups = {m.block.norm1.num_groups for m in model.modules() if isinstance(m, TemporalResnet)}
    assert 24 in groups
    x, emb, t = _inputs(image)
    assert float((_video(model, x, t, emb) - _per_frame(image, x, t, emb)).abs().max()) <= 1e-5


@pytest.mark.parametrize("design", zoo.DESIGNS)
@torch.no_grad()
def test_every_design_mixes_frames_once_trained(design, unet):
    model = _perturbed(zoo.inflate(unet, design, seed=0))
    x, emb, t = _inputs(unet)
    out = _video(model, x, t, emb)
    assert float((out - _per_frame(unet, x, t, emb)).abs().max()) > 1e-3  # the layers act
    moved = x.clone()
    moved[:, :, 0] += 1.0
    changed = _video(model, moved, t, emb)
    assert float((changed[:, :, 3] - out[:, :, 3]).abs().max()) > 1e-5  # frame 0 reaches frame 3
    if design == "magicvideo":  # directed attention: no frame sees a later one
        late = x.clone()
        late[:, :, -1] += 1.0
        assert torch.allclose(_video(model, late, t, emb)[:, :, :-1], out[:, :, :-1], atol=1e-6)


@pytest.mark.parametrize("design", [d for d in zoo.DESIGNS if d != "animatediff"])
@torch.no_grad()
def test_temporal_off_makes_frames_independent(design, unet):
    model = _perturbed(zoo.inflate(unet, design))
    x, emb, t = _inputs(unet)
    moved = x.clone()
    moved[:, :, 0] += 1.0
    with zoo.temporal_off(model):
        a, b = _video(model, x, t, emb), _video(model, moved, t, emb)
    assert torch.allclose(a[:, :, 1:], b[:, :, 1:], atol=1e-6)
    assert model.frames.temporal  # restored


@torch.no_grad()
def test_a_copied_zoo_model_is_independent(unet):
    model = zoo.inflate(unet, "lavie")
    twin = _perturbed(copy.deepcopy(model))
    x, emb, t = _inputs(unet)
    ref = _per_frame(unet, x, t, emb)
    assert float((_video(model, x, t, emb) - ref).abs().max()) <= 1e-5
    assert float((_video(twin, x, t, emb) - ref).abs().max()) > 1e-3


def test_seeded_init_leaves_the_global_rng_alone(unet):
    state = torch.random.get_rng_state()
    a, b = zoo.inflate(unet, "lvdm", seed=3), zoo.inflate(unet, "lvdm", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb = zoo.trainable_state(a), zoo.trainable_state(b)
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_bad_designs_and_options_are_one_line_errors(unet):
    with pytest.raises(ValueError, match="unknown design 'sora'; designs: animatediff, vdm, ") as err:
        zoo.inflate(unet, "sora")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="has no option window; its options: heads"):
        zoo.inflate(unet, "lavie", window=3)
    with pytest.raises(ValueError, match="heads=3 must divide"):
        zoo.inflate(unet, "vdm", heads=3)


# ---------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("design", zoo.DESIGNS)
@torch.no_grad()
def test_module_files_round_trip_and_record_their_design(design, unet, tmp_path):
    model = _perturbed(zoo.inflate(unet, design))
    path = zoo.save(model, tmp_path / f"{design}.safetensors")
    header = zoo.read_header(path)
    assert header["design"] == design and header["base"] == zoo.base_identity(unet)
    loaded = zoo.load(path, unet)
    x, emb, t = _inputs(unet)
    assert torch.allclose(_video(loaded, x, t, emb), _video(model, x, t, emb), atol=1e-6)
    other = "lavie" if design != "lavie" else "vdm"
    with pytest.raises(ValueError, match=f"holds a '{design}' module, not '{other}'"):
        zoo.load(path, unet, design=other)


def test_a_module_for_another_base_fails_before_model_work(unet, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    path = zoo.save(zoo.inflate(unet, "lavie"), tmp_path / "m.safetensors")
    other = UNet2DConditionModel(**{**unet.config, "cross_attention_dim": 16})
    monkeypatch.setattr(zoo, "inflate", lambda *a, **k: pytest.fail("inflated before the check"))
    with pytest.raises(ValueError, match="trained on another base model") as err:
        zoo.load(path, other)
    assert "\n" not in str(err.value)
    # the check reads only the base's config.json
    config = json.loads(json.dumps(dict(unet.config), default=list))
    assert zoo.check_file(path, config)["design"] == "lavie"
    with pytest.raises(ValueError, match="another base"):
        zoo.check_file(path, {**config, "block_out_channels": [16, 32]})


def test_an_animatediff_file_is_also_a_motion_adapter(unet, tmp_path):
    from zeroshot.trained.animatediff import load_motion_adapter, save_motion_adapter

    model = zoo.inflate(unet, "animatediff", max_seq_length=8)
    path = zoo.save(model, tmp_path / "ad.safetensors")
    assert load_motion_adapter(path).config.motion_max_seq_length == 8
    # an adapter file from before the zoo reads as animatediff with an unknown base
    old = save_motion_adapter(model, tmp_path / "old.safetensors")
    assert zoo.read_header(old) == {"design": "animatediff", "options": {}, "base": None}


# ---------------------------------------------------------------------------------------
# ModelScope: exact export to UNet3DConditionModel


def _uniform_head_unet():
    """A tiny SD-style UNet whose spatial heads all have size 8 (as SD 2.x's all have 64)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(4, 8),
            norm_num_groups=8,
            sample_size=8,
        ).eval()


@torch.no_grad()
def test_modelscope_exports_exactly_and_loads_through_the_unet3d_family(tiny_parts, tmp_path):
    from zeroshot import models
    from zeroshot.families import UNet3D
    from zeroshot.trained.zoo.modelscope import save_pipeline

    unet = _uniform_head_unet()
    model = _perturbed(zoo.inflate(unet, "modelscope"), scale=0.05)
    x, emb, t = _inputs(unet)
    ours = _video(model, x, t, emb)
    folder = save_pipeline(model, tiny_parts, tmp_path / "modelscope")
    loaded = models.load(str(folder))
    assert isinstance(loaded, UNet3D)
    theirs = loaded.forward(x, t, {"prompt_embeds": emb})
    assert float((ours - theirs).abs().max()) <= 1e-5
    assert float((ours - _per_frame(unet, x, t, emb)).abs().max()) > 1e-3  # the temporal layers matter


def test_modelscope_refuses_what_unet3d_cannot_express(unet):
    from zeroshot.trained.zoo.modelscope import export_unet3d

    with pytest.raises(ValueError, match="one attention head size for every level; this base has \\[4, 8\\]"):
        export_unet3d(zoo.inflate(unet, "modelscope"))
    with pytest.raises(ValueError, match="only the modelscope design exports"):
        export_unet3d(zoo.inflate(unet, "lavie"))


# ---------------------------------------------------------------------------------------
# training


def _config(tmp_path, design, **kw):
    from zeroshot.trained.train_motion import TrainConfig

    base = dict(out=str(tmp_path / f"{design}.safetensors"), checkpoint=str(tmp_path / f"{design}.pt"), steps=3,
                batch_size=1, frames=(4,), warmup=1, save_every=0, design=design)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("design", ["vdm", "simda", "video-ldm"])
def test_training_moves_only_the_temporal_layers(design, tiny_parts, tmp_path):
    from zeroshot.trained.train_motion import train

    before = {k: v.clone() for k, v in tiny_parts["unet"].state_dict().items()}
    result = train(_config(tmp_path, design, joint_images=0.5 if design == "simda" else 0.0),
                   components=tiny_parts, progress=False)
    assert len(result["losses"]) == 3 and all(map(torch.isfinite, map(torch.tensor, result["losses"])))
    model = result["motion_unet"]
    assert all(torch.equal(before[k], v) for k, v in model.image.state_dict().items())
    assert any(float(v.abs().max()) > 0 for k, v in zoo.trainable_state(model).items() if "to_out" in k or "up." in k)
    assert zoo.read_header(tmp_path / f"{design}.safetensors")["design"] == design


def test_training_resumes_only_its_own_design(tiny_parts, tmp_path):
    from zeroshot.trained.train_motion import train

    train(_config(tmp_path, "lavie", steps=1), components=tiny_parts, progress=False)
    with pytest.raises(ValueError, match="trains design 'lavie', not 'lvdm'"):
        train(_config(tmp_path, "lvdm", checkpoint=str(tmp_path / "lavie.pt")), components=tiny_parts, progress=False)


def test_train_cli_lists_designs_and_refuses_unknown_ones(capsys, tmp_path):
    from zeroshot.trained.train_motion import main

    assert main(["--design", "list"]) == 0
    assert capsys.readouterr().out.split() == list(zoo.DESIGNS)
    with pytest.raises(SystemExit) as exit_:
        main(["--design", "sora"])
    assert exit_.value.code == 2
    assert "unknown design 'sora'; designs: animatediff" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--design", "lavie", "--option", "window=2"])
    assert "has no option window" in capsys.readouterr().err


def test_train_cli_writes_a_loadable_module(tiny_sd, tmp_path):
    from diffusers import UNet2DConditionModel

    from zeroshot.trained.train_motion import main

    out = tmp_path / "walt.safetensors"
    argv = ["--design", "walt", "--option", "window_size=2", "--model", str(tiny_sd), "--out", str(out),
            "--checkpoint", "", "--steps", "1", "--batch-size", "1", "--frames", "3"]
    assert main(argv) == 0
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd), subfolder="unet")
    model = zoo.load(out, unet)
    assert model.design == "walt" and model.options["window_size"] == 2


# ---------------------------------------------------------------------------------------
# generation


def _recipe(path, **kw):
    from dataclasses import replace

    from zeroshot.recipe import METHODS, AnimateDiff

    base = {"num_frames": 4, "height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 4.0}
    return replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=str(path)), **{**base, **kw})


@torch.no_grad()
def test_generate_with_a_zoo_module(tiny_model, tmp_path):
    from dataclasses import replace

    from zeroshot.generate import generate

    zero = zoo.save(zoo.inflate(tiny_model.unet, "lavie"), tmp_path / "zero.safetensors")
    trained = zoo.save(_perturbed(zoo.inflate(tiny_model.unet, "lavie")), tmp_path / "trained.safetensors")
    recipe = _recipe(zero)
    video = generate(tiny_model, "a red circle", recipe, seed=1, progress=False)
    image = generate(tiny_model, "a red circle", replace(recipe, method="t2i", animatediff=None), seed=1, progress=False)
    assert video.frames.shape == (1, 4, 3, 32, 32)
    assert float((video.latents - image.latents).abs().max()) <= 1e-4
    moved = generate(tiny_model, "a red circle", _recipe(trained), seed=1, progress=False)
    assert float((moved.latents - image.latents).abs().max()) > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("design", ["lavie", "animatediff"])
def test_motion_free_guidance(tiny_model, tmp_path, design):
    """GenTron's motion-free guidance: at s_M = 0 it is the image model with plain guidance
    (the per-frame t2i video); at s_M = 1 the motion term is the full video prediction, so
    the temporal layers act; an untrained module (the identity) leaves every s_M at plain
    guidance."""
    from dataclasses import replace

    from zeroshot.generate import generate
    from zeroshot.recipe import RecipeError

    def module(model):
        if design == "animatediff":
            from zeroshot.trained.inflate import temporal_transformers

            for m in temporal_transformers(model):
                torch.nn.init.normal_(m.proj_out.weight, std=0.2, generator=torch.Generator().manual_seed(3))
            return model
        return _perturbed(model)

    zero = zoo.save(zoo.inflate(tiny_model.unet, design), tmp_path / "zero.safetensors")
    trained = zoo.save(module(zoo.inflate(tiny_model.unet, design)), tmp_path / "trained.safetensors")

    def run(path, scale, **kw):
        recipe = _recipe(path, **kw)
        recipe = replace(recipe, animatediff=replace(recipe.animatediff, motion_free_scale=scale))
        return generate(tiny_model, "a red circle", recipe, seed=1, progress=False).latents

    image = generate(tiny_model, "a red circle", replace(_recipe(zero), method="t2i", animatediff=None), seed=1,
                     progress=False).latents
    plain = run(trained, None)
    assert float((run(trained, 0.0) - image).abs().max()) <= 1e-4  # the temporal layers off: per-frame t2i
    assert float((run(trained, 0.0, guidance_scale=1.0) - replace_t2i(tiny_model, zero, 1.0)).abs().max()) <= 1e-4
    assert float((run(trained, 1.0) - image).abs().max()) > 1e-3  # motion on: they act
    assert float((run(trained, 1.0) - plain).abs().max()) > 1e-4  # and differ from plain guidance
    assert float((run(zero, 2.5) - run(zero, None)).abs().max()) <= 1e-4  # identity module: no motion term
    with pytest.raises(RecipeError, match="motion_free_scale must be >= 0"):
        run(trained, -1.0)


def replace_t2i(tiny_model, path, guidance):
    from dataclasses import replace

    from zeroshot.generate import generate

    recipe = replace(_recipe(path), method="t2i", animatediff=None, guidance_scale=guidance)
    return generate(tiny_model, "a red circle", recipe, seed=1, progress=False).latents


def test_generate_cli_refuses_a_module_for_another_base(tiny_sd, tmp_path, capsys, monkeypatch):
    from diffusers import UNet2DConditionModel

    from zeroshot import models
    from zeroshot.cli import main

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd), subfolder="unet")
    other = UNet2DConditionModel(**{**unet.config, "cross_attention_dim": 16})
    path = zoo.save(zoo.inflate(other, "vdm"), tmp_path / "other.safetensors")
    monkeypatch.setattr(models.ModelSpec, "load", lambda self: pytest.fail("loaded the model before the check"))
    code = main(["generate", "a red circle", "--model", str(tiny_sd), "--method", "animatediff",
                 "--motion-adapter", str(path), "--frames", "4", "--steps", "1", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "trained on another base model" in err and len(err.strip().splitlines()) == 1


def test_modelscope_export_cli(tiny_sd, tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    from zeroshot.trained.zoo.modelscope import main

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd), subfolder="unet")
    path = zoo.save(zoo.inflate(unet, "lavie"), tmp_path / "lavie.safetensors")
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--model", str(tiny_sd), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "holds a 'lavie' module, not 'modelscope'" in capsys.readouterr().err
    path = zoo.save(zoo.inflate(unet, "modelscope"), tmp_path / "ms.safetensors")
    with pytest.raises(SystemExit):  # the tiny base has head sizes 4 and 8: no exact export
        main([str(path), "--model", str(tiny_sd), "--out", str(tmp_path / "out")])
    assert "one attention head size for every level" in capsys.readouterr().err


@pytest.mark.parametrize("design", ["modelscope", "video-ldm"])
def test_the_shipped_zoo_modules_fit_the_v1_model_and_move_it(design):
    """The two designs shipped (docs/zoo.md: the closest to the training motion at equal budget)
    record their design and the v1 base, are refused by the v2 model's UNet, and generate on the
    v1 model a video that is not its per-frame image (4 steps, 4 frames)."""
    from dataclasses import replace

    from zeroshot.generate import generate
    from zeroshot.models import load
    from zeroshot.recipe import METHODS, AnimateDiff
    from zeroshot.trained.animatediff import WEIGHTS_DIR

    path = WEIGHTS_DIR / f"shapes_{design}.safetensors"
    assert path.is_file() and path.stat().st_size <= 10 * 2**20
    model = load("shapes")
    assert zoo.check_file(path, model.unet, design=design)["design"] == design
    with pytest.raises(ValueError, match="another base model"):
        zoo.check_file(path, load("shapes-v2").unet)
    recipe = replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=str(path)), num_frames=4,
                     num_inference_steps=4)
    video = generate(model, "a red circle on a blue background", recipe, seed=0, progress=False)
    image = generate(model, "a red circle on a blue background", replace(recipe, method="t2i", animatediff=None),
                     seed=0, progress=False)
    assert torch.isfinite(video.latents).all()
    assert float((video.latents - image.latents).abs().max()) > 1e-2
