"""Background smoothing: attention capture, masks, subject tokens and the latent blend."""

import numpy as np
import pytest
import torch

from conftest import randn as _noise
from zeroshot.methods.smoothing import (
    BackgroundSmoothing,
    capture_cross_attention,
    dilate_masks,
    foreground_masks,
    load_mask_video,
    otsu_thresholds,
    propagate,
    smooth_background,
    subject_token_indices,
)
from zeroshot.motion import Translation, warp
from zeroshot.recipe import RecipeError, Smoothing


@pytest.fixture(scope="module")
def parts(tiny_parts):
    return tiny_parts


def _context(parts, prompts):
    tok = parts["tokenizer"](prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        return parts["text_encoder"](tok.input_ids)[0]


def _unet_call(unet, x, ctx):
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=ctx, return_dict=False)[0]


# ---------------------------------------------------------------------------------------
# capture


def test_capture_restores_the_same_processors_and_changes_nothing(parts):
    unet = parts["unet"]
    before = dict(unet.attn_processors)
    x = _noise(3, 4, 8, 8)
    ctx = _context(parts, ["a red circle"] * 3)
    plain = _unet_call(unet, x, ctx)
    with capture_cross_attention(unet, [2, 3], 3, grid=(8, 8)) as store:
        captured = _unet_call(unet, x, ctx)
    assert torch.equal(plain, captured)
    assert store.calls > 0 and store.maps().shape == (1, 3, 8, 8)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    with pytest.raises(RuntimeError, match="boom"), capture_cross_attention(unet, [2], 3, grid=(8, 8)):
        raise RuntimeError("boom")
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_all_tokens_sum_to_one_and_only_the_cond_half_counts(parts):
    unet = parts["unet"]
    f = 2
    x = _noise(f, 4, 8, 8, seed=1)
    cond = _context(parts, ["a red circle on a blue background"] * f)
    uncond = _context(parts, [""] * f)
    with capture_cross_attention(unet, list(range(77)), f, grid=(8, 8)) as store:
        _unet_call(unet, x, cond)
    assert torch.allclose(store.maps(), torch.ones(1, f, 8, 8), atol=1e-5)
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as alone:
        _unet_call(unet, x, cond)
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as guided:
        _unet_call(unet, torch.cat([x, x]), torch.cat([uncond, cond]))
    same = (alone.maps() - guided.maps()).abs().max()
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as uncond_only:
        _unet_call(unet, x, uncond)
    other = (alone.maps() - uncond_only.maps()).abs().max()
    assert same < 1e-6 and other > 100 * same and other > 1e-5


def test_capture_keeps_videos_and_frames_apart(parts):
    unet = parts["unet"]
    f = 2
    x = _noise(2 * f, 4, 8, 8, seed=2)  # (b f) with b = 2
    ctx = torch.cat([_context(parts, ["a red circle"] * f), _context(parts, ["a blue square"] * f)])
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8), num_videos=2) as both:
        _unet_call(unet, x, ctx)
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as second:
        _unet_call(unet, x[f:], ctx[f:])
    assert both.maps().shape == (2, f, 8, 8)
    assert torch.allclose(both.maps()[1], second.maps()[0], atol=1e-5)
    with capture_cross_attention(unet, [2], 3, grid=(8, 8)) as other:
        _unet_call(unet, x, ctx)  # 4 frames is not a batch of 3-frame videos: skipped
    assert other.calls == 0
    with pytest.raises(RuntimeError, match="no cross-attention"):
        other.maps()


def _grid_self_attention(unet, x, ctx, f):
    """Per frame, the head-mean softmax(q k^T) of every 8x8 attn1 input, computed by hand."""
    seen, handles = [], []
    for name, module in unet.named_modules():
        if name.endswith("attn1"):
            handles.append(module.register_forward_pre_hook(lambda m, a: seen.append((m, a[0]))))
    try:
        _unet_call(unet, x, ctx)
    finally:
        for h in handles:
            h.remove()
    mats = []
    for attn, hidden in seen:
        if hidden.shape[1] != 64:
            continue
        q = attn.to_q(hidden).view(f, 64, attn.heads, -1).transpose(1, 2)
        k = attn.to_k(hidden).view(f, 64, attn.heads, -1).transpose(1, 2)
        mats.append(torch.softmax(q @ k.transpose(-1, -2) * attn.scale, -1).mean(1))
    return torch.stack(mats).mean(0)  # f n n


def test_capture_records_each_frames_own_self_attention_whatever_the_processor(parts):
    from zeroshot.hooks import cross_frame_attention

    unet = parts["unet"]
    f = 3
    x = _noise(f, 4, 8, 8, seed=4)
    ctx = _context(parts, ["a red circle"] * f)
    with torch.no_grad():
        expected = _grid_self_attention(unet, x, ctx, f)
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as plain:
        _unet_call(unet, x, ctx)
    assert plain.self_calls > 0 and plain.affinity.shape == (1, f, 64, 64)
    mean = plain.affinity[0] / plain.self_calls
    assert torch.allclose(mean, expected, atol=1e-5)
    assert torch.allclose(mean.sum(-1), torch.ones(f, 64), atol=1e-5)
    # cross-frame attention installed inside or outside the capture: the same per-frame affinity
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as outer, cross_frame_attention(unet, f):
        _unet_call(unet, x, ctx)
    with cross_frame_attention(unet, f), capture_cross_attention(unet, [2, 3], f, grid=(8, 8)) as inner:
        _unet_call(unet, x, ctx)
    assert torch.allclose(outer.affinity, inner.affinity, atol=1e-6)
    assert torch.allclose(outer.maps(), inner.maps(), atol=1e-6)
    assert not torch.allclose(outer.affinity, plain.affinity, atol=1e-4)  # frames 1.. see other inputs
    assert torch.allclose(outer.affinity[0, 0], plain.affinity[0, 0], atol=1e-5)  # the anchor does not
    # refine=0 records no self-attention; refine=1 is one propagation of the same map
    with capture_cross_attention(unet, [2, 3], f, grid=(8, 8), refine=0) as raw:
        _unet_call(unet, x, ctx)
    assert raw.affinity is None and raw.self_calls == 0
    assert torch.allclose(plain.maps(), propagate(raw.maps(), mean[None], 1), atol=1e-6)
    assert not torch.allclose(plain.maps(), raw.maps(), atol=1e-4)


def test_capture_removes_its_hooks_even_on_error(parts):
    unet = parts["unet"]
    with pytest.raises(RuntimeError, match="boom"), capture_cross_attention(unet, [2], 2, grid=(8, 8)):
        assert any(m._forward_pre_hooks for n, m in unet.named_modules() if n.endswith("attn1"))
        raise RuntimeError("boom")
    assert not any(m._forward_pre_hooks for m in unet.modules())
    with pytest.raises(ValueError, match="refine"), capture_cross_attention(unet, [2], 2, grid=(8, 8), refine=-1):
        pass


def test_propagate_evens_a_map_out_inside_each_group():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 2, 4, 4, generator=g)
    a = torch.rand(1, 2, 16, 16, generator=g)
    a = a / a.sum(-1, keepdim=True)  # row-stochastic
    assert torch.equal(propagate(maps, a, 0), maps)
    flat = torch.full((1, 2, 4, 4), 0.3)
    assert torch.allclose(propagate(flat, a, 3), flat)  # a constant map stays constant
    # two groups of cells (left and right half) that attend uniformly within themselves
    left = (torch.arange(16) % 4 < 2).float()
    block = torch.outer(left, left) / left.sum() + torch.outer(1 - left, 1 - left) / (1 - left).sum()
    out = propagate(maps, block.expand(1, 2, 16, 16), 1)
    for k in range(2):
        m = maps[0, k].flatten()
        expect = torch.where(left > 0, m[left > 0].mean(), m[left == 0].mean())
        assert torch.allclose(out[0, k].flatten(), expect, atol=1e-6)
    assert torch.allclose(propagate(maps, a, 2), propagate(propagate(maps, a, 1), a, 1))
    with pytest.raises(ValueError, match="affinity"):
        propagate(maps, a[:, :1], 1)
    with pytest.raises(ValueError, match="steps"):
        propagate(maps, a, -1)


# ---------------------------------------------------------------------------------------
# masks


def test_otsu_splits_two_modes():
    g = torch.Generator().manual_seed(0)
    low = 0.2 + 0.03 * torch.randn(400, generator=g)
    high = 0.7 + 0.03 * torch.randn(100, generator=g)
    thr = otsu_thresholds(torch.cat([low, high])[None])[0].item()
    assert low.max() < thr < high.min()
    assert abs(thr - (low.max() + high.min()).item() / 2) < 0.01  # the middle of the gap


def test_foreground_masks_find_a_blob_and_dilate():
    h = w = 24
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = (yy - 10) ** 2 + (xx - 14) ** 2 <= 16
    maps = disc.float() * 0.8 + 0.1 + 0.02 * _noise(h, w, seed=3)
    maps = torch.stack([maps, maps.roll(3, dims=1)])[None]  # (1, 2, h, w), second frame moved
    fg = foreground_masks(maps, dilate=0)
    assert torch.equal(fg[0, 0], disc) and torch.equal(fg[0, 1], disc.roll(3, dims=1))
    grown = foreground_masks(maps, dilate=5)
    assert torch.equal(grown, dilate_masks(fg, 5))
    assert grown.sum() > fg.sum() and torch.all(grown[fg])
    assert grown[0, 0, 10, 14 + 4 + 2] and not grown[0, 0, 10, 14 + 4 + 3]  # radius 4, +2 cells
    assert foreground_masks(torch.full((1, 1, 8, 8), 0.3)).sum() == 0


def test_dilate_even_kernel_and_identity():
    m = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    m[0, 0, 4, 4] = True
    assert torch.equal(dilate_masks(m, 1), m)
    assert dilate_masks(m, 4).sum() == 16 and dilate_masks(m, 3).sum() == 9
    assert dilate_masks(m, 4)[0, 0, 2:6, 2:6].all()  # an even square reaches further up and left


@pytest.mark.parametrize("size", range(1, 9))
def test_dilate_is_the_max_over_the_anchored_square(size):
    """kornia's dilation equals the max over the window [i - (size-1)//2, i + size//2] in
    each axis, cells outside the frame being background (a zero-padded max-pool)."""
    g = torch.Generator().manual_seed(size)
    masks = torch.rand(2, 3, 11, 13, generator=g) < 0.06
    masks[0, 0] = False
    masks[0, 1] = True
    before, after = (size - 1) // 2, size // 2
    padded = torch.nn.functional.pad(masks.reshape(6, 1, 11, 13).float(), (before, after, before, after))
    expected = torch.nn.functional.max_pool2d(padded, size, stride=1).reshape(2, 3, 11, 13) > 0.5
    assert torch.equal(dilate_masks(masks, size), expected)


def test_subject_token_indices(parts):
    tok = parts["tokenizer"]
    assert subject_token_indices(tok, "a red circle on a blue background") == [2, 3]
    assert subject_token_indices(tok, "the cat with a dog") == [2]
    assert subject_token_indices(tok, "red") == [1]
    assert subject_token_indices(tok, "a the") == [1, 2]  # nothing but stopwords: all of it
    with pytest.raises(RecipeError, match="mask_video"):
        subject_token_indices(tok, "  ")


def test_load_mask_video(tmp_path):
    import cv2

    for k in range(3):
        img = np.zeros((32, 32, 3), np.uint8)
        img[8:24, 4 + 4 * k : 20 + 4 * k] = 255
        cv2.imwrite(str(tmp_path / f"{k:02d}.png"), img)
    masks = load_mask_video(tmp_path, 3, (8, 8))
    assert masks.shape == (3, 8, 8) and masks.dtype == torch.bool
    assert masks[0, 2:6, 1:5].all() and masks[0].sum() == 16 and masks[2, 2:6, 3:7].all()
    with pytest.raises(RecipeError, match="num_frames=4"):
        load_mask_video(tmp_path, 4, (8, 8))
    with pytest.raises(RecipeError, match="smoothing.mask_video"):
        load_mask_video(tmp_path / "missing.mp4", 2, (8, 8))


# ---------------------------------------------------------------------------------------
# the blend


def _reference_blend(x, fg, field, strength, H, W):
    """The official code's formula, frame by frame (no batching)."""
    b, _, f, h, w = x.shape
    flow = field.flow(f, H, W, grid=(h, w))
    a = 1 - strength
    out = x.clone()
    for i in range(b):
        m0 = fg[i, 0].float()
        for k in range(1, f):
            fk = flow[k : k + 1]
            moved_mask = warp(m0[None, None], fk, scale=(H / h, W / w))[0, 0]
            moved_bg = warp((x[i, :, 0] * (1 - m0))[None], fk, scale=(H / h, W / w))[0]
            bg = (1 - fg[i, k].float()) * (1 - moved_mask)
            out[i, :, k] = (1 - bg) * x[i, :, k] + bg * (a * x[i, :, k] + (1 - a) * moved_bg)
    return out


def test_smooth_background_matches_the_formula():
    b, c, f, h, w, H, W = 2, 4, 4, 12, 12, 48, 48
    x = _noise(b, c, f, h, w, seed=4)
    fg = torch.zeros(b, f, h, w, dtype=torch.bool)
    for k in range(f):
        fg[:, k, 3:7, 2 + k : 6 + k] = True
    field = Translation(4.0, 0.0)  # one latent cell per frame
    out = smooth_background(x, fg, field.flow(f, H, W, grid=(h, w)), scale=(4, 4), strength=0.6)
    assert torch.allclose(out, _reference_blend(x, fg, field, 0.6, H, W), atol=1e-6)
    assert torch.equal(out[:, :, 0], x[:, :, 0])
    # the foreground of every frame is untouched, the background changed
    fg5 = fg[:, None].expand_as(x)
    assert torch.equal(out[fg5], x[fg5]) and not torch.equal(out[~fg5], x[~fg5])


def test_smooth_background_limits():
    b, c, f, h, w = 1, 4, 3, 8, 8
    x = _noise(b, c, f, h, w, seed=5)
    flow = torch.zeros(f, 2, h, w)
    none = torch.zeros(b, f, h, w, dtype=torch.bool)
    assert torch.equal(smooth_background(x, none, flow, scale=1, strength=0.0), x)
    assert torch.equal(smooth_background(x, ~none, flow, scale=1, strength=1.0), x)
    full = smooth_background(x, none, flow, scale=1, strength=1.0)  # all background, still camera
    assert torch.allclose(full, x[:, :, :1].expand_as(x))
    with pytest.raises(ValueError, match="strength"):
        smooth_background(x, none, flow, scale=1, strength=1.5)


def test_background_smoothing_step_with_attention_masks(parts):
    from zeroshot.sampling import guided_eps_fn

    unet = parts["unet"]
    f = 3
    cond = _context(parts, ["a red circle on a blue background"])
    uncond = _context(parts, [""])
    eps_fn = guided_eps_fn(unet, cond, uncond, 3.0)
    calls = []

    def denoise_fn(x):
        calls.append(x.shape)
        return eps_fn(x, torch.tensor(500))

    before = dict(unet.attn_processors)
    x_T = _noise(1, 4, f, 8, 8, seed=6)
    field = Translation(4.0, 0.0)
    flow = field.flow(f, 32, 32, grid=(8, 8))
    step = BackgroundSmoothing(
        Smoothing(strength=0.6, dilate=1),
        unet=unet,
        denoise_fn=denoise_fn,
        token_indices=[2, 3],
        field=field,
        height=32,
        width=32,
    )
    out = step(x_T)
    assert calls == [(1, 4, f, 8, 8)]
    assert step.foreground.shape == (1, f, 8, 8) and 0 < step.foreground.sum() < step.foreground.numel()
    assert torch.allclose(out, smooth_background(x_T, step.foreground, flow, scale=(4, 4), strength=0.6))
    assert all(unet.attn_processors[k] is before[k] for k in before)


def test_background_smoothing_step_with_a_mask_video(tmp_path, parts):
    import cv2

    for k in range(2):
        img = np.zeros((32, 32), np.uint8)
        img[8:16, 8:16] = 255
        cv2.imwrite(str(tmp_path / f"{k}.png"), img)

    def never(x):
        raise AssertionError("no attention pass is needed with a mask video")

    step = BackgroundSmoothing(
        Smoothing(mask_video=str(tmp_path), dilate=3),
        unet=parts["unet"],
        denoise_fn=never,
        token_indices=[2],
        field=Translation(0.0, 0.0),
        height=32,
        width=32,
    )
    step(_noise(2, 4, 2, 8, 8))
    assert step.foreground.shape == (2, 2, 8, 8) and step.foreground[0, 0].sum() == 16


# ---------------------------------------------------------------------------------------
# inside generate()


def test_generate_with_smoothing(tiny_sd):
    from zeroshot.generate import generate
    from zeroshot.models import load
    from zeroshot.recipe import apply_override, get_method

    model = load(str(tiny_sd))
    before = dict(model.unet.attn_processors)
    recipe = get_method("t2v-zero")
    for key, value in (("num_frames", 3), ("num_inference_steps", 4), ("height", 32), ("width", 32)):
        recipe = apply_override(recipe, key, value)
    prompt = "a red circle on a blue background"
    plain = generate(model, prompt, recipe, seed=1, progress=False)
    off = generate(model, prompt, apply_override(recipe, "smoothing.strength", 0.0), seed=1, progress=False)
    assert torch.equal(plain.latents, off.latents)  # strength 0 is the identity blend
    strong = apply_override(apply_override(recipe, "smoothing.strength", 1.0), "smoothing.dilate", 0)
    on = generate(model, prompt, strong, seed=1, progress=False)
    assert not torch.equal(on.latents, plain.latents)
    assert all(model.unet.attn_processors[k] is before[k] for k in before)
    with pytest.raises(RecipeError, match="smoothing needs motion"):
        generate(model, prompt, apply_override(apply_override(recipe, "smoothing", "on"), "motion", "off"), progress=False)
