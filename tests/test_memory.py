"""Memory options (`zeroshot.memory`): tiled VAE decoding on the families whose VAEs tile,
model CPU offload's wiring (hooks on every component, the model reporting the execution
device, the same frames), and the refusals before any model work."""

import warnings

import pytest
import torch

from zeroshot import memory, models, testing
from zeroshot.generate import generate
from zeroshot.recipe import Recipe


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("family,frames", [("sd", 2), ("wan", 5)])
def test_vae_tiling_decodes_in_tiles_close_to_whole_frames(tmp_path, family, frames):
    """Tiles far smaller than the 64-px frames, so the tiled path really runs. (diffusers'
    CogVideoX tiling needs frames larger than its tiles: at 64 px it returns other sizes.)"""
    model = _quiet(models.load, str(testing.FAMILY_FOLDERS[family](tmp_path / family)))
    method = "t2i" if model.image_model else "video"
    recipe = Recipe(method=method, num_frames=frames, height=64, width=64, num_inference_steps=2)
    whole = generate(model, "a red cat", recipe, progress=False)
    if family == "wan":
        memory.enable_vae_tiling(model, tile_sample_min_height=32, tile_sample_min_width=32,
                                 tile_sample_stride_height=16, tile_sample_stride_width=16)
    else:  # AutoencoderKL's enable_tiling takes no sizes
        memory.enable_vae_tiling(model)
        model.vae.tile_sample_min_size, model.vae.tile_latent_min_size = 32, 32 // model.vae_scale_factor
    assert model.vae.use_tiling
    tiled = generate(model, "a red cat", recipe, latents=whole.latents, progress=False)
    assert tiled.frames.shape == whole.frames.shape
    diff = (tiled.frames - whole.frames).abs()
    assert diff.max() > 0  # another computation ...
    assert diff.mean() < 0.1  # ... of the same frames (random tiny VAEs blend seams coarsely)


def test_offload_hooks_every_component_and_keeps_the_frames(tmp_path):
    model = _quiet(models.load, str(testing.FAMILY_FOLDERS["sd"](tmp_path / "sd")))
    recipe = Recipe(method="t2v-zero", num_frames=3, height=32, width=32, num_inference_steps=2)
    before = generate(model, "a red cat", recipe, progress=False).frames
    memory.enable_offload(model, "cpu")  # the wiring; moving onto a GPU needs one
    assert model.device == torch.device("cpu") and model.execution_device == torch.device("cpu")
    order = memory.offload_order(model)
    assert order[-2] is model.unet and order[-1] is model.vae and order[0] is model.text_encoder
    assert all(hasattr(m, "_hf_hook") for m in order)
    assert torch.equal(generate(model, "a red cat", recipe, progress=False).frames, before)


def test_offload_without_a_gpu_and_tiling_on_svd_are_one_line_before_loading(tmp_path, capsys, monkeypatch):
    from zeroshot.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models.ModelSpec, "load", refuse)
    svd = testing.FAMILY_FOLDERS["svd"](tmp_path / "svd")
    image = str(testing.write_test_image(tmp_path / "in.png"))
    capsys.readouterr()
    for args, needle in ((["--offload"], "CUDA"), (["--model", str(svd), "--image", image, "--vae-tiling"], "tiled")):
        rc = main(["generate", "a red cat", "--out", str(tmp_path / "o.mp4"), "--frames", "4", "--quiet", *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("o*"))
