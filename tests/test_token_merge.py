"""Token merging on spatial self-attention (zeroshot.techniques.token_merge): ratio 0 is the
unmerged run exactly, merge/unmerge are exact on tokens equal within a cell, it composes
with cross-frame attention and chunks, processors are restored, refusals are one line."""

from dataclasses import replace

import pytest
import torch

from zeroshot.generate import generate
from zeroshot.recipe import Chunks, CrossFrame, Motion, Recipe, RecipeError, TokenMerge, validate
from zeroshot.techniques.token_merge import bipartite_soft_matching, token_grid

RECIPE = Recipe(method="t2v-zero", num_frames=5, height=32, width=32, num_inference_steps=4, guidance_scale=3.0,
                cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))


def test_ratio_zero_is_the_unmerged_run_exactly(tiny_model):
    plain = generate(tiny_model, "a red cat", RECIPE, num_videos=2, progress=False)
    merged = generate(tiny_model, "a red cat", replace(RECIPE, token_merge=TokenMerge(ratio=0.0)), num_videos=2,
                      progress=False)
    assert torch.equal(plain.latents, merged.latents)


def test_merge_unmerge_on_blocky_tokens_is_exact():
    g = torch.Generator().manual_seed(0)
    cells = torch.randn(3, 4, 5, 8, generator=g)  # B, h/2, w/2, C: one token per 2x2 cell
    x = cells.repeat_interleave(2, 1).repeat_interleave(2, 2).reshape(3, 8 * 10, 8)  # B N C on an 8x10 grid
    merge, unmerge = bipartite_soft_matching(x, (8, 10), r=60, stride=2)  # every source equals its cell's dst
    merged = merge(x)
    assert merged.shape == (3, 20, 8)
    assert torch.allclose(unmerge(merged), x, atol=1e-6)
    merge, unmerge = bipartite_soft_matching(x, (8, 10), r=30, stride=2)
    assert merge(x).shape == (3, 50, 8) and torch.allclose(unmerge(merge(x)), x, atol=1e-6)


def test_unmerged_tokens_pass_through_and_r_is_capped():
    x = torch.randn(2, 36, 4)
    merge, unmerge = bipartite_soft_matching(x, (6, 6), r=0)
    assert torch.equal(unmerge(merge(x)), x)
    merge, _ = bipartite_soft_matching(x, (6, 6), r=1000)  # at most the 27 sources
    assert merge(x).shape == (2, 9, 4)
    assert token_grid(64, (16, 16)) == (2, (8, 8)) and token_grid(256, (16, 16)) == (1, (16, 16))


def test_merging_composes_with_cross_frame_attention_and_chunks(tiny_model):
    unet = tiny_model.unet
    processors = dict(unet.attn_processors)
    recipe = replace(RECIPE, num_frames=7, token_merge=TokenMerge(ratio=0.5))
    plain = generate(tiny_model, "a red cat", replace(recipe, token_merge=None), num_videos=2, progress=False).frames
    merged = generate(tiny_model, "a red cat", recipe, num_videos=2, progress=False).frames
    assert dict(unet.attn_processors) == processors
    chunked = generate(tiny_model, "a red cat", replace(recipe, chunks=Chunks(3)), num_videos=2,
                       progress=False).frames
    assert (merged - chunked).abs().max() <= 1e-5
    assert torch.isfinite(merged).all() and (merged - plain).abs().max() > 1e-3  # merging is on


def test_refusals_are_one_line():
    from zeroshot.families import FAMILY_CLASSES

    with pytest.raises(RecipeError, match=r"ratio must be in \[0, 1\)"):
        validate(replace(RECIPE, token_merge=TokenMerge(ratio=1.0)))
    with pytest.raises(RecipeError, match="stride must be >= 2"):
        validate(replace(RECIPE, token_merge=TokenMerge(stride=1)))
    with pytest.raises(RecipeError, match="no per-frame spatial self-attention"):
        validate(Recipe(method="video", token_merge=TokenMerge()), family=FAMILY_CLASSES["cogvideox"])
