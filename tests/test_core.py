"""Core properties: cross-frame attention, hooks, sampling helpers, generate()."""

import json

import pytest
import torch

from conftest import randn
from zeroshot import attention, models
from zeroshot.generate import generate
from zeroshot.techniques.cross_frame import step_active
from zeroshot.hooks import cross_frame_attention
from zeroshot.recipe import CrossFrame, Motion, Recipe, RecipeError
from zeroshot.sampling import guided_eps_fn, renoise


def _video_eps(model, x, prompt="a red cat", guidance=3.0):
    cond = model.encode_prompt([prompt] * x.shape[0])
    uncond = model.encode_prompt([""] * x.shape[0]) if guidance > 1 else None
    return guided_eps_fn(model.unet, cond, uncond, guidance)(x, torch.tensor(500))


def _latents(n=1, f=4, seed=0):
    return randn(n, 4, f, 8, 8, seed=seed)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("mode", ["first", "sparse-causal"])
def test_anchor_frame_unchanged(tiny_model, guidance, mode):
    x = _latents(n=2, f=4)
    plain = _video_eps(tiny_model, x[:, :, :1], guidance=guidance)
    with cross_frame_attention(tiny_model.unet, 4, mode=mode):
        out = _video_eps(tiny_model, x, guidance=guidance)
    assert torch.allclose(out[:, :, :1], plain, atol=1e-5)
    # and the other frames did change
    without = _video_eps(tiny_model, x, guidance=guidance)
    assert (out[:, :, 1:] - without[:, :, 1:]).abs().max() > 1e-4


def test_cross_frame_each_video_independent(tiny_model):
    """Several videos at once equal each video alone (batch derived from the tensor)."""
    x = _latents(n=2, f=3, seed=1)
    with cross_frame_attention(tiny_model.unet, 3):
        both = _video_eps(tiny_model, x)
        one = _video_eps(tiny_model, x[1:])
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_first_mode_frames_see_only_anchor(tiny_model):
    """Under 'first', frame k's output does not depend on any other non-anchor frame."""
    x = _latents(f=4, seed=2)
    y = x.clone()
    y[:, :, 2] += 1.0
    with cross_frame_attention(tiny_model.unet, 4):
        a, b = _video_eps(tiny_model, x), _video_eps(tiny_model, y)
    assert torch.allclose(a[:, :, [0, 1, 3]], b[:, :, [0, 1, 3]], atol=1e-5)
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-3


def test_sparse_causal_reads_anchor_and_previous(tiny_model):
    x = _latents(f=4, seed=3)
    y = x.clone()
    y[:, :, 3] += 1.0  # the last frame: no other frame reads it
    z = x.clone()
    z[:, :, 1] += 1.0  # frame 2 reads frame 1
    with cross_frame_attention(tiny_model.unet, 4, mode="sparse-causal"):
        a, b, c = _video_eps(tiny_model, x), _video_eps(tiny_model, y), _video_eps(tiny_model, z)
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-5)
    assert (a[:, :, 2] - c[:, :, 2]).abs().max() > 1e-3
    assert torch.allclose(a[:, :, 0], c[:, :, 0], atol=1e-5)


# --- one cross-frame processor on one attention layer, against the attention formula


def _attention(seed=0, channels=16, heads=2):
    from diffusers.models.attention_processor import Attention

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, bias=True)
    return attn.eval()


def _attend(attn, x, context):
    """softmax(q k^T / sqrt(d)) v per head, then the output projection: the attention
    formula written out, for one frame's tokens `x` (n, c) and keys/values `context` (m, c)."""
    heads = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    d = q.shape[-1] // heads
    q, k, v = (t.reshape(t.shape[0], heads, d).transpose(0, 1) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(1, 2) / d**0.5, dim=-1)
    out = (weights @ v).transpose(0, 1).reshape(x.shape[0], heads * d)
    return attn.to_out[0](out)


def _context_rule(mode, anchor):
    """Which frames frame k attends to, as a function of k."""
    rules = {
        "first": lambda k: [anchor],
        "sparse-causal": lambda k: [anchor, max(k - 1, 0)],  # Tune-A-Video: anchor + previous
        "all-previous": lambda k: list(range(k + 1)),  # a plausible wrong implementation
    }
    return rules[mode]


def _expected(attn, x, mode, anchor):
    b, f = x.shape[:2]
    rule = _context_rule(mode, anchor)
    return torch.stack([
        torch.stack([_attend(attn, x[i, k], torch.cat([x[i, j] for j in rule(k)])) for k in range(f)])
        for i in range(b)
    ])


def _processors():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor

    return {"sdpa": AttnProcessor2_0(), "classic": AttnProcessor(), "sliced": SlicedAttnProcessor(slice_size=1)}


@pytest.mark.parametrize("inner", ["sdpa", "classic", "sliced"])
@pytest.mark.parametrize(("mode", "anchor"), [("first", 0), ("first", 2), ("sparse-causal", 0), ("sparse-causal", 1)])
@torch.no_grad()
def test_processor_attends_to_the_frames_its_mode_names(inner, mode, anchor):
    """One CrossFrameAttnProcessor around each installed processor kind, on a (b f) n c
    batch of 2 videos x 4 frames: every frame equals the attention formula over exactly
    the frames its mode names (sparse-causal: the anchor and the previous frame)."""
    attn = _attention()
    b, f, n, c = 2, 4, 5, 16
    x = randn(b, f, n, c, seed=1)
    proc = attention.CrossFrameAttnProcessor(_processors()[inner], attention.FrameState(f, mode=mode, anchor=anchor))
    out = proc(attn, x.reshape(b * f, n, c)).reshape(b, f, n, c)
    assert (out - _expected(attn, x, mode, anchor)).abs().max() <= 1e-5
    # the formula tells the modes apart: the anchor-and-previous rule is not "all previous
    # frames", and neither is plain per-frame self-attention
    wrong = _expected(attn, x, "all-previous", anchor)
    assert (out[:, 3] - wrong[:, 3]).abs().max() > 1e-3
    alone = torch.stack([torch.stack([_attend(attn, x[i, k], x[i, k]) for k in range(f)]) for i in range(b)])
    changed = [k for k in range(f) if (out[:, k] - alone[:, k]).abs().max() > 1e-3]
    assert changed == [k for k in range(f) if set(_context_rule(mode, anchor)(k)) != {k}]


@torch.no_grad()
def test_inactive_or_single_frame_processor_is_the_wrapped_processor():
    attn = _attention()
    x = randn(8, 5, 16, seed=2)
    plain = _processors()["sdpa"](attn, x)
    off = attention.FrameState(4, mode="sparse-causal", active=False)
    assert torch.equal(attention.CrossFrameAttnProcessor(_processors()["sdpa"], off)(attn, x), plain)
    one = attention.FrameState(1)
    assert torch.equal(attention.CrossFrameAttnProcessor(_processors()["sdpa"], one)(attn, x), plain)


def _unet_eps(unet, x, ctx):
    """The image UNet on video latents (b, c, f, h, w), frames folded into the batch."""
    b, c, f, h, w = x.shape
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    return unet(flat, 500, encoder_hidden_states=ctx.repeat_interleave(f, 0), return_dict=False)[0]


@pytest.mark.parametrize("inner", ["classic", "sliced"])
@torch.no_grad()
def test_cross_frame_wraps_classic_and_sliced_processors_like_sdpa(tiny_model, inner):
    """Whatever processor the UNet has (diffusers' default SDPA, the classic one, or
    sliced attention), cross-frame attention wraps it and gives the same result."""
    from diffusers.models.attention_processor import AttnProcessor, SlicedAttnProcessor

    unet = tiny_model.unet
    original = dict(unet.attn_processors)
    ctx = tiny_model.encode_prompt(["a red cat"])
    x = _latents(f=4, seed=6)
    with cross_frame_attention(unet, 4, mode="sparse-causal"):
        ref = _unet_eps(unet, x, ctx)
    try:
        if inner == "classic":
            unet.set_attn_processor(AttnProcessor())
        else:
            unet.set_attention_slice(1)
        kind = {"classic": AttnProcessor, "sliced": SlicedAttnProcessor}[inner]
        with cross_frame_attention(unet, 4, mode="sparse-causal") as state:
            wrapped = [p for p in unet.attn_processors.values() if isinstance(p, attention.CrossFrameAttnProcessor)]
            assert wrapped and all(isinstance(p.processor, kind) for p in wrapped)
            out = _unet_eps(unet, x, ctx)
            state.active = False
            plain = _unet_eps(unet, x, ctx)
    finally:
        unet.set_attn_processor(original)
    assert (out - ref).abs().max() <= 1e-4
    assert (out - plain).abs().max() > 1e-3  # and the cross-frame effect is there


def test_folded_anchor_equals_repeated_anchor(tiny_model, monkeypatch):
    """Computing K/V once for the anchor (folded) equals repeating it for every frame."""
    x = _latents(f=4, seed=4)
    with cross_frame_attention(tiny_model.unet, 4):
        folded = _video_eps(tiny_model, x)
    monkeypatch.setattr(attention, "_foldable", lambda attn, mask: False)
    with cross_frame_attention(tiny_model.unet, 4):
        repeated = _video_eps(tiny_model, x)
    assert torch.allclose(folded, repeated, atol=1e-5)


def test_layers_option_selects_parts(tiny_model):
    with cross_frame_attention(tiny_model.unet, 4, layers=("up",)):
        wrapped_inside = {k: type(v) for k, v in tiny_model.unet.attn_processors.items()}
    assert any(kind is attention.CrossFrameAttnProcessor for kind in wrapped_inside.values())
    for name, kind in wrapped_inside.items():
        expect = name.startswith("up_blocks.") and ".attn1." in name
        assert (kind is attention.CrossFrameAttnProcessor) == expect, name


def test_processors_restored_after_exception(tiny_model):
    before = dict(tiny_model.unet.attn_processors)
    with pytest.raises(RuntimeError):
        with cross_frame_attention(tiny_model.unet, 4):
            assert any(isinstance(p, attention.CrossFrameAttnProcessor) for p in tiny_model.unet.attn_processors.values())
            raise RuntimeError("boom")
    after = tiny_model.unet.attn_processors
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)


def test_generate_restores_unet_on_error(tiny_model):
    before = dict(tiny_model.unet.attn_processors)

    def explode(i, t, x):
        raise KeyboardInterrupt

    recipe = Recipe(method="t2v-zero", num_frames=3, height=32, width=32, num_inference_steps=4,
                    cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_model, "a red cat", recipe, callback=explode, progress=False)
    after = tiny_model.unet.attn_processors
    assert all(before[k] is after[k] for k in before)


@pytest.fixture(scope="module")
def sd_pipeline(tiny_sd):
    """diffusers' StableDiffusionPipeline on the tiny folder (the reference)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _recipe(**kw):
    base = dict(num_frames=3, height=32, width=32, num_inference_steps=5, guidance_scale=3.0)
    base.update(kw)
    return Recipe(**base)


def test_generate_is_deterministic(tiny_model):
    r = _recipe(method="t2v-zero", cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 4.0)))
    a = generate(tiny_model, "a red cat", r, seed=3, progress=False)
    b = generate(tiny_model, "a red cat", r, seed=3, progress=False)
    c = generate(tiny_model, "a red cat", r, seed=4, progress=False)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)
    assert a.frames.shape == (1, 3, 3, 32, 32)
    assert 0.0 <= a.frames.min() and a.frames.max() <= 1.0


def test_all_parts_off_equals_per_frame_text_to_image(tiny_model, sd_pipeline):
    """t2i with every part off == diffusers' StableDiffusionPipeline on each frame's noise."""
    pipe = sd_pipeline
    noise = _latents(f=3, seed=5)
    ours = generate(tiny_model, "a red cat", _recipe(), latents=noise, progress=False)
    for k in range(3):
        img = pipe("a red cat", height=32, width=32, num_inference_steps=5, guidance_scale=3.0,
                   latents=noise[:, :, k], output_type="pt").images[0]
        assert (ours.frames[0, k] - img).abs().max() <= 1e-4


def _small(recipe, **kw):
    from dataclasses import replace

    base = dict(num_frames=3, height=32, width=32, num_inference_steps=5, guidance_scale=3.0)
    return replace(recipe, **{**base, **kw})


def test_t2v_zero_with_both_parts_switched_off_is_t2i(tiny_model):
    """The registered t2v-zero recipe with `--set cross_frame=off --set motion=off` is the
    t2i baseline (same draws), while switching off only one of the two parts is not."""
    from zeroshot.recipe import apply_override, get_method

    t2v = _small(get_method("t2v-zero"), motion=Motion(translate=(4.0, 0.0)))
    assert t2v.cross_frame is not None and t2v.motion is not None
    no_cf = apply_override(t2v, "cross_frame", "off")
    neither = apply_override(no_cf, "motion", "off")
    only_cf = apply_override(t2v, "motion", "off")
    assert (neither.cross_frame, neither.motion) == (None, None)
    out = {name: generate(tiny_model, "a red cat", r, seed=1, progress=False).frames
           for name, r in (("t2i", _small(get_method("t2i"))), ("neither", neither), ("no_cf", no_cf),
                           ("only_cf", only_cf))}
    assert torch.equal(out["t2i"], out["neither"])
    assert (out["t2i"] - out["no_cf"]).abs().max() > 1e-3  # the motion dynamics act
    assert (out["t2i"] - out["only_cf"]).abs().max() > 1e-3  # cross-frame attention acts


@pytest.mark.parametrize(("t1", "t2"), [(300, 800), (861, 881), (0, 20)])
def test_renoise_uses_the_exact_alphabar_ratio(tiny_model, t1, t2):
    """With fixed noise, renoise(x, t1, t2) is sqrt(a) x + sqrt(1 - a) eps with
    a = alphabar[t2] / alphabar[t1], and not the reference code's one-index-off ratio
    prod(alphas[t1:t2]) = alphabar[t2 - 1] / alphabar[t1 - 1]."""
    sched = tiny_model.scheduler
    ac = sched.alphas_cumprod.double()
    alphas = 1 - sched.betas.double()
    x, eps = randn(4, 4, 3, 8, 8, seed=0).double(), randn(4, 4, 3, 8, 8, seed=1).double()
    out = renoise(x, t1, t2, alphas_cumprod=sched.alphas_cumprod, noise=eps)

    def closed_form(a):
        return a.sqrt() * x + (1 - a).sqrt() * eps

    exact = closed_form(ac[t2] / ac[t1])
    off_by_one = closed_form(torch.prod(alphas[t1:t2]))
    assert (out - exact).abs().max() <= 1e-6
    gap = (off_by_one - exact).abs().max()
    assert gap > 1e-4 and (out - off_by_one).abs().max() > 100 * 1e-6
    # without fixed noise, the noise is a standard normal draw from the generator
    drawn = renoise(x, t1, t2, torch.Generator().manual_seed(5), alphas_cumprod=sched.alphas_cumprod)
    assert torch.equal(drawn, renoise(x, t1, t2, alphas_cumprod=sched.alphas_cumprod,
                                      noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(5),
                                                        dtype=x.dtype)))


def test_renoise_composes_with_add_noise_in_distribution(tiny_model):
    """add_noise to t1, then renoise to t2, has add_noise's marginal at t2: mean
    sqrt(alphabar[t2]) x0 and variance 1 - alphabar[t2] (5 standard errors)."""
    sched = tiny_model.scheduler
    ac = sched.alphas_cumprod.double()
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    t1, t2 = 300, 800
    x_t1 = sched.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=x0.dtype), torch.tensor([t1]))
    x_t2 = renoise(x_t1, t1, t2, g, alphas_cumprod=sched.alphas_cumprod)
    var = 1 - ac[t2]
    assert abs(x_t2.mean() - ac[t2].sqrt() * 0.7) < 5 * (var / n).sqrt()
    assert abs(x_t2.var() - var) < 5 * var * (2 / n) ** 0.5
    ac = sched.alphas_cumprod
    same = renoise(x_t1[:10], t1, t1, g, alphas_cumprod=ac)
    assert torch.equal(same, x_t1[:10])
    with pytest.raises(ValueError):
        renoise(x_t1[:10], t2, t1, g, alphas_cumprod=ac)


def test_step_gating():
    assert step_active(0, 10, (0.0, 1.0)) and step_active(9, 10, (0.0, 1.0))
    assert not step_active(0, 10, (0.2, 1.0)) and step_active(2, 10, (0.2, 1.0))
    assert step_active(4, 10, (0.0, 0.5)) and not step_active(5, 10, (0.0, 0.5))


def _spy_self_attention(unet, log):
    """Replace every self-attention processor by one that logs whether it was handed keys
    and values from elsewhere (what the cross-frame wrapper does when it is on)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    class Spy(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
            log.append(encoder_hidden_states is not None)
            return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    original = dict(unet.attn_processors)
    unet.set_attn_processor({k: Spy() if ".attn1." in k else v for k, v in original.items()})
    return original


@pytest.mark.parametrize("steps", [(0.4, 0.8), (0.0, 0.6), (0.6, 1.0)])
def test_cross_frame_steps_gate_the_hook_per_step(tiny_model, steps):
    """cross_frame.steps = (start, end): the hook is off at schedule index i with
    i / n < start or i / n >= end (end 1.0 includes the last step) and on in between,
    and the latents before `start` are exactly those of a run without the hook."""
    n = 5
    expected = [steps[0] <= i / n and (i / n < steps[1] or steps[1] >= 1.0) for i in range(n)]
    assert any(expected) and not all(expected)
    unet = tiny_model.unet
    calls, per_step = [], []

    def after_step(i, t, x):
        per_step.append(set(calls))
        calls.clear()

    original = _spy_self_attention(unet, calls)
    try:
        generate(tiny_model, "a red cat", _recipe(method="t2v-zero", cross_frame=CrossFrame(steps=steps)), seed=1,
                 callback=after_step, progress=False)
    finally:
        unet.set_attn_processor(original)
    assert per_step == [{on} for on in expected]

    def trajectory(recipe):
        seen = []
        generate(tiny_model, "a red cat", recipe, seed=1, progress=False, callback=lambda i, t, x: seen.append(x.clone()))
        return seen

    gated = trajectory(_recipe(method="t2v-zero", cross_frame=CrossFrame(steps=steps)))
    off = trajectory(_recipe(method="t2v-zero"))
    full = trajectory(_recipe(method="t2v-zero", cross_frame=CrossFrame()))
    first_on = expected.index(True)
    for i in range(first_on):
        assert torch.equal(gated[i], off[i])
    assert (gated[first_on] - off[first_on]).abs().max() > 1e-4
    assert (full[0] - off[0]).abs().max() > 1e-4  # on at step 0, the hook changes step 0


def test_several_videos_per_call(tiny_model):
    r = _recipe(method="t2v-zero", cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))
    out = generate(tiny_model, "a red cat", r, seed=1, num_videos=2, progress=False)
    assert out.frames.shape == (2, 3, 3, 32, 32)
    assert not torch.equal(out.frames[0], out.frames[1])


def test_model_defaults_from_zeroshot_json(tiny_sd, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_sd, folder)
    (folder / "zeroshot.json").write_text(json.dumps({
        "defaults": {"height": 32, "width": 32, "num_inference_steps": 6, "guidance_scale": 2.0,
                     "motion.t0": 2, "motion.t1": 4, "motion.translate": [4, 0]},
        "vocabulary": ["a", "red", "cat"],
    }))
    m = models.load(str(folder))
    out = generate(m, "a red cat", "t2v-zero", progress=False)
    r = out.recipe
    assert (r.height, r.num_inference_steps, r.guidance_scale) == (32, 6, 2.0)
    assert (r.motion.t0, r.motion.t1, r.motion.translate) == (2, 4, (4.0, 0.0))
    # user overrides win; t0/t1 scale with the step count
    from zeroshot.recipe import apply_override, get_method

    r2 = apply_override(apply_override(get_method("t2v-zero"), "num_inference_steps", "12"), "guidance_scale", "5")
    out2 = generate(m, "a red cat", r2, progress=False)
    assert out2.recipe.guidance_scale == 5.0 and out2.recipe.num_inference_steps == 12
    # the model's 2/4 of 6 steps: frame 0 alone for 6 - 4 - 1 = 1 step, then 4 - 2 = 2 steps
    # to T'; at 12 steps those spans are 2 and 4 steps, so t1 = 12 - 1 - 2 = 9, t0 = 9 - 4 = 5
    assert (out2.recipe.motion.t0, out2.recipe.motion.t1) == (5, 9)
    with pytest.raises(RecipeError, match="blue"):
        generate(m, "a blue cat", "t2v-zero", progress=False)


def test_model_loading_errors(tmp_path):
    with pytest.raises(models.ModelError, match="not found"):
        models.load(str(tmp_path / "nope"))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(models.ModelError, match="pickle"):
        models.load(str(ckpt))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="model_index.json"):
        models.load(str(tmp_path / "empty"))


def test_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError) as info:
        models.load("someone/some-model")
    msg = str(info.value)
    assert "\n" not in msg and "--model" in msg


def test_a_pipeline_works_as_the_model_with_its_own_components(tiny_model, sd_pipeline):
    """generate(pipe, ...) equals generate(models.load(folder), ...) for the same folder,
    runs the pipeline's own UNet (shared, not copied) and leaves it as it was."""
    pipe = sd_pipeline
    recipe = _recipe(method="t2v-zero", cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 0.0)))
    processors = dict(pipe.unet.attn_processors)
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = generate(pipe, "a red cat", recipe, seed=2, progress=False)
    finally:
        hook.remove()
    ref = generate(tiny_model, "a red cat", recipe, seed=2, progress=False)
    assert calls  # the pipeline's UNet object ran
    assert all(pipe.unet.attn_processors[k] is v for k, v in processors.items())
    assert (out.frames - ref.frames).abs().max() <= 1e-5
    assert out.frames.shape == (1, 3, 3, 32, 32)


def test_single_file_without_configs_offline_is_one_line(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(models.ModelError) as info:
        models.load(str(path))
    assert "\n" not in str(info.value) and "config" in str(info.value)


@pytest.mark.parametrize("kw", [dict(), dict(motion=Motion(translate=(4.0, 0.0)), cross_frame=CrossFrame())])
def test_progress_total_counts_every_unet_call(tiny_model, kw):
    from zeroshot.generate import denoising_steps
    from zeroshot.recipe import FreeInit, resolve

    recipe = _recipe(freeinit=FreeInit(iterations=2, coarse_to_fine=True), **kw)
    calls = []
    tiny_model.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        generate(tiny_model, "a red cat", recipe, progress=False)
    finally:
        tiny_model.unet._forward_hooks.clear()
    assert len(calls) == denoising_steps(resolve(recipe, tiny_model.defaults))


def test_set_string_lists_split_on_semicolons():
    from zeroshot.recipe import apply_override, get_method

    r = apply_override(get_method("t2v-zero"), "motion.trajectories", "10,20->30,20; 5,5->5,9")
    assert r.motion.trajectories == ("10,20->30,20", "5,5->5,9")
    r = apply_override(r, "motion.translate", "1.5,-2")
    assert r.motion.translate == (1.5, -2.0)


def test_warp_mode_model_default_and_override(tiny_sd):
    from zeroshot.recipe import apply_override, get_method, resolve

    assert resolve(get_method("t2v-zero")).motion.mode == "nearest"  # the paper's
    assert resolve(get_method("t2v-zero"), {"motion.mode": "bilinear"}).motion.mode == "bilinear"
    mine = apply_override(get_method("t2v-zero"), "motion.mode", "nearest")
    assert resolve(mine, {"motion.mode": "bilinear"}).motion.mode == "nearest"


# --- every scheduler the recipe accepts, through generate() ------------------------------


def _scheduler_cases():
    from zeroshot.sampling import SCHEDULERS

    cases = [(name, 0.0) for name in SCHEDULERS]
    return cases + [("ddim", 0.6)]  # DDIM with eta > 0 draws per-step noise


@pytest.mark.parametrize(("name", "eta"), _scheduler_cases())
def test_each_scheduler_equals_diffusers_text_to_image(tiny_model, sd_pipeline, name, eta):
    """t2i with each scheduler equals diffusers' StableDiffusionPipeline with the same
    scheduler, initial latents and generator, stochastic samplers included (one frame, so
    the per-step draws have the pipeline's shape)."""
    from zeroshot.sampling import make_scheduler

    pipe, own = sd_pipeline, sd_pipeline.scheduler  # the folder's own scheduler: DDIM
    noise = _latents(f=1, seed=5)
    ours = generate(tiny_model, "a red cat", _recipe(num_frames=1, scheduler=name, eta=eta, num_inference_steps=4),
                    latents=noise, seed=7, progress=False)
    pipe.scheduler = make_scheduler(name, own)
    try:
        ref = pipe("a red cat", height=32, width=32, num_inference_steps=4, guidance_scale=3.0, eta=eta,
                   latents=noise[:, :, 0], generator=torch.Generator().manual_seed(7), output_type="pt").images[0]
    finally:
        pipe.scheduler = own
    assert (ours.frames[0, 0] - ref).abs().max() <= 1e-4
    other_seed = generate(tiny_model, "a red cat", _recipe(num_frames=1, scheduler=name, eta=eta,
                                                            num_inference_steps=4), latents=noise, seed=8, progress=False)
    stochastic = name in ("ddpm", "euler-ancestral") or eta > 0
    assert (other_seed.frames - ours.frames).abs().max() > 1e-3 if stochastic else torch.equal(other_seed.frames,
                                                                                               ours.frames)


@pytest.mark.parametrize(("name", "eta"), _scheduler_cases())
def test_each_scheduler_runs_t2v_zero(tiny_model, name, eta):
    """T2V-Zero restarts the scheduler mid-schedule (frame 0 to T', then all frames from T):
    with each scheduler, frame 0 is the same for any motion and the other frames follow it."""
    recipes = [_recipe(method="t2v-zero", cross_frame=CrossFrame(), motion=Motion(translate=move), scheduler=name,
                       eta=eta) for move in ((4.0, 0.0), (0.0, 4.0))]
    a, b = (generate(tiny_model, "a red cat", r, seed=2, progress=False) for r in recipes)
    assert torch.isfinite(a.latents).all() and a.frames.shape == (1, 3, 3, 32, 32)
    assert (a.latents[:, :, 0] - b.latents[:, :, 0]).abs().max() <= 1e-5
    assert (a.latents[:, :, 1:] - b.latents[:, :, 1:]).abs().max() > 1e-3


@torch.no_grad()
def test_cross_frame_passes_lora_layers_on_the_projections(tiny_model, tmp_path):
    """A UNet whose attention projections carry LoRA layers (zeroshot.trained.lora) gives,
    under cross-frame attention, what the same LoRA merged into the weights gives."""
    import copy

    from zeroshot.trained.lora import add_lora, merged, save_lora

    wrapped_unet = copy.deepcopy(tiny_model.unet)
    layers = add_lora(wrapped_unet, rank=2, seed=0)
    for layer in layers.values():
        layer.up.normal_(std=0.3, generator=torch.Generator().manual_seed(1))
    fused = merged(tiny_model.unet, save_lora(layers, tmp_path / "style.safetensors"))
    ctx = tiny_model.encode_prompt(["a red cat"])
    x = _latents(f=4, seed=7)
    out = {}
    for name, unet in (("wrapped", wrapped_unet), ("fused", fused), ("base", tiny_model.unet)):
        with cross_frame_attention(unet, 4, mode="sparse-causal"):
            out[name] = _unet_eps(unet, x, ctx)
    assert (out["wrapped"] - out["fused"]).abs().max() <= 1e-4
    assert (out["wrapped"] - out["base"]).abs().max() > 1e-3  # the LoRA acts
