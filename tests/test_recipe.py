"""Recipes (zeroshot.recipe): the mapping from plain data, overrides and flags onto frozen
dataclasses, defaults resolution, the T2V-Zero warp-step scaling, and one-line errors."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from zeroshot.recipe import (
    METHODS,
    SVD,
    AnimateDiff,
    Chunks,
    ControlNet,
    CrossFrame,
    Edit,
    FreeInit,
    GuidanceInterval,
    Motion,
    Noise,
    Pix2Pix,
    Recipe,
    RecipeError,
    Smoothing,
    StepCache,
    TokenMerge,
    Windows,
    apply_override,
    get_field,
    get_method,
    recipe_fields,
    recipe_from_dict,
    recipe_hash,
    recipe_to_dict,
    resolve,
    scaled_warp_steps,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg, msg
    return msg


def _everything_on() -> Recipe:
    """A recipe with every part of an image model's methods switched on, off-default values."""
    return Recipe(
        method="t2v-zero", num_frames=6, height=64, width=96, num_inference_steps=12, guidance_scale=4.5,
        negative_prompt="blurry", eta=0.3, scheduler="euler",
        noise=Noise(prior="mixed", alpha=2.0, per_step=False),
        cross_frame=CrossFrame(mode="sparse-causal", anchor=1, layers=("up",), steps=(0.2, 0.9)),
        motion=Motion(translate=(1.5, -2.0), zoom=1.05, rotate=3.0, mode="bilinear", padding="border", t0=3, t1=6),
        smoothing=Smoothing(strength=0.5, dilate=3),
        freeinit=FreeInit(iterations=2, filter="gaussian", coarse_to_fine=True),
    )


# ---------------------------------------------------------------------------------------
# methods


def test_every_method_is_a_recipe_named_after_itself():
    for name, recipe in METHODS.items():
        assert get_method(name) is recipe and recipe.method == name
    with pytest.raises(RecipeError) as info:
        get_method("sora")
    msg = _one_line(info)
    assert "'sora'" in msg and all(name in msg for name in METHODS)


def test_recipes_are_frozen_and_overrides_return_new_ones():
    base = get_method("t2v-zero")
    before = recipe_to_dict(base)
    changed = apply_override(base, "motion.zoom", "1.2")
    assert changed.motion.zoom == 1.2 and base.motion.zoom == 1.0
    assert recipe_to_dict(get_method("t2v-zero")) == before
    with pytest.raises(AttributeError):
        base.num_frames = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# plain data (presets, records) <-> recipes


@pytest.mark.parametrize("name", sorted(METHODS))
def test_plain_data_and_toml_round_trip(name):
    import tomli_w

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    for recipe in (get_method(name), _everything_on()):
        assert recipe_from_dict(recipe_to_dict(recipe)) == recipe  # JSON form (records)
        assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe
        text = tomli_w.dumps(recipe_to_dict(recipe, drop_none=True))  # TOML form (presets)
        assert recipe_from_dict(tomllib.loads(text)) == recipe


def test_tables_merge_into_the_base_field_by_field():
    base = get_method("t2v-zero")
    out = recipe_from_dict({"motion": {"zoom": 1.1}, "num_frames": 12}, base=base)
    assert out.motion == replace(base.motion, zoom=1.1) and out.num_frames == 12
    assert out.cross_frame == base.cross_frame  # untouched parts stay
    merged = recipe_from_dict({"motion": {"t0": 2}}, base=out)
    assert merged.motion == replace(out.motion, t0=2)  # the earlier zoom is kept
    off = recipe_from_dict({"cross_frame": False}, base=base)
    assert off.cross_frame is None and off.motion == base.motion
    on = recipe_from_dict({"smoothing": True}, base=base)
    assert on.smoothing == Smoothing()
    kept = recipe_from_dict({"cross_frame": True}, base=recipe_from_dict({"cross_frame": {"anchor": 2}}, base=base))
    assert kept.cross_frame.anchor == 2  # `part = true` keeps a part that is on


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"frames": 8}, ["'frames'", "num_frames"]),
        ({"motion": {"speed": 2}}, ["recipe.motion", "'speed'", "translate"]),
        ({"noise": False}, ["noise", "noise.prior"]),
        ({"num_frames": "many"}, ["recipe.num_frames", "integer"]),
        ({"num_frames": True}, ["recipe.num_frames", "integer"]),
        ({"num_frames": 2.5}, ["recipe.num_frames", "integer"]),
        ({"guidance_scale": "nan"}, ["recipe.guidance_scale", "finite"]),
        ({"guidance_scale": float("inf")}, ["recipe.guidance_scale", "finite"]),
        ({"motion": {"translate": [1, 2, 3]}}, ["recipe.motion.translate", "2 values"]),
        ({"motion": 3}, ["recipe.motion", "Motion"]),
        ({"negative_prompt": 5}, ["recipe.negative_prompt", "string"]),
        ({"noise": {"per_step": "maybe"}}, ["recipe.noise.per_step", "true or false"]),
    ],
)
def test_bad_plain_data_is_one_line_naming_the_key(data, needles):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    msg = _one_line(info)
    assert all(n in msg for n in needles), msg


def test_plain_values_are_coerced_to_the_field_types():
    r = recipe_from_dict({"num_frames": 8.0, "guidance_scale": "2.5", "noise": {"per_step": "off"},
                          "motion": {"translate": "1.5, -2", "trajectories": "1,2->3,4; 5,6->7,8"}})
    assert r.num_frames == 8 and isinstance(r.num_frames, int)
    assert r.guidance_scale == 2.5 and r.noise.per_step is False
    assert r.motion.translate == (1.5, -2.0)
    assert r.motion.trajectories == ("1,2->3,4", "5,6->7,8")


def test_recipe_hash_follows_the_content():
    a, b = _everything_on(), recipe_from_dict(recipe_to_dict(_everything_on()))
    assert a is not b and recipe_hash(a) == recipe_hash(b)
    changes = [("num_frames", 7), ("negative_prompt", "x"), ("motion.zoom", 1.06), ("noise.alpha", 2.5),
               ("cross_frame.anchor", 2), ("freeinit.iterations", 3), ("smoothing", "off")]
    hashes = {recipe_hash(apply_override(a, key, value)) for key, value in changes}
    assert len(hashes) == len(changes) and recipe_hash(a) not in hashes


# ---------------------------------------------------------------------------------------
# overrides (--set a.b=v, CLI flags)


def test_every_listed_key_is_accepted_by_set():
    """`recipe_fields()` (what --set documents) round-trips: setting each field of a
    recipe with every part on to its current value gives the same recipe back."""
    r = _everything_on()
    r = replace(r, animatediff=AnimateDiff(adapter="a.safetensors", context_length=8),
                windows=Windows(length=4, stride=2, weighting="flat"), chunks=Chunks(size=3),
                step_cache=StepCache(interval=2, branch=1, start=0.2, order=1), token_merge=TokenMerge(ratio=0.3, stride=3, max_downsample=2),
                guidance_interval=GuidanceInterval(start=0.1, end=0.6),
                svd=SVD(fps=6, motion_bucket_id=100, noise_aug_strength=0.05, min_guidance_scale=1.5,
                        decode_chunk_size=2),
                prompt_at=("2:a blue dog",), image="first.png", video="in.mp4",
                controlnet=ControlNet(models=("a", "b.safetensors"), signals=("canny:x.mp4", "depth:y"),
                                      scales=(0.5, 1.5), resize=True, low_threshold=50.0, high_threshold=120.0,
                                      guess_mode=True, start=0.1, end=0.8),
                edit=Edit(strength=0.3), pix2pix=Pix2Pix(image_guidance_scale=2.0))
    keys = recipe_fields()
    assert {f.name for f in fields(Recipe)} <= set(keys)
    for key in keys:
        if key == "method":  # --set method=NAME re-bases on that method's parts (tested below)
            continue
        value = get_field(r, key)
        if "." not in key and hasattr(value, "__dataclass_fields__"):
            value = "on"
        assert apply_override(r, key, value) == r, key


def test_setting_a_field_of_a_part_that_is_off_switches_it_on_with_defaults():
    t2i = get_method("t2i")
    assert t2i.motion is None and t2i.freeinit is None
    assert apply_override(t2i, "motion.zoom", "1.1").motion == Motion(zoom=1.1)
    assert apply_override(t2i, "freeinit.iterations", "2").freeinit == FreeInit(iterations=2)
    assert apply_override(t2i, "cross_frame", "on").cross_frame == CrossFrame()
    t2v = get_method("t2v-zero")
    for word in ("off", "false", "none", "no", "0"):
        assert apply_override(t2v, "motion", word).motion is None
    assert apply_override(t2v, "height", "none").height is None


def test_set_method_keeps_the_settings_and_takes_the_methods_parts():
    r = apply_override(apply_override(get_method("t2v-zero"), "num_frames", "16"), "guidance_scale", "5")
    r = apply_override(r, "noise.prior", "mixed")
    t2i = apply_override(r, "method", "t2i")
    assert t2i.method == "t2i" and (t2i.cross_frame, t2i.motion) == (None, None)
    assert (t2i.num_frames, t2i.guidance_scale, t2i.noise.prior) == (16, 5.0, "mixed")
    back = apply_override(t2i, "method", "t2v-zero")
    assert back.cross_frame == CrossFrame() and back.motion == Motion()
    with pytest.raises(RecipeError) as info:
        apply_override(r, "method", "nope")
    assert "nope" in _one_line(info)


@pytest.mark.parametrize(
    ("key", "value", "needles"),
    [
        ("frames", "8", ["'frames'", "num_frames"]),
        ("motion.speed", "2", ["'motion.speed'", "motion.translate"]),
        ("num_frames.x", "2", ["num_frames", "no fields"]),
        ("noise", "off", ["noise", "noise.prior"]),
        ("motion", "sideways", ["motion", "on or off"]),
        ("motion.zoom", "abc", ["motion.zoom", "number"]),
        ("motion.translate", "1", ["motion.translate", "2 values"]),
        ("num_inference_steps", "1.5", ["num_inference_steps", "integer"]),
        ("eta", "-inf", ["eta", "finite"]),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(key, value, needles):
    with pytest.raises(RecipeError) as info:
        apply_override(get_method("t2v-zero"), key, value)
    msg = _one_line(info)
    assert all(n in msg for n in needles), msg


# ---------------------------------------------------------------------------------------
# resolution: library defaults, model recommendations, the user's values


def test_library_defaults_are_the_papers():
    r = resolve(get_method("t2v-zero"))
    assert (r.height, r.width, r.num_inference_steps, r.guidance_scale) == (512, 512, 50, 7.5)
    assert r.motion.translate == (12.0, 12.0)
    assert (r.motion.mode, r.motion.padding, r.motion.t0, r.motion.t1) == ("nearest", "reflection", 44, 47)
    assert resolve(get_method("t2i")).motion is None  # nothing is switched on by resolving


def test_model_recommendations_fill_only_what_the_user_left_open():
    model = {"height": 64, "width": 64, "num_inference_steps": 25, "guidance_scale": 2.0, "motion.t0": 4,
             "motion.t1": 5, "motion.translate": [2, 0], "motion.mode": "bilinear", "motion.padding": "border"}
    r = resolve(get_method("t2v-zero"), model)
    assert (r.height, r.num_inference_steps, r.guidance_scale) == (64, 25, 2.0)
    assert (r.motion.translate, r.motion.t0, r.motion.t1) == ((2.0, 0.0), 4, 5)
    assert (r.motion.mode, r.motion.padding) == ("bilinear", "border")
    mine = get_method("t2v-zero")
    for key, value in (("height", 32), ("guidance_scale", 6.0), ("motion.translate", [0, 1]), ("motion.mode", "nearest"),
                       ("motion.padding", "zeros"), ("motion.t0", 1)):
        mine = apply_override(mine, key, value)
    r = resolve(mine, model)
    assert (r.height, r.width, r.guidance_scale) == (32, 64, 6.0)
    assert (r.motion.translate, r.motion.mode, r.motion.padding) == ((0.0, 1.0), "nearest", "zeros")
    assert (r.motion.t0, r.motion.t1) == (1, 5)  # the user's t0, the model's t1
    assert resolve(r, model) == r  # resolving is idempotent


def test_a_given_motion_source_gets_no_default_pan():
    for key, value in (("motion.path", "p.toml"), ("motion.trajectories", "1,2->3,4"), ("motion.from_video", "v.mp4")):
        r = resolve(apply_override(get_method("t2v-zero"), key, value))
        assert r.motion.translate is None, key
    assert resolve(get_method("t2v-zero")).motion.translate == (12.0, 12.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_warp_steps_scale_both_spans_with_the_step_count(k):
    """The paper's 44/47 of 50 steps: frame 0 alone for 50 - 47 - 1 = 2 steps, then 3 steps
    to T'. At k x 50 steps both spans are k times longer: t1 = 50k - 1 - 2k, t0 = t1 - 3k."""
    n = 50 * k
    r = resolve(apply_override(get_method("t2v-zero"), "num_inference_steps", n))
    assert (r.motion.t0, r.motion.t1) == (n - 1 - 2 * k - 3 * k, n - 1 - 2 * k)


def test_warp_steps_are_valid_for_every_step_count():
    for ref_t0, ref_t1, ref in ((44, 47, 50), (4, 5, 25), (0, 1, 2), (2, 9, 10)):
        for n in range(2, 80):
            t0, t1 = scaled_warp_steps(n, ref_t0, ref_t1, ref)
            assert 0 <= t0 < t1 <= n - 1, (n, ref_t0, ref_t1, ref, t0, t1)
            r = resolve(apply_override(get_method("t2v-zero"), "num_inference_steps", n),
                        {"motion.t0": ref_t0, "motion.t1": ref_t1, "num_inference_steps": ref})
            assert (r.motion.t0, r.motion.t1) == (t0, t1)
        assert scaled_warp_steps(ref, ref_t0, ref_t1, ref) == (ref_t0, ref_t1)
    with pytest.raises(RecipeError) as info:
        resolve(apply_override(get_method("t2v-zero"), "num_inference_steps", 1))
    assert "num_inference_steps" in _one_line(info)


# ---------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"height": 30}, "multiple of the VAE factor 4"),
        ({"width": -8}, "width"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"eta": 1.5}, "eta"),
        ({"scheduler": "heun"}, "scheduler 'heun'"),
        ({"cross_frame": CrossFrame(mode="all")}, "cross_frame.mode"),
        ({"cross_frame": CrossFrame(layers=())}, "cross_frame.layers"),
        ({"cross_frame": CrossFrame(anchor=4)}, "cross_frame.anchor"),
        ({"cross_frame": CrossFrame(steps=(0.8, 0.2))}, "cross_frame.steps"),
        ({"motion": Motion(t0=5, t1=5)}, "motion.t0"),
        ({"motion": Motion(t0=2, t1=9)}, "motion.t1"),
        ({"motion": Motion(mode="cubic")}, "motion.mode"),
        ({"motion": Motion(padding="wrap")}, "motion.padding"),
        ({"motion": Motion(zoom=0.0)}, "motion.zoom"),
        ({"smoothing": Smoothing(strength=2.0)}, "smoothing.strength"),
        ({"motion": None, "smoothing": Smoothing()}, "smoothing needs motion"),
        ({"freeinit": FreeInit(iterations=0)}, "freeinit.iterations"),
        ({"freeinit": FreeInit(filter="sinc")}, "freeinit.filter"),
        ({"freeinit": FreeInit(d_s=0.0)}, "freeinit.d_s"),
        ({"animatediff": AnimateDiff()}, "cross_frame cannot be combined"),
        ({"cross_frame": None, "animatediff": AnimateDiff(context_stride=0)}, "animatediff.context_stride"),
    ],
)
def test_invalid_recipes_are_one_line_naming_the_field(changes, needle):
    good = resolve(replace(get_method("t2v-zero"), num_frames=4, height=64, width=64, num_inference_steps=8))
    validate(good, vae_scale_factor=4)
    with pytest.raises(RecipeError) as info:
        validate(replace(good, **changes), vae_scale_factor=4)
    assert needle in _one_line(info)


# ---------------------------------------------------------------------------------------
# the README's examples


def _readme_sets() -> list[str]:
    found = re.findall(r"--set\s+([\w.]+=[^\s`]+)", (ROOT / "README.md").read_text())
    return [text for text in found if text != "a.b=v"]  # the syntax, not an example


def test_readme_set_examples_are_valid_on_the_embedded_model():
    """Every `--set key=value` the README shows applies to t2v-zero and resolves against
    the embedded model's recommendations into a valid recipe."""
    from zeroshot.models import EMBEDDED_MODEL
    from zeroshot.recipe import parse_override

    defaults = json.loads((EMBEDDED_MODEL / "zeroshot.json").read_text())["defaults"]
    examples = _readme_sets()
    assert len(examples) >= 4
    for text in examples:
        key, value = parse_override(text)
        recipe = apply_override(get_method("t2v-zero"), key, value)
        validate(resolve(recipe, defaults), vae_scale_factor=4)
