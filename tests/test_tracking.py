"""Point tracking and the trajectory error ObjMC (zeroshot.tracking) and `zeroshot eval --trajectory`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zeroshot import tracking
from zeroshot.shapes import world


def _plain_world_video(kind: str, seed: int) -> world.Video:
    """A rendered shapes-world clip on a plain background (`kind`: translate, bounce, curve, zoom)."""
    rng = np.random.default_rng([31, seed])
    if kind == "curve":
        scene = world.sample_scene(rng)
        return world.render_video(scene, world.sample_motion_v2(rng, "curve"), 8)
    return world.sample_video(rng, 8, kind=kind)


def _centres(video: world.Video) -> np.ndarray:
    """The exact ground truth: each frame's shape centre (f, 1, 2)."""
    return np.array([s.center for s in video.scenes])[:, None]


@pytest.mark.parametrize("kind", ["translate", "bounce", "curve"])
def test_opencv_and_detector_track_world_videos_to_their_ground_truth(kind):
    from zeroshot.shapes.detector import detect
    from zeroshot.shapes.metrics import soft_centroid

    for seed in range(6):
        video = _plain_world_video(kind, seed)
        truth = _centres(video)
        tracked = tracking.track_points(video.frames, truth[0])
        error = np.linalg.norm(tracked - truth, axis=-1)
        assert np.isfinite(error).all(), (kind, seed)  # nothing lost
        assert error.max() <= 0.5, (kind, seed, error.round(2))
        result = tracking.objmc(truth, tracked)
        assert result["objmc"] <= 0.25 and result["lost"] == 0 and result["pairs"] == 7
        # the shapes detector: a second tracker, exact up to the rendering's quarter-pixel edges
        images = video.frames.transpose(0, 2, 3, 1)
        centroids = np.array([soft_centroid(im, detect(f).mask) for im, f in zip(images, video.frames)])[:, None]
        assert np.linalg.norm(centroids - truth, axis=-1).max() <= 0.15
        assert tracking.objmc(centroids, tracked)["objmc"] <= 0.5  # the two trackers agree


def _shifted_texture(dx: int, dy: int, num_frames: int, size: int = 64) -> np.ndarray:
    """(f, 3, H, W) frames of a smooth random texture whose content moves (dx, dy) px/frame."""
    import cv2

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((size + 80, size + 80, 3)).astype(np.float32), (0, 0), 2.0)
    big = (big - big.min()) / (big.max() - big.min())
    return np.stack([big[40 - dy * k : 40 - dy * k + size, 40 - dx * k : 40 - dx * k + size].transpose(2, 0, 1)
                     for k in range(num_frames)])


def test_tracks_exact_shifts_of_a_texture_and_notices_a_wrong_request():
    frames = _shifted_texture(2, -1, 6)
    points = np.array([[20.0, 30.0], [40.0, 25.0], [31.5, 31.5]])
    tracked = tracking.track_points(torch.from_numpy(frames), points)
    truth = points[None] + np.arange(6)[:, None, None] * np.array([2.0, -1.0])
    assert np.abs(tracked - truth).max() < 0.05
    assert tracking.trajectory_error(frames, truth)["objmc"] < 0.05
    # a request twice as fast: the error grows by one step per frame
    fast = points[None] + np.arange(6)[:, None, None] * np.array([4.0, -2.0])
    result = tracking.trajectory_error(frames, fast)
    assert result["per_frame"] == pytest.approx([np.hypot(2, 1) * k for k in range(1, 6)], abs=0.05)


def test_lost_points_stay_lost_and_are_counted_not_scored():
    video = _plain_world_video("translate", 0)
    frames = video.frames.copy()
    frames[4:] = frames[0, :, :1, :1]  # the shape vanishes at frame 4: a flat frame
    truth = _centres(video)
    tracked = tracking.track_points(frames, truth[0])
    assert np.isfinite(tracked[:4]).all() and np.isnan(tracked[4:]).all()
    result = tracking.objmc(truth, tracked)
    assert result["lost"] == 4 and result["pairs"] == 7 and result["tracked_frames"] == 3
    assert result["per_frame"][3:] == [None] * 4
    assert result["objmc"] == pytest.approx(np.mean(result["per_frame"][:3]))


def test_objmc_is_the_mean_distance_over_frames_after_the_first():
    requested = np.zeros((4, 2, 2))
    tracked = requested.copy()
    tracked[1, 0] = (3.0, 4.0)  # 5 px off
    tracked[2, 1] = (np.nan, np.nan)  # lost
    tracked[3] = [(1.0, 0.0), (0.0, 2.0)]
    tracked[0] = (9.0, 9.0)  # frame 0 is the start point: not scored
    out = tracking.objmc(requested, tracked)
    assert out["objmc"] == pytest.approx((5 + 0 + 0 + 1 + 2) / 5)
    assert out["per_frame"] == pytest.approx([2.5, 0.0, 1.5])
    assert out["per_point"] == pytest.approx([2.0, 1.0])
    assert out["lost"] == 1 and out["pairs"] == 6
    assert out["objmc_sem"] == pytest.approx(np.std([2.5, 0.0, 1.5], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="both be"):
        tracking.objmc(requested, tracked[:3])


def test_requested_positions_follow_the_generate_syntax():
    from zeroshot.recipe import RecipeError

    pos = tracking.requested_positions(["0,0 14,7", "10,10@0 18,10@4 18,2@7"], 8, 64, 64)
    assert pos.shape == (8, 2, 2)
    assert pos[:, 0, 0] == pytest.approx(np.arange(8) * 2.0)
    assert pos[4, 1] == pytest.approx([18, 10]) and pos[7, 1] == pytest.approx([18, 2])
    with pytest.raises(RecipeError, match="outside the 64x64 frame"):
        tracking.requested_positions(["0,0 70,5"], 8, 64, 64)
    with pytest.raises(RecipeError, match="at least two points"):
        tracking.requested_positions(["3,3"], 8, 64, 64)


def test_window_grows_until_the_point_sees_edges():
    scene = world.Scene("square", "green", "blue", (32.0, 32.0), 18.0)
    image = np.clip(np.rint(world.render(scene)[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    centre, edge = tracking.choose_windows(image, np.array([[32.0, 32.0], [32.0 + 12.7, 32.0 + 12.7]]))
    assert centre >= 27  # the square's sides are 12.7 px from its centre
    assert edge == tracking.WINDOWS[0]  # a corner: the smallest window has structure


# ---------------------------------------------------------------------------------------
# zeroshot eval --trajectory


def _eval(argv: list[str]) -> int:
    import argparse

    from zeroshot.cli import evaluate

    parser = argparse.ArgumentParser(prog="zeroshot")
    evaluate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def _clip(tmp_path, suffix=".gif"):
    from zeroshot.io import write_video

    scene = world.Scene("circle", "red", "blue", (20.0, 30.0), 9.0)
    video = world.render_video(scene, world.ShapeMotion("translate", (2.0, -1.0)), 8)
    path = tmp_path / f"clip{suffix}"
    write_video(torch.from_numpy(video.frames), path)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_eval_trajectory_prints_objmc_and_per_frame_errors(tmp_path, capsys, suffix):
    path = _clip(tmp_path, suffix)
    assert _eval(["--trajectory", "20,30 34,23", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["frames"] == 8 and row["lost"] == 0 and len(row["per_frame"]) == 7
    assert row["objmc"] <= 0.1 and row["objmc_sem"] is not None
    assert row["requested"][7][0] == [34.0, 23.0]
    assert row["tracked"][7][0] == pytest.approx([34.0, 23.0], abs=0.2)
    # pinned: the same path reaches its end at frame 4 and holds; the shape does not
    assert _eval(["--trajectory", "20,30 28,26@4", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["per_frame"][3] <= 0.1 and row["per_frame"][6] == pytest.approx(3 * np.hypot(2, 1), abs=0.2)
    assert _eval(["--trajectory", "20,30 34,23", "--trajectory", "20,30 20,30@7", str(path)]) == 0
    head, per_frame = capsys.readouterr().out.strip().splitlines()
    assert head.startswith(f"clip{suffix}: ObjMC ") and "of 14 frame-points lost" in head
    assert per_frame.split(":")[0].strip() == "per frame" and len(per_frame.split(":")[1].split()) == 7


@pytest.mark.parametrize(
    ("trajectory", "needle"),
    [
        ("20,30", "at least two points"),
        ("20,30 70,3", "outside the 64x64 frame"),
        ("20,30 30,30@9", "within [0, 7]"),
        ("a,b 3,3", "expected 'x,y x,y"),
    ],
)
def test_eval_trajectory_bad_input_is_one_line_and_exit_2(tmp_path, capsys, trajectory, needle):
    path = _clip(tmp_path)
    assert _eval(["--trajectory", trajectory, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("zeroshot eval: error: --trajectory: ") and needle in line


def test_eval_trajectory_unreadable_video_is_one_line_and_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert _eval(["--trajectory", "1,1 2,2", str(broken)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "broken.mp4" in line and "cannot read" in line
    assert _eval(["--trajectory", "1,1 2,2", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
