"""Parity with diffusers' deprecated TextToVideoZeroPipeline on the same tiny components."""

import warnings

import pytest
import torch

from zeroshot import models
from zeroshot.generate import generate
from zeroshot.recipe import CrossFrame, Motion, Recipe
from zeroshot.testing import t2v_zero_reference_noise


def _reference_pipeline(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import TextToVideoZeroPipeline

        pipe = TextToVideoZeroPipeline.from_pretrained(
            str(path), safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)

    def exact_forward_loop(x_t0, t0, t1, generator):
        # Same noise draw as the reference; the exact alphabar ratio instead of its
        # one-index-off product of alphas (the one documented difference we keep).
        from diffusers.utils.torch_utils import randn_tensor

        eps = randn_tensor(x_t0.size(), generator=generator, dtype=x_t0.dtype, device=x_t0.device)
        ac = pipe.scheduler.alphas_cumprod
        a = ac[t1] / ac[t0]
        return torch.sqrt(a) * x_t0 + torch.sqrt(1 - a) * eps

    pipe.forward_loop = exact_forward_loop
    return pipe


@pytest.mark.parametrize("num_frames,steps,guidance", [(8, 50, 7.5), (4, 20, 3.0)])
def test_matches_diffusers_text_to_video_zero(tiny_sd, num_frames, steps, guidance):
    size = 32
    pipe = _reference_pipeline(tiny_sd)
    model = models.load(str(tiny_sd))
    c, s = 4, model.vae_scale_factor
    h = w = size // s
    delta = 512 / w  # one latent pixel per frame, in the reference's 512-px units
    t0, t1 = (44, 47) if steps == 50 else (15, 17)

    theirs = pipe(
        "a red cat",
        video_length=num_frames,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(7),
        motion_field_strength_x=delta,
        motion_field_strength_y=delta,
        t0=t0,
        t1=t1,
        output_type="np",
    ).images  # f H W 3

    latents, renoise_noise = t2v_zero_reference_noise(num_frames, c, h, w, 7)
    # Reference: positive strength moves content up-left in 512-px units -> ours: negative px.
    px = -delta * size / 512
    recipe = Recipe(
        method="t2v-zero",
        num_frames=num_frames,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        cross_frame=CrossFrame(),
        motion=Motion(translate=(px, px), mode="nearest", padding="reflection", t0=t0, t1=t1),
    )
    ours = generate(model, "a red cat", recipe, latents=latents, renoise_noise=renoise_noise, progress=False)
    ours_np = ours.frames[0].permute(0, 2, 3, 1).numpy()
    assert ours_np.shape == theirs.shape
    diff = abs(ours_np - theirs).max()
    assert diff <= 1e-4, f"max |diff| = {diff}"
    # the frames really move and differ (the comparison is not between constant images)
    assert abs(ours_np[1:] - ours_np[:1]).max() > 1e-3
