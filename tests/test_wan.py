"""The `wan` family (Wan 2.1 text-to-video: joint 3-D self-attention, flow matching, time
compressed 4x): parity with diffusers' `WanPipeline` under its UniPC and flow-match Euler
schedulers, the frame counts and sizes it takes, what it refuses in one line before any
model work (Wan 2.2 folders, FreeInit at sigma 1), and noise priors on latent frames."""

import warnings
from dataclasses import replace

import pytest
import torch

from zeroshot import models, testing
from zeroshot.families import Wan
from zeroshot.generate import generate, prepare_recipe
from zeroshot.recipe import Recipe, RecipeError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: testing.build_wan_folder(tmp_path_factory.mktemp(name), scheduler=name) for name in ("unipc", "euler")}


@pytest.fixture(scope="module")
def model(folders):
    return models.load(str(folders["unipc"]))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    "scheduler,frames,size,num_videos,steps,guidance",
    [("unipc", 9, (32, 48), 2, 4, 5.0), ("euler", 5, (32, 32), 1, 3, 1.0)],
)
def test_wan_matches_the_diffusers_pipeline(folders, scheduler, frames, size, num_videos, steps, guidance):
    from diffusers import WanPipeline

    pipe = _quiet(WanPipeline.from_pretrained, str(folders[scheduler]))
    pipe.set_progress_bar_config(disable=True)
    m = models.load(str(folders[scheduler]))
    h, w = size
    shape = m.latent_shape(num_videos, frames, h, w)
    assert shape == (num_videos, 4, (frames - 1) // 4 + 1, h // 8, w // 8)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    theirs = _quiet(
        pipe, ["a red cat"] * num_videos, num_frames=frames, height=h, width=w, num_inference_steps=steps,
        guidance_scale=guidance, latents=latents.clone(), output_type="np",
    ).frames  # b f H W 3
    recipe = Recipe(method="video", num_frames=frames, height=h, width=w, num_inference_steps=steps,
                    guidance_scale=guidance)
    ours = generate(m, "a red cat", recipe, latents=latents, num_videos=num_videos, progress=False)
    ours_np = ours.frames.permute(0, 1, 3, 4, 2).numpy()
    assert ours_np.shape == theirs.shape == (num_videos, frames, h, w, 3)
    assert abs(ours_np - theirs).max() <= 1e-4
    assert abs(ours_np[:, 1:] - ours_np[:, :1]).max() > 1e-3


def test_prompt_padding_is_zero_and_the_prompt_counts(model):
    e = model.encode_prompt(["a red cat", "a blue dog on a green field"])
    assert e.shape == (2, Wan.max_sequence_length, 32)
    lengths = (e.abs().sum(-1) > 0).sum(-1)
    assert lengths[0] < lengths[1] and not e[0, lengths[0]:].any()


def test_the_frames_it_makes_and_the_attention_it_has(model):
    assert [Wan.latent_frames(f) for f in (1, 5, 81)] == [1, 2, 21]
    assert [Wan.decoded_frames(n) for n in (1, 2, 21)] == [1, 5, 81]
    assert model.attention_layers("spatial_self") == []
    cross, joint = model.attention_layers("cross"), model.attention_layers("temporal")
    assert cross and joint and not set(cross) & set(joint)


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(num_frames=8), "nearest 5 or 9"),
        (dict(num_frames=80), "nearest 77 or 81"),
        (dict(width=40), "multiple of 16"),
        (dict(scheduler="ddim"), "own flow-matching scheduler"),
    ],
)
def test_what_wan_cannot_take_is_one_line(model, change, needle):
    recipe = replace(Recipe(method="video", num_frames=5, height=32, width=32, num_inference_steps=2), **change)
    with pytest.raises(RecipeError, match=needle) as info:
        prepare_recipe(model, recipe)
    assert "\n" not in str(info.value)


def test_wan_2_2_folders_are_refused_in_one_line(folders):
    from diffusers import WanPipeline

    pipe = _quiet(WanPipeline.from_pretrained, str(folders["unipc"]))
    pipe.register_to_config(expand_timesteps=True)
    with pytest.raises(models.ModelError, match="expand_timesteps") as info:
        Wan.from_pipeline(pipe)
    assert "\n" not in str(info.value)
    pipe.register_to_config(expand_timesteps=False)
    pipe.register_modules(transformer_2=pipe.transformer)
    with pytest.raises(models.ModelError, match="second") as info:
        Wan.from_pipeline(pipe)
    assert "\n" not in str(info.value)


def test_cli_refuses_a_frame_count_before_loading(folders, refused_before_loading):
    base = ["generate", "a red cat", "--model", str(folders["unipc"]), "--height", "32", "--width", "32"]
    refused_before_loading([*base, "--frames", "12"], "4k+1")
    refused_before_loading([*base, "--frames", "5", "--set", "cross_frame=on"], "3-D attention")
