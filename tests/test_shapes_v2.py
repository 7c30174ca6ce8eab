"""World v2 (patterned backgrounds, pans, curves) and detector v2 on its ground truth."""

import math

import numpy as np
import pytest

from zeroshot.shapes import unknown_words, world
from zeroshot.shapes.detector import (
    background_shift,
    check_shift,
    check_v2,
    degrade,
    detect,
    detect_v2,
    phase_error,
    score_v2,
)

# ----------------------------------------------------------------------------- world v2


def test_v2_captions_round_trip_for_every_pattern():
    for pattern in world.PATTERNS:
        for shape in world.SHAPES:
            for fg in world.COLORS:
                for bg in world.COLORS:
                    text = world.caption(shape, fg, bg, pattern)
                    assert world.parse_caption_v2(text) == (shape, fg, bg, pattern)
                    assert not unknown_words(text, world.VOCABULARY_V2)
    assert world.caption("star", "orange", "red", "dotted") == (
        "an orange star on a red dotted background"
    )
    assert world.parse_caption("a red circle on a blue striped background") == (
        "circle",
        "red",
        "blue",
    )
    with pytest.raises(ValueError):
        world.parse_caption_v2("a red circle on a blue wavy background")


def test_held_out_v2_keeps_v1_combos_and_sampling_excludes_it():
    plain = {(s, f, b, "plain") for s, f, b in world.HELD_OUT}
    assert plain <= world.HELD_OUT_V2
    patterned = world.HELD_OUT_V2 - plain
    assert len(patterned) == 96
    assert {p for *_, p in patterned} == set(world.PATTERNS[1:])
    assert not {(f, b) for _, f, b, _ in patterned} & world.PATTERN_EXCLUDED
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene_v2(rng, exclude=world.HELD_OUT_V2) for _ in range(3000)]
    combos = {(s.shape, s.fg, s.bg, s.pattern) for s in scenes}
    assert not combos & world.HELD_OUT_V2
    assert {s.pattern for s in scenes} == set(world.PATTERNS)
    for s in scenes:
        assert s.pattern == "plain" or (s.fg, s.bg) not in world.PATTERN_EXCLUDED
        if s.pattern != "plain":
            lo, hi = (r * s.size for r in world.PERIOD_RANGE)
            assert lo <= s.pattern_period <= hi
            assert 0 <= s.pattern_angle_deg < world.PATTERN_SYMMETRY_DEG[s.pattern]


def _pan_video(pattern, pan, motion=world.ShapeMotion("translate", (2.0, -1.0)), frames=4):
    scene = world.sample_scene_v2(np.random.default_rng(4), pattern=pattern)
    return world.render_video(scene, motion, frames, world.BackgroundMotion("pan", pan))


@pytest.mark.parametrize("pattern", world.PATTERNS[1:])
def test_pan_moves_the_pattern_offset_by_its_velocity(pattern):
    video = _pan_video(pattern, (1.5, -0.75))
    ox, oy = video.scenes[0].pattern_offset
    for k, scene in enumerate(video.scenes):
        assert scene.pattern_offset == pytest.approx((ox + 1.5 * k, oy - 0.75 * k))
        assert (scene.pattern_angle_deg, scene.pattern_period) == (
            video.scenes[0].pattern_angle_deg,
            video.scenes[0].pattern_period,
        )


def _warp(frame, flow):
    """frame (3, H, W) sampled at x + flow(x) (bilinear)."""
    cv2 = pytest.importorskip("cv2")
    size = frame.shape[1]
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    hwc = np.ascontiguousarray(frame.transpose(1, 2, 0))
    out = cv2.remap(hwc, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    return out.transpose(2, 0, 1)


@pytest.mark.parametrize("pattern", world.PATTERNS[1:])
def test_video_flow_carries_each_frame_to_the_next(pattern):
    """Frame k+1 sampled at x + flow_k(x) is frame k: exactly for whole-pixel motions
    (background away from the object and the border, and the object's interior),
    approximately (bilinear sampling of sharp edges) for sub-pixel pans."""
    cv2 = pytest.importorskip("cv2")
    kernel = np.ones((5, 5), np.uint8)
    for pan, tolerance in (((2.0, -1.0), 1e-5), ((0.6, 1.3), 0.05)):
        video = _pan_video(pattern, pan)
        for k in range(len(video.frames) - 1):
            flow = video.flow(k)
            assert flow.shape == (64, 64, 2)
            warped = _warp(video.frames[k + 1], flow)
            near_object = cv2.dilate(
                (video.masks[k] | video.masks[k + 1]).astype(np.uint8), kernel
            ).astype(bool)
            inside = np.zeros((64, 64), bool)
            inside[4:-4, 4:-4] = True
            background = inside & ~near_object
            err = np.abs(warped - video.frames[k]).max(0)
            assert err[background].mean() <= tolerance, (pan, k)
            interior = cv2.erode(video.masks[k].astype(np.uint8), kernel).astype(bool)
            assert err[interior].max() <= 1e-5  # the object moves by whole pixels
            np.testing.assert_allclose(flow[background], np.tile(pan, (background.sum(), 1)))


def test_curve_motion_turns_and_stays_inside_the_frame():
    rng = np.random.default_rng(3)
    for _ in range(60):
        scene = world.sample_scene_v2(rng)
        motion = world.sample_motion_v2(rng, "curve")
        video = world.render_video(scene, motion, 8)
        for s in video.scenes:
            x, y = s.center
            assert s.radius + 0.5 <= min(x, y, 63 - x, 63 - y)
        steps = np.diff(np.array([s.center for s in video.scenes]), axis=0)
        speed = math.hypot(*motion.velocity)
        np.testing.assert_allclose(np.hypot(*steps.T), speed, rtol=1e-6)
        turns = np.degrees(np.diff(np.unwrap(np.arctan2(steps[:, 1], steps[:, 0]))))
        np.testing.assert_allclose(turns, motion.turn_deg, atol=1e-6)


# ----------------------------------------------------------------------------- detector v2


def test_detector_v2_is_right_on_ground_truth():
    """>= 98 % for every field on 400 scenes: pattern kind, colours, shape, the object's
    centroid/area/mask (as v1), orientation within 3 deg, period within 5 %, phase within
    0.08 period (the last three over the patterned scenes)."""
    accuracy = check_v2(400, seed=123)
    assert set(accuracy) == {
        "pattern", "bg", "fg", "shape", "centroid", "area", "mask", "angle", "period", "phase"
    }
    for field, fraction in accuracy.items():
        assert fraction >= 0.98, (field, fraction)


def test_detector_v2_tolerates_noise_and_blur():
    """>= 95 % for the pattern's kind, orientation, period and phase, the colours and the
    shape under the blur + noise of `test_detector_tolerates_noise_and_blur`."""
    accuracy = check_v2(300, seed=77, degraded=True)
    for field in ("pattern", "bg", "fg", "shape", "angle", "period", "phase"):
        assert accuracy[field] >= 0.95, (field, accuracy[field])


@pytest.mark.parametrize("pattern", world.PATTERNS[1:])
def test_detector_v2_reads_a_known_scene(pattern):
    scene = world.Scene(
        "star", "yellow", "blue", (30.0, 34.0), 14.0,
        pattern=pattern, pattern_angle_deg=20.0, pattern_period=11.0, pattern_offset=(3.0, 5.0),
    )
    image, mask = world.render(scene)
    found = detect_v2(image)
    assert all(score_v2(scene, mask, found).values())
    assert found.pattern_angle_deg == pytest.approx(20.0, abs=0.5)
    assert found.pattern_period == pytest.approx(11.0, rel=0.01)
    assert phase_error(scene, found) < 0.02
    assert all(0 <= p < 1 for p in found.pattern_phase)
    # detect() is the same detection; uint8 frames work too
    assert detect(image).pattern == pattern
    as_uint8 = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    assert (detect_v2(as_uint8).shape, detect_v2(as_uint8).pattern) == ("star", pattern)


def test_detector_v2_sees_plain_frames_as_plain():
    """v1 frames, clean and degraded, take the v1 path (so `detect` is unchanged there)."""
    rng, noise = np.random.default_rng(8), np.random.default_rng(9)
    for _ in range(100):
        scene = world.sample_scene(rng)
        image = world.render_image(scene)
        for frame in (image, degrade(image, noise)):
            found = detect_v2(frame)
            assert found.pattern == "plain"
            assert math.isnan(found.pattern_period) and math.isnan(found.pattern_phase[0])
    empty = detect_v2(np.full((3, 64, 64), 0.5, np.float32))
    assert (empty.pattern, empty.shape, empty.bg) == ("plain", None, "gray")


def test_background_shift_recovers_pans():
    """Pans of 0.5..2 px/frame within 0.25 px (across the stripes for striped patterns)."""
    assert check_shift(90, seed=5) >= 0.98
    assert check_shift(60, seed=6, degraded=True) >= 0.95


def test_background_shift_is_the_smallest_displacement():
    """Displacements are defined modulo the lattice: a pan of a period less than 1 px reads -1."""
    scene = world.Scene(
        "circle", "red", "blue", (30.0, 30.0), 9.0,
        pattern="dotted", pattern_angle_deg=0.0, pattern_period=12.0, pattern_offset=(2.0, 1.0),
    )
    for pan, expected in (((3.0, 0.0), (3.0, 0.0)), ((11.0, 0.5), (-1.0, 0.5))):
        pan_motion = world.BackgroundMotion("pan", pan)
        video = world.render_video(scene, world.ShapeMotion(), 2, pan_motion)
        shift = background_shift(video.frames[0], video.frames[1])
        assert shift == pytest.approx(expected, abs=0.1), pan
    plain = world.render_image(world.sample_scene(np.random.default_rng(1)))
    assert all(math.isnan(v) for v in background_shift(plain, plain))


# --- v2 background metrics on ground-truth videos -------------------------------------


def test_background_metrics_separate_a_kept_background_from_a_redrawn_one():
    from dataclasses import replace

    import numpy as np

    from zeroshot.shapes import world
    from zeroshot.shapes.metrics import background_metrics

    rng = np.random.default_rng(11)
    kept, redrawn, redrawn_corr, pans = [], [], [], []
    for i in range(12):
        kind = world.PATTERNS[1 + i % 3]
        scene = world.sample_scene_v2(rng, pattern=kind)
        pan = world.sample_background_motion(rng, "pan")
        still = world.ShapeMotion("translate", (1.0, 0.0))
        video = world.render_video(scene, still, 6, pan)
        m = background_metrics(video.frames, scene.caption, pan.velocity)
        kept.append(m["background_identity"])
        pans.append(m["background_motion_error"])
        # per-frame redraws: same caption, new free pattern parameters every frame
        frames = np.stack(
            [world.render(replace(s, **world.sample_pattern(rng, kind)))[0] for s in video.scenes]
        )
        r = background_metrics(frames, scene.caption, pan.velocity)
        redrawn.append(r["background_identity"])
        redrawn_corr.append(r["background_correlation"])
        assert m["background_correlation"] > 0.95
        assert m["pattern_accuracy"] == 1.0
    assert np.mean(kept) >= 0.95 and np.mean(pans) < 0.2
    assert np.mean(redrawn) < 0.3 and max(abs(c) for c in redrawn_corr) < 0.2
    plain = world.render_video(world.sample_scene_v2(rng, pattern="plain"), world.ShapeMotion(), 3)
    assert np.isnan(background_metrics(plain.frames, plain.caption)["background_identity"])


def test_background_metrics_read_a_drawing_with_no_exact_lattice():
    """A model's wobbly stripes fit no lattice (the detector reads only their kind); the
    background is still followed: a pan of it is measured and kept, a redraw is not."""
    import cv2
    import numpy as np

    from zeroshot.shapes import world
    from zeroshot.shapes.detector import background_coverage, detect_v2
    from zeroshot.shapes.metrics import background_metrics, measured_background_shift

    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64)

    def frame(dx: float, seed: int) -> np.ndarray:
        wobble = 2.5 * np.sin(yy / 7.0 + seed) + 1.5 * np.sin(yy / 3.1 + 2 * seed)
        shade = (np.sin(2 * np.pi * (xx - dx + wobble) / 11.0) > 0).astype(np.float64)
        blue, dark = np.array(world.PALETTE["blue"]) / 255.0, np.array(world.shade("blue")) / 255.0
        image = blue[None, None] * (1 - shade[..., None]) + dark[None, None] * shade[..., None]
        image = image[16:80, 16:80].copy()
        cv2.circle(image, (30, 34), 9, tuple(float(c) / 255.0 for c in world.PALETTE["red"]), -1)
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6).transpose(2, 0, 1)

    pan = np.stack([frame(1.5 * k, 0) for k in range(5)])
    assert np.isnan(detect_v2(pan[0]).pattern_angle_deg)  # no exact lattice
    shift = measured_background_shift(background_coverage(pan[0]), background_coverage(pan[1]))
    assert abs(shift[0] - 1.5) < 0.3
    caption = "a red circle on a blue striped background"
    kept = background_metrics(pan, caption, (1.5, 0.0))
    assert kept["background_correlation"] > 0.9 and kept["background_identity"] == 1.0
    assert kept["background_motion_error"] < 0.3
    still = background_metrics(pan, caption, (0.0, 0.0))  # asked to stay: it moved
    assert still["background_correlation"] < kept["background_correlation"] - 0.3
    redrawn = background_metrics(np.stack([frame(0.0, s) for s in range(5)]), caption, (0.0, 0.0))
    assert redrawn["background_correlation"] < 0.5


def test_motion_training_clips_of_world_v2_skip_held_out_captions_and_pan():
    """`train_motion --world v2`: v2 captions (patterns named), never a held-out combination,
    and backgrounds that move by themselves in some clips."""
    from zeroshot.trained.train_motion import ShapesVideos

    clips = ShapesVideos(seed=0, batch_size=4, frames=(8,), size=64, length=40, world="v2")
    patterns, panned = set(), 0
    for i in range(len(clips)):
        frames, text = clips[i]
        assert frames.shape == (8, 3, 64, 64)
        combo = world.parse_caption_v2(text)
        assert combo not in world.HELD_OUT_V2
        patterns.add(combo[3])
        if combo[3] != "plain":
            panned += int(frames[0].ne(frames[-1]).float().mean() > 0.5)  # the whole background moved
    assert len(patterns) >= 3 and panned > 0
    with pytest.raises(ValueError, match="v1 or v2"):
        ShapesVideos(0, 1, (8,), 64, 1, world="v3")


def _wobble(image, rng, amplitude=2.5):
    """`image` (3, H, W) displaced by a smooth random field (~`amplitude` px): its pattern no
    longer fits an exact lattice, as a model's drawing does not."""
    import cv2

    h, w = image.shape[1:]
    field = [cv2.resize(rng.normal(size=(4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * amplitude
             for _ in range(2)]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = cv2.remap(image.transpose(1, 2, 0).astype(np.float32), xs + field[0], ys + field[1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    return out.transpose(2, 0, 1)


def test_detector_v2_reads_the_kind_of_patterns_that_fit_no_lattice():
    """Wobbly stripes, uneven dots and bent checkerboards (as generated images have them) are
    read by kind (`pattern_kind`: angle, period and phase unknown); plain stays plain."""
    rng = np.random.default_rng(0)
    wrong = []
    for i in range(80):
        kind = world.PATTERNS[i % len(world.PATTERNS)]
        scene = world.sample_scene_v2(rng, pattern=kind)
        found = detect_v2(_wobble(world.render_image(scene), rng))
        if (found.pattern, found.fg, found.bg) != (kind, scene.fg, scene.bg):  # (the warp bends the object too)
            wrong.append((kind, found.pattern, found.fg, found.bg))
    assert len(wrong) <= 4, wrong  # >= 95 %


@pytest.mark.slow
def test_the_v2_model_ships_small_and_draws_held_out_captions_as_documented():
    """The shipped v2 model (`--model shapes-v2`): a <= 25 MB safetensors SD folder with the v2
    vocabulary, and 48 held-out v2 captions (plain and patterned; seeds the documented
    measurement did not use) drawn at its stored settings, each field at least the issue's
    target less 3 standard errors of 48 (fg/bg 95 %, shape 85 %, pattern kind 90 %; measured
    98-100 %, docs/shapes.md)."""
    import json

    from zeroshot import models
    from zeroshot.shapes.evaluate import eval_prompts, load_pipeline, sample

    folder = models.EMBEDDED_MODELS["shapes-v2"]
    if not (folder / "model_index.json").is_file():
        pytest.skip("the v2 model is not in this installation")
    # the SD model itself (its model_index components); the motion module and the edge
    # ControlNet that ship beside it have their own budgets
    import json

    parts = [k for k in json.loads((folder / "model_index.json").read_text()) if not k.startswith("_")]
    files = [p for part in parts for p in (folder / part).rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert (folder / "motion_module.safetensors").stat().st_size <= 10 * 2**20
    assert sum(p.stat().st_size for p in (folder / "controlnet_canny").iterdir()) <= 10 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt")]
    record = json.loads((folder / "zeroshot.json").read_text())
    assert record["vocabulary"] == list(world.VOCABULARY_V2)
    pipe = load_pipeline(folder)
    prompts = [p for p, _ in eval_prompts(48, 1, "v2")]
    images = sample(pipe, prompts, [9000 + i for i in range(len(prompts))],
                    guidance_scale=record["defaults"]["guidance_scale"],
                    num_inference_steps=record["defaults"]["num_inference_steps"])
    right = {"fg": 0, "bg": 0, "shape": 0, "pattern": 0}
    for image, prompt in zip(images, prompts):
        shape, fg, bg, pattern = world.parse_caption_v2(prompt)
        found = detect_v2(image)
        right["shape"] += found.shape == shape
        right["fg"] += found.fg == fg
        right["bg"] += found.bg == bg
        right["pattern"] += found.pattern == pattern
    targets = {"fg": 0.95, "bg": 0.95, "shape": 0.85, "pattern": 0.90}
    for field, target in targets.items():
        rate = right[field] / len(prompts)
        assert rate >= target - 3 * math.sqrt(target * (1 - target) / len(prompts)), (field, right)


def test_world_clips_of_v2_captions_keep_their_background_and_summarise_it():
    """`evaluate.world_videos` draws a v2 caption's clip (object moving, background still), and
    `summarise(background=True)` reads that background as kept; v1 captions keep v1's clips."""
    from zeroshot.shapes.world import parse_caption_v2
    from zeroshot.trained.evaluate import BACKGROUND_COLUMNS, summarise, world_videos

    v2 = world_videos(["a red square on a blue striped background"], 8, 2)
    assert len(v2) == 2 and v2[0][1].shape == (8, 3, 64, 64)
    row = summarise(v2, background=True)
    assert all(row[k] > 0.95 for k in BACKGROUND_COLUMNS)
    assert row["alignment"] == 1.0 and row["speed_px"] > 0.5
    v1 = world_videos(["a red square on a blue background"], 8, 1)
    assert parse_caption_v2(v1[0][0])[3] == "plain"
    assert "background_correlation" not in summarise(v1)
