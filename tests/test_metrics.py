"""Video metrics (zeroshot.metrics), shapes-world metrics and `zeroshot eval`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zeroshot import metrics

# ---------------------------------------------------------------------------------------
# synthetic videos


def _texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (size, size, 3) in [0, 1] that optical flow can track."""
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return (image - image.min()) / (image.max() - image.min())


def _shifted_video(dx: int, dy: int, *, num_frames: int = 6, size: int = 64, noise: float = 0.0, seed: int = 0):
    """Frames that are exact copies of a window moving over a texture by (dx, dy) px/frame.

    Content moves right by dx and down by dy per frame; `noise` adds independent Gaussian
    noise of that std to every frame.
    """
    big = _texture(size + 2 * 40, seed)
    rng = np.random.default_rng(seed + 1)
    frames = []
    for k in range(num_frames):
        y0, x0 = 40 - dy * k, 40 - dx * k
        image = big[y0 : y0 + size, x0 : x0 + size]
        if noise:
            image = np.clip(image + noise * rng.standard_normal(image.shape).astype(np.float32), 0, 1)
        frames.append(image.transpose(2, 0, 1))
    return np.stack(frames)


# ---------------------------------------------------------------------------------------
# zeroshot.metrics


@pytest.mark.parametrize("shift", [(2, 1), (3, -2), (0, 4)])
def test_warp_error_near_zero_for_exact_shifted_copies(shift):
    dx, dy = shift
    result = metrics.warp_error(_shifted_video(dx, dy))
    assert result["warp_error"] < 1e-3
    # the flow explains the motion: its magnitude is the shift length
    assert result["flow_magnitude"] == pytest.approx(np.hypot(dx, dy), abs=0.1)
    # pixels that leave the frame are excluded, the rest are kept
    assert 0.7 < result["valid_fraction"] < 1.0


def test_warp_error_grows_with_injected_noise():
    errors = [metrics.warp_error(_shifted_video(2, 1, noise=s))["warp_error"] for s in (0.0, 0.01, 0.03, 0.1)]
    assert errors[0] < 1e-3
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    # independent Gaussian noise of std s gives a mean absolute error near s * 2 / sqrt(pi)
    assert errors[-1] == pytest.approx(0.1 * 2 / np.sqrt(np.pi), rel=0.25)


def test_still_video_has_zero_error_and_zero_flow():
    video = np.repeat(_shifted_video(0, 0, num_frames=1), 4, axis=0)
    result = metrics.video_metrics(video)
    assert result["warp_error"] == 0.0
    assert result["flow_magnitude"] == 0.0
    assert result["flicker"] == 0.0
    assert result["frame_difference"] == 0.0
    assert result["ssim"] == pytest.approx(1.0)


def test_flicker_zero_for_constant_video_and_measures_brightness_steps():
    constant = torch.full((5, 3, 32, 32), 0.3)
    assert metrics.flicker(constant) == 0.0
    # alternating brightness 0.3 / 0.5: every step changes the mean luminance by 0.2
    alternating = constant.clone()
    alternating[1::2] = 0.5
    assert metrics.flicker(alternating) == pytest.approx(0.2, abs=1e-6)
    assert metrics.frame_difference(alternating) == pytest.approx(0.2, abs=1e-6)


def test_flicker_ignores_motion_that_keeps_brightness():
    # a moving texture changes pixels but not the frame's mean brightness much
    moving = _shifted_video(2, 0)
    assert metrics.frame_difference(moving) > 0.03
    assert metrics.flicker(moving) < 0.005


def test_ssim_falls_with_noise_and_motion():
    still = np.repeat(_shifted_video(0, 0, num_frames=1), 3, axis=0)
    noisy = _shifted_video(0, 0, num_frames=3, noise=0.05)
    moving = _shifted_video(3, 0, num_frames=3)
    assert metrics.ssim_consecutive(still) == pytest.approx(1.0)
    assert metrics.ssim_consecutive(noisy) < 0.9
    assert metrics.ssim_consecutive(moving) < 0.9


def test_small_and_non_square_frames_work():
    video = _shifted_video(1, 1, size=64)[:, :, :, :40]  # (f, 3, 64, 40)
    result = metrics.video_metrics(torch.from_numpy(video))
    assert result["flow_magnitude"] == pytest.approx(np.sqrt(2), abs=0.15)
    assert result["warp_error"] < 2e-3


def test_bad_input_raises_one_clear_error():
    with pytest.raises(ValueError, match="at least 2 frames"):
        metrics.video_metrics(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(f, 3, H, W\)"):
        metrics.video_metrics(np.zeros((4, 8, 8, 3)))


# ---------------------------------------------------------------------------------------
# zeroshot.shapes.metrics on procedurally generated ground truth


def _world_videos(kind: str, count: int, num_frames: int = 8, seed: int = 0):
    from zeroshot.shapes import world

    rng = np.random.default_rng(seed)
    return [world.sample_video(rng, num_frames, kind=kind) for _ in range(count)]


def test_parse_prompt_reads_world_captions_and_rejects_others():
    from zeroshot.shapes.metrics import is_shapes_prompt, parse_prompt

    assert parse_prompt("a red circle on a blue background") == ("circle", "red", "blue")
    assert parse_prompt("an orange ring on a white background") == ("ring", "orange", "white")
    assert not is_shapes_prompt("a cat playing the piano")
    with pytest.raises(ValueError, match="caption"):
        parse_prompt("a purple circle on a blue background")


def test_ground_truth_translations_score_perfectly():
    from zeroshot.recipe import Motion
    from zeroshot.shapes.metrics import shapes_metrics

    for video in _world_videos("translate", 12):
        motion = Motion(translate=video.motion.velocity)
        result = shapes_metrics(video.frames, video.caption, motion=motion)
        assert result["alignment"] == 1.0, video.caption
        assert result["consistency"] == 1.0, video.caption
        assert result["motion_error"] <= 0.5, (video.caption, result)
        assert result["speed_px"] == pytest.approx(np.hypot(*video.motion.velocity), abs=0.5)
        assert result["requested_speed_px"] == pytest.approx(np.hypot(*video.motion.velocity), abs=1e-3)
        assert result["background_change"] == 0.0


def test_motion_error_sees_wrong_direction_and_missing_motion():
    from zeroshot.recipe import Motion
    from zeroshot.shapes.metrics import shapes_metrics

    video = _world_videos("translate", 1, seed=3)[0]
    vx, vy = video.motion.velocity
    right = shapes_metrics(video.frames, video.caption, motion=Motion(translate=(vx, vy)))
    wrong = shapes_metrics(video.frames, video.caption, motion=Motion(translate=(-vx, -vy)))
    none = shapes_metrics(video.frames, video.caption)
    assert right["motion_error"] <= 0.5
    assert wrong["motion_error"] == pytest.approx(2 * np.hypot(vx, vy), abs=0.5)
    assert right["along_px"] == pytest.approx(np.hypot(vx, vy), abs=0.3)
    assert wrong["along_px"] == pytest.approx(-np.hypot(vx, vy), abs=0.3)
    assert np.isnan(none["motion_error"]) and np.isnan(none["requested_speed_px"])
    assert none["speed_px"] == pytest.approx(right["speed_px"])


def test_heading_steadiness_reads_straight_reversing_and_random_paths():
    from zeroshot.shapes.metrics import heading_steadiness, shapes_metrics

    straight = np.tile([[1.5, -0.5]], (7, 1))
    assert heading_steadiness(straight) == pytest.approx(1.0)
    assert heading_steadiness(straight * np.array([[1], [-1]] * 3 + [[1]])) == pytest.approx(-1.0)
    walk = np.random.default_rng(0).normal(size=(4000, 2)) * 3
    assert abs(heading_steadiness(walk)) < 0.05
    assert np.isnan(heading_steadiness(np.zeros((7, 2))))  # nothing moves: no direction to read
    assert np.isnan(heading_steadiness(straight[:1]))
    for video in _world_videos("translate", 4, seed=2):  # the world's translations are straight
        assert shapes_metrics(video.frames, video.caption)["heading"] > 0.95, video.caption


def test_still_and_zooming_ground_truth_are_aligned_and_consistent():
    from zeroshot.shapes.metrics import shapes_metrics

    for video in _world_videos("zoom", 6, seed=1):
        result = shapes_metrics(video.frames, video.caption)
        assert result["alignment"] == 1.0 and result["consistency"] == 1.0, video.caption
        assert result["speed_px"] < 0.5  # zoom about the shape's own centre does not move it
        assert result["size_change"] > 0.1  # but the size changes


def test_colour_change_mid_way_lowers_consistency_and_alignment():
    from dataclasses import replace

    from zeroshot.shapes import world
    from zeroshot.shapes.metrics import shapes_metrics

    rng = np.random.default_rng(7)
    scene = world.sample_scene(rng, shape="square", fg="red", bg="blue")
    still = world.ShapeMotion("translate", velocity=(0.0, 0.0))
    first = world.render_video(scene, still, 4).frames
    second = world.render_video(replace(scene, fg="yellow"), still, 4).frames
    result = shapes_metrics(np.concatenate([first, second]), scene.caption)
    assert result["consistency"] == pytest.approx(3 / 7)  # of frames 1..7, only 1..3 match frame 0
    assert result["alignment"] == pytest.approx(0.5)
    assert result["fg_accuracy"] == pytest.approx(0.5)
    assert result["shape_accuracy"] == 1.0 and result["bg_accuracy"] == 1.0
    reference = shapes_metrics(np.concatenate([first, first]), scene.caption)
    assert reference["consistency"] == 1.0


def test_background_change_counts_background_pixels_only():
    from zeroshot.shapes.metrics import shapes_metrics

    video = _world_videos("translate", 1, seed=5)[0]
    frames = video.frames.copy()
    assert shapes_metrics(frames, video.caption)["background_change"] == 0.0
    # change the shape's colour slightly in every other frame: the background is untouched
    tinted = frames.copy()
    masks = video.masks[:, None].repeat(3, axis=1)
    tinted[1::2] = np.where(masks[1::2], np.clip(tinted[1::2] * 0.9, 0, 1), tinted[1::2])
    assert shapes_metrics(tinted, video.caption)["background_change"] == 0.0
    # noise on the background is measured
    rng = np.random.default_rng(0)
    noisy = np.clip(frames + 0.05 * rng.standard_normal(frames.shape).astype(np.float32) * ~masks, 0, 1)
    assert shapes_metrics(noisy, video.caption)["background_change"] > 0.03


# ---------------------------------------------------------------------------------------
# zeroshot eval


def _eval(argv: list[str]) -> int:
    import argparse

    from zeroshot.cli import evaluate

    parser = argparse.ArgumentParser(prog="zeroshot")
    evaluate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def _write_render(folder, name: str, video, *, motion=None, fmt: str = ".gif"):
    import json

    import torch

    from zeroshot.io import write_video
    from zeroshot.recipe import Recipe, recipe_to_dict

    path = folder / f"{name}{fmt}"
    write_video(torch.from_numpy(video.frames), path)
    record = {"prompt": video.caption, "recipe": recipe_to_dict(Recipe(motion=motion))}
    (folder / f"{name}.json").write_text(json.dumps(record))
    return path


def test_eval_reads_records_and_prints_a_table(tmp_path, capsys):
    import json

    from zeroshot.recipe import Motion

    moving, still = _world_videos("translate", 2, seed=11)
    _write_render(tmp_path, "moving", moving, motion=Motion(translate=moving.motion.velocity, t0=1, t1=2))
    _write_render(tmp_path, "frames", still, fmt="")  # a PNG-frame folder, no motion asked

    assert _eval([str(tmp_path / "moving.gif"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["prompt"] == moving.caption and row["frames"] == 8
    assert row["alignment"] == 1.0 and row["consistency"] == 1.0
    assert row["motion_error"] <= 0.5

    assert _eval([str(tmp_path / "frames"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["prompt"] == still.caption and row["motion_error"] is None

    assert _eval([str(tmp_path)]) == 0  # the folder: its one gif
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["video", "frames", "warp_err"] and len(lines) == 2
    assert lines[1].startswith("moving.gif")


def test_eval_prompt_flag_overrides_the_record(tmp_path, capsys):
    import json

    video = _world_videos("zoom", 1, seed=2)[0]
    path = _write_render(tmp_path, "clip", video)
    shape, fg, bg = video.scenes[0].shape, video.scenes[0].fg, video.scenes[0].bg
    other = next(s for s in ("circle", "square", "star") if s != shape)
    assert _eval([str(path), "--json", "--prompt", f"a {fg} {other} on a {bg} background"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["alignment"] == 0.0 and row["consistency"] == 1.0
    # a prompt from outside the shapes world: generic metrics only
    assert _eval([str(path), "--json", "--prompt", "a cat"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert "warp_error" in row and "alignment" not in row


def test_eval_reads_a_v2_background_against_the_requested_pan(tmp_path, capsys):
    """A patterned v2 clip whose camera pans as its record's motion asks: the background is
    kept (correlation ~1) and moves as asked; asked to stay still, it is not kept."""
    import json

    import numpy as np

    from zeroshot.recipe import Motion
    from zeroshot.shapes import world

    rng = np.random.default_rng(4)
    scene = world.sample_scene_v2(rng, pattern="checkered")
    pan = world.BackgroundMotion("pan", (1.5, -0.5))
    video = world.render_video(scene, world.ShapeMotion("translate", (1.5, -0.5)), 8, pan)
    _write_render(tmp_path, "pan", video, fmt="", motion=Motion(translate=pan.velocity, t0=1, t1=2))
    assert _eval([str(tmp_path / "pan"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["pattern_accuracy"] == 1.0 and row["background_correlation"] > 0.95
    assert abs(row["background_speed_px"] - float(np.hypot(1.5, 0.5))) < 0.3
    _write_render(tmp_path, "asked_still", video, fmt="")  # no motion in the record
    assert _eval([str(tmp_path / "asked_still"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["background_correlation"] < 0.8


def test_eval_bad_path_is_one_line_and_exit_2(tmp_path, capsys):
    assert _eval([str(tmp_path / "missing.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.mp4" in err
    (tmp_path / "notes.txt").write_text("x")
    assert _eval([str(tmp_path / "notes.txt")]) == 2
    assert _eval([str(tmp_path)]) == 2
    assert "no videos" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# bench/quality.py (smoke run on the tiny random model)


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_bench_writes_table_chart_and_sheets(tiny_sd, tmp_path):
    import cv2

    quality = _bench_module()
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nNotes kept across runs.\n")
    argv = ["--model", str(tiny_sd), "--size", "32", "--steps", "2", "--prompts", "1", "--seeds", "1",
            "--frames", "3", "--variants", "t2i,t2v-zero,t2v-zero -motion", "--out", str(tmp_path)]
    assert quality.main(argv) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nNotes kept across runs.")
    table = [line for line in text.splitlines() if line.startswith("| t2")]
    assert [line.split("|")[1].strip() for line in table] == ["t2i", "t2v-zero", "t2v-zero -motion"]
    chart = cv2.imread(str(tmp_path / "results_chart.png"))
    sheet = cv2.imread(str(tmp_path / "results_sheet_t2v-zero.png"))
    assert chart is not None and sheet is not None and sheet.shape[1] >= 384
    # a second run replaces the block instead of appending another one
    assert quality.main(argv) == 0
    assert doc.read_text().count(quality.BEGIN) == 1


def test_identical_groups_finds_equal_videos_only():
    quality = _bench_module()
    a, b = np.zeros((2, 3, 4, 4)), np.ones((2, 3, 4, 4))
    groups = quality.identical_groups({"x": [a], "y": [b], "z": [a.copy()], "w": [b + 1]})
    assert groups == [["x", "z"]]


def test_along_speed_is_robust_to_uneven_steps_and_one_wrong_frame():
    from dataclasses import replace

    from zeroshot.recipe import Motion
    from zeroshot.shapes import world
    from zeroshot.shapes.metrics import shapes_metrics

    rng = np.random.default_rng(4)
    scene = replace(world.sample_scene(rng, shape="circle", fg="yellow", bg="black"), center=(14.0, 30.0), radius=8.0)
    xs = [14, 14, 18, 18, 22, 22, 26, 26]  # 2 px/frame on average, in 4-px steps
    frames = np.stack([world.render(replace(scene, center=(float(x), 30.0)))[0] for x in xs])
    result = shapes_metrics(frames, scene.caption, motion=Motion(translate=(2.0, 0.0)))
    assert result["along_px"] == pytest.approx(2.0, abs=0.3)
    frames[5] = world.render(replace(scene, center=(50.0, 50.0)))[0]  # one frame elsewhere
    jumped = shapes_metrics(frames, scene.caption, motion=Motion(translate=(2.0, 0.0)))
    assert jumped["along_px"] == pytest.approx(2.0, abs=0.5)
    assert jumped["motion_error"] > result["motion_error"] + 5  # the mean error counts the jump


def test_edge_f_score_counts_edges_within_the_tolerance():
    from zeroshot.metrics import edge_f_score

    ref = np.zeros((2, 16, 16), bool)
    ref[:, 8, 2:14] = True  # a 12 px line in each frame
    assert edge_f_score(ref, ref)["edge_f"] == 1.0
    shifted = np.roll(ref, 1, axis=1)  # one px off: inside the 1 px tolerance
    assert edge_f_score(shifted, ref)["edge_f"] == 1.0
    assert edge_f_score(shifted, ref, tolerance=0)["edge_f"] == 0.0
    half = ref.copy()
    half[:, 8, 8:] = False  # half the line: precision 1, recall 7/12 (x = 8 is 1 px from the end)
    m = edge_f_score(half, ref)
    assert m["edge_precision"] == 1.0 and m["edge_recall"] == 7 / 12 and abs(m["edge_f"] - 14 / 19) < 1e-12
    far = np.roll(ref, 5, axis=1)
    assert edge_f_score(far, ref)["edge_f"] == 0.0
    four = np.repeat(ref[:, None], 3, axis=1).astype(np.float32)  # (f, 3, H, W) maps as canny gives them
    assert edge_f_score(four, ref)["edge_f"] == 1.0
    assert np.isnan(edge_f_score(np.zeros_like(ref), ref)["edge_precision"])
    with pytest.raises(ValueError, match="differ in shape"):
        edge_f_score(ref[:1], ref)
