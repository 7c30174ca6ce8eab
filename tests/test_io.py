"""Video files, atomic writes and run records (zeroshot.io)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from zeroshot import io
from zeroshot.recipe import METHODS, apply_override, recipe_from_dict, recipe_hash, resolve


def smooth_video(f=8, h=32, w=32):
    """Smooth moving gradients: compress well, so lossy formats stay close."""
    y = torch.linspace(0, 1, h).view(1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w)
    frames = []
    for k in range(f):
        r = (x + 0.05 * k) % 1.0
        g = y.expand(1, h, w)
        b = 0.5 + 0.4 * torch.sin(6.0 * (x + y) + k * 0.3)
        frames.append(torch.cat([r.expand(1, h, w), g, b], 0))
    return torch.stack(frames)  # f 3 H W


def fake_result(n=1, f=8, h=32, w=32, prompt="a red circle"):
    recipe = resolve(METHODS["t2v-zero"])
    frames = torch.stack([smooth_video(f, h, w) * (0.5 + 0.5 * i / max(n, 1)) for i in range(n)])
    return SimpleNamespace(
        frames=frames, latents=torch.zeros(n, 4, f, h // 8, w // 8), recipe=recipe,
        prompt=prompt, seed=3, model_id="tiny",
    )


def no_temps(folder):
    return [p for p in os.listdir(folder) if ".zstmp" in p] == []


@pytest.mark.parametrize("ext,tol", [("mp4", 0.03), ("gif", 0.03), ("png", 0.5 / 255 + 1e-6)])
def test_round_trip_each_format(tmp_path, ext, tol):
    frames = smooth_video(8, 32, 48)
    path = tmp_path / f"clip.{ext}"
    written = io.write_video(frames, path, fps=8)
    back = io.read_video(path)
    assert back.shape == frames.shape
    assert back.dtype == torch.float32 and 0.0 <= back.min() and back.max() <= 1.0
    err = (back - frames).abs()
    assert (err.mean() if ext != "png" else err.max()) <= tol
    assert written.exists() and io.video_is_valid(path, 8, size=(32, 48))
    assert not io.video_is_valid(path, 7)
    assert no_temps(tmp_path)


def test_png_folder_names(tmp_path):
    frames = smooth_video(3, 16, 16)
    assert io.write_video(frames, tmp_path / "clip.png") == tmp_path / "clip"
    assert sorted(os.listdir(tmp_path / "clip")) == ["00000.png", "00001.png", "00002.png"]
    assert io.write_video(frames, tmp_path / "frames") == tmp_path / "frames"
    assert torch.equal(io.read_video(tmp_path / "frames"), io.read_video(tmp_path / "clip.png"))
    io.write_video(frames[:2], tmp_path / "frames")  # overwriting a folder replaces it whole
    assert io.read_video(tmp_path / "frames").shape[0] == 2
    assert io.record_path(tmp_path / "clip.png") == tmp_path / "clip.json"
    assert no_temps(tmp_path)


def test_odd_and_tiny_sizes_mp4(tmp_path):
    frames = smooth_video(2, 9, 15)
    io.write_video(frames, tmp_path / "odd.mp4")
    back = io.read_video(tmp_path / "odd.mp4")
    assert back.shape == (2, 3, 10, 16)  # yuv420p: last row/column repeated
    assert (back[:, :, :9, :15] - frames).abs().mean() < 0.1  # steep ramps, 4:2:0 chroma
    assert io.video_is_valid(tmp_path / "odd.mp4", 2, size=(9, 15))
    io.write_video(smooth_video(1, 2, 2), tmp_path / "tiny.mp4")
    assert io.read_video(tmp_path / "tiny.mp4").shape == (1, 3, 2, 2)


def test_check_output_path_errors_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.mp4").mkdir()
    bad = {
        tmp_path / "clip.avi": "unsupported extension",
        tmp_path / "afile" / "clip.mp4": "is not a folder",
        tmp_path / "adir.mp4": "is a folder",
        tmp_path / "afile.png": "not a folder",
    }
    (tmp_path / "afile.png").touch()  # becomes folder "afile" -> exists as a file
    for path, words in bad.items():
        with pytest.raises(ValueError) as exc:
            io.check_output_path(path)
        assert words in str(exc.value) and "\n" not in str(exc.value)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert io.check_output_path(tmp_path / "new" / "deeper" / "clip.mp4")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # creates nothing


def _as_unprivileged_user(fn) -> int:
    """Run `fn()` in a forked child that is not root (root may write anywhere); returns
    its exit status: 0 when fn returns, 1 when it raises, 3 when the uid cannot be dropped."""
    pid = os.fork()
    if pid == 0:  # the child: drop to an unprivileged user, run, report through the status
        status = 1
        try:
            try:
                os.setgid(65534)
                os.setuid(65534)
            except PermissionError:
                status = 3
            else:
                fn()
                status = 0
        except BaseException:  # noqa: BLE001 - the status is the report
            pass
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unwritable_folder(tmp_path):
    """A folder the user cannot write into is a one-line error. Root can write into any
    folder, so as root (how CI runs) the check runs in a child process as user 65534."""
    import shutil
    import tempfile

    def expect_not_writable(folder):
        with pytest.raises(ValueError, match="not writable") as info:
            io.check_output_path(folder / "clip.mp4")
        assert "\n" not in str(info.value)
        io.check_output_path(folder.parent / "clip.mp4")  # its (writable) parent is fine

    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        expect_not_writable(ro)
        return
    # pytest's own temp folders are private to root: use one that the child can traverse
    base = tempfile.mkdtemp(prefix="zeroshot-ro-")
    try:
        os.chmod(base, 0o777)
        ro = os.path.join(base, "ro")
        os.mkdir(ro, mode=0o555)
        os.chmod(ro, 0o555)
        from pathlib import Path

        status = _as_unprivileged_user(lambda: expect_not_writable(Path(ro)))
        if status == 3:
            pytest.skip("cannot drop root privileges here")
        assert status == 0
        # and the same folder is writable for root, so the check looks at who asks
        io.check_output_path(Path(ro) / "clip.mp4")
    finally:
        shutil.rmtree(base)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    io.write_video(smooth_video(4), path)
    old = path.read_bytes()

    def broken(frames, tmp, fps):
        tmp.write_bytes(b"half a video")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(io, "_write_mp4", broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        io.write_video(smooth_video(8), path)
    assert path.read_bytes() == old
    assert no_temps(tmp_path)


@pytest.mark.slow
def test_killed_writer_leaves_only_a_temp_that_is_cleaned(tmp_path):
    """SIGKILL while ffmpeg writes: the final name never appears; the temp is cleaned."""
    code = (
        "import sys, torch, zeroshot.io as io\n"
        "def stop(frames, tmp, fps):\n"
        "    tmp.write_bytes(b'partial')\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.read()\n"
        "io._write_mp4 = stop\n"
        f"io.write_video(torch.rand(4, 3, 16, 16), {str(tmp_path / 'clip.mp4')!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    proc.kill()
    proc.wait()
    assert not (tmp_path / "clip.mp4").exists()
    assert not no_temps(tmp_path)
    removed = io.clean_stale_temps(tmp_path)
    assert len(removed) == 1 and no_temps(tmp_path)


def test_clean_keeps_live_temps_and_other_files(tmp_path):
    live = io._temp_path(tmp_path / "clip.mp4")  # this (live) process
    live.write_bytes(b"x")
    (tmp_path / ".hidden").write_text("keep")
    (tmp_path / "clip.json").write_text("{}")
    assert io.clean_stale_temps(tmp_path) == []
    assert live.exists() and (tmp_path / ".hidden").exists()


def test_invalid_videos(tmp_path):
    assert not io.video_is_valid(tmp_path / "missing.mp4", 8)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    assert not io.video_is_valid(tmp_path / "junk.mp4", 8)
    io.write_video(smooth_video(8), tmp_path / "ok.mp4")
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert io.video_is_valid(tmp_path / "ok.mp4", 8)
    assert not io.video_is_valid(tmp_path / "cut.mp4", 8)
    (tmp_path / "empty").mkdir()
    assert not io.video_is_valid(tmp_path / "empty", 8)


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        io.write_video(torch.rand(8, 32, 32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="fps"):
        io.write_video(torch.rand(2, 3, 8, 8), tmp_path / "a.mp4", fps=0)
    with pytest.raises(ValueError, match="extension"):
        io.write_video(torch.rand(2, 3, 8, 8), tmp_path / "a.webm")


def test_output_stem():
    recipe = METHODS["t2v-zero"]
    stem = io.output_stem("A Red Circle, on a  blue background!", 7, recipe)
    assert re.fullmatch(r"a-red-circle-on-a-blue-background-s7-[0-9a-f]{10}", stem)
    assert stem == io.output_stem("A Red Circle, on a  blue background!", 7, recipe)
    long = "x" * 200
    assert len(io.output_stem(long, 0, recipe).split("-s0-")[0]) == 60
    assert io.slugify("!!!") == "video"
    variants = {
        io.output_stem("a red circle", 1, recipe),
        io.output_stem("A red circle", 1, recipe),  # same slug, different prompt
        io.output_stem("a red circle", 2, recipe),
        io.output_stem("a red circle", 1, apply_override(recipe, "num_frames", 16)),
        io.output_stem("a red circle", 1, recipe, model_id="other"),
        io.output_stem(long + "a", 1, recipe),
        io.output_stem(long + "b", 1, recipe),
    }
    assert len(variants) == 7


def test_record_fields_and_save_result(tmp_path):
    result = fake_result(n=2, f=8, h=32, w=32)
    paths = io.save_result(result, tmp_path / "run.mp4", fps=8, extra={"job": 5})
    assert [p.name for p in paths] == ["run-v0.mp4", "run-v1.mp4"]
    for i, p in enumerate(paths):
        rec = io.read_record(tmp_path / f"run-v{i}.json")
        assert rec["prompt"] == "a red circle" and rec["seed"] == 3 and rec["model_id"] == "tiny"
        assert rec["video_index"] == i and rec["num_videos"] == 2 and rec["video"] == p.name
        assert (rec["num_frames"], rec["height"], rec["width"]) == (8, 32, 32)
        assert rec["negative_prompt"] == ""
        assert rec["recipe_hash"] == recipe_hash(result.recipe)
        assert recipe_from_dict(rec["recipe"]) == result.recipe  # the record rebuilds the recipe
        assert set(rec["versions"]) >= {"zeroshot", "torch", "diffusers", "transformers"}
        assert rec["job"] == 5 and rec["created"].endswith("+00:00")
        assert io.video_is_valid(p, 8, size=(32, 32))
        assert rec["video_sha256"] == io.video_digest(p)
    assert io.video_digest(paths[0]) != io.video_digest(paths[1])
    single = io.save_result(fake_result(n=1), tmp_path / "one.gif")
    assert single == [tmp_path / "one.gif"] and (tmp_path / "one.json").exists()
    with pytest.raises(ValueError, match="replace"):
        io.make_record(result, extra={"seed": 1})
    assert no_temps(tmp_path)


def test_json_lines_survive_a_cut_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    io.append_line(path, {"a": 1})
    with open(path, "a") as fh:
        fh.write('{"b": 2, "cut')  # a crash mid-line
    io.append_line(path, {"c": 3})
    assert io.read_lines(path) == [{"a": 1}, {"c": 3}]
    assert io.read_lines(tmp_path / "none.jsonl") == []
    json.loads(path.read_text().splitlines()[-1])


@pytest.mark.slow
def test_import_stays_cheap():
    heavy = ("cv2", "kornia", "ray", "imageio_ffmpeg", "PIL")
    code = f"import sys, zeroshot.io; print(any(m in sys.modules for m in {heavy!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# streamed writing


@pytest.mark.parametrize("ext", ["mp4", "gif", "png"])
def test_streamed_file_equals_one_write(tmp_path, ext):
    """Frames appended in uneven chunks make the same file as one write (same codec settings)."""
    frames = smooth_video(13, 30, 34)  # odd frame count, chunks of 5, 5, 3; even size
    whole = io.write_video(frames, tmp_path / f"whole.{ext}", fps=8)
    with io.VideoStream(tmp_path / f"streamed.{ext}", fps=8) as stream:
        for start in range(0, 13, 5):
            stream.append(frames[start : start + 5])
            assert not io.video_target(tmp_path / f"streamed.{ext}").exists()  # nothing final before close
    streamed = io.video_target(tmp_path / f"streamed.{ext}")
    assert stream.num_frames == 13 and stream.size == (30, 34)
    a, b = io.read_video(whole), io.read_video(streamed)
    assert a.shape == b.shape == (13, 3, 30, 34)
    assert torch.equal(a, b)  # frame for frame
    if ext == "mp4":
        assert whole.read_bytes() == streamed.read_bytes()
    assert no_temps(tmp_path)


def test_streamed_odd_size_pads_like_one_write(tmp_path):
    frames = smooth_video(5, 17, 9)
    io.write_video(frames, tmp_path / "whole.mp4")
    with io.VideoStream(tmp_path / "streamed.mp4") as stream:
        stream.append(frames[:2])
        stream.append(frames[2:])
    assert torch.equal(io.read_video(tmp_path / "whole.mp4"), io.read_video(tmp_path / "streamed.mp4"))


@pytest.mark.parametrize("ext", ["mp4", "gif", "png"])
def test_stream_error_midway_leaves_nothing(tmp_path, ext):
    """An error between chunks: no output under the final name, the temporary removed, and an
    older file of that name kept."""
    path = tmp_path / f"clip.{ext}"
    io.write_video(smooth_video(3), path)
    old = io.video_digest(path)

    def chunks():
        yield smooth_video(4)
        yield smooth_video(4)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        with io.VideoStream(path) as stream:
            for chunk in chunks():
                stream.append(chunk)
    assert stream.num_frames == 8
    assert io.video_digest(path) == old
    assert no_temps(tmp_path)
    fresh = tmp_path / f"fresh.{ext}"
    with pytest.raises(RuntimeError):
        with io.VideoStream(fresh) as stream:
            for chunk in chunks():
                stream.append(chunk)
    assert not io.video_target(fresh).exists() and no_temps(tmp_path)


def test_stream_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        with io.VideoStream(tmp_path / "empty.mp4"):
            pass
    with pytest.raises(ValueError, match="16x16 after 32x32"):
        with io.VideoStream(tmp_path / "sizes.mp4") as stream:
            stream.append(smooth_video(2))
            stream.append(smooth_video(2, 16, 16))
    assert not (tmp_path / "sizes.mp4").exists() and no_temps(tmp_path)
    stream = io.VideoStream(tmp_path / "done.mp4")
    stream.append(smooth_video(2))
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        stream.append(smooth_video(2))


def test_save_result_streams_chunks_like_frames(tmp_path):
    """`save_result` from decoded chunks (no frames held) writes the files and records that it
    writes from the frames; an error mid-stream leaves no video and no record of any."""
    result = fake_result(n=2, f=10)
    held = io.save_result(result, tmp_path / "held.mp4", fps=8)
    chunked = SimpleNamespace(**{**vars(result), "frames": None})
    parts = (result.frames[:, s : s + 4] for s in range(0, 10, 4))
    streamed = io.save_result(chunked, tmp_path / "streamed.mp4", fps=8, chunks=parts)
    assert [p.name for p in streamed] == ["streamed-v0.mp4", "streamed-v1.mp4"]
    for a, b in zip(held, streamed):
        assert a.read_bytes() == b.read_bytes()
        ra, rb = io.read_record(io.record_path(a)), io.read_record(io.record_path(b))
        for key in ("num_frames", "height", "width", "num_videos", "video_sha256", "recipe_hash"):
            assert ra[key] == rb[key]

    def failing():
        yield result.frames[:, :4]
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        io.save_result(chunked, tmp_path / "failed.mp4", chunks=failing())
    assert not list(tmp_path.glob("failed*")) and no_temps(tmp_path)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip.png"])
def test_video_files_round_trip_atomically(tmp_path, name):
    """`read_video_files` then `write_video_files` elsewhere: the same video, bytes and frames;
    a bad payload leaves nothing behind."""
    first = io.write_video(smooth_video(3), tmp_path / "a" / name)
    files = io.read_video_files(first)
    copy = io.write_video_files(files, tmp_path / "b" / name)
    assert io.video_digest(copy) == io.video_digest(first)
    assert torch.equal(io.read_video(copy), io.read_video(first))
    bad = {"x.txt": b""} if name.endswith(".png") else {"a": b"", "b": b""}
    with pytest.raises(ValueError):
        io.write_video_files(bad, tmp_path / "c" / name)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())
