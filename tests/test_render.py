"""Batch renders from presets: round trips, errors, resume, SIGKILL, retries, executors."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zeroshot import io, render
from zeroshot.cli import render as render_cli
from zeroshot.recipe import METHODS, RecipeError

PROMPTS = ["a red circle on a blue background", "a green square", "a yellow star in the sky"]

TINY = """
method = "t2v-zero"
num_frames = 8
height = 32
width = 32
num_inference_steps = 2
guidance_scale = 1.0
[motion]
translate = [2.0, 0.0]
"""


def preset_file(folder: Path, prompts, seeds=(0,), name="p.toml", extra="") -> Path:
    body = TINY + extra + f"\n[[jobs]]\nprompts = {list(prompts)!r}\nseeds = {list(seeds)!r}\n".replace("'", '"')
    path = folder / name
    path.write_text(body)
    return path


def done_lines(out: Path) -> list[dict]:
    return [line for line in io.read_lines(out / render.MANIFEST) if line["status"] == "done"]


def assert_complete(out: Path, jobs, model_path):
    """Every job once in the manifest, each video opens with 8 frames, no temp or stray file."""
    stems = [render.job_stem(job, model_path) for job in jobs]
    assert sorted(line["stem"] for line in done_lines(out)) == sorted(stems)
    for stem in stems:
        assert io.video_is_valid(out / f"{stem}.mp4", 8, size=(32, 32))
        assert io.read_record(out / f"{stem}.json")["stem"] == stem
    expected = {f"{s}.mp4" for s in stems} | {f"{s}.json" for s in stems} | {render.MANIFEST}
    assert set(os.listdir(out)) == expected


# ---------------------------------------------------------------------------------------
# presets


@pytest.mark.parametrize("method", sorted(METHODS))
def test_show_round_trips(tmp_path, method):
    text = render.show_method(method)
    path = tmp_path / f"{method}.toml"
    path.write_text(text)
    assert render.preset_recipe(path) == METHODS[method]
    assert render.load_preset(path) == []
    path.write_text(text + '\n[[jobs]]\nprompt = "a red circle"\nseeds = [4, 5]\n')
    jobs = render.load_preset(path)
    assert jobs == [render.Job("a red circle", s, METHODS[method]) for s in (4, 5)]


def test_show_command_writes_a_loadable_file(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    render_cli.add_show_parser(parser.add_subparsers())
    args = parser.parse_args(["show", "t2v-zero", "--out", str(tmp_path / "t.toml")])
    assert args.func(args) == 0
    assert render.preset_recipe(tmp_path / "t.toml") == METHODS["t2v-zero"]
    args = parser.parse_args(["show", "t2i"])
    assert args.func(args) == 0
    assert "method = \"t2i\"" in capsys.readouterr().out


PRESETS = Path(__file__).resolve().parent.parent / "presets"


def test_shipped_presets_load_and_cover_every_method():
    from zeroshot.shapes.world import parse_caption

    # presets render the embedded (image) model; controlnet, edit and pix2pix need the user's inputs
    # (a ControlNet and control videos, a video to edit, an instruct-pix2pix model), which
    # `zeroshot show` leaves to fill in
    image_methods = [m for m in METHODS if m not in ("video", "controlnet", "edit", "pix2pix")]
    missing = [m for m in image_methods if not (PRESETS / f"{m}.toml").is_file()]
    assert not missing, f"add presets: zeroshot show METHOD --out presets/METHOD.toml for {missing}"
    for method in image_methods:
        assert render.preset_recipe(PRESETS / f"{method}.toml") == METHODS[method]
    files = sorted(PRESETS.glob("*.toml"))
    assert PRESETS / "showcase.toml" in files
    for path in files:
        jobs = render.load_preset(path)
        assert jobs, path
        for job in jobs:
            parse_caption(job.prompt)  # the embedded model's vocabulary


BAD = {
    "top-level key": ('method = "t2v-zero"\nnum_frame = 8\n', ["'num_frame'", "valid keys", "num_frames", "jobs"]),
    "part key": ('method = "t2v-zero"\n[motion]\nspeed = 3\n', ["motion", "'speed'", "valid keys", "translate"]),
    "job key": ('[[jobs]]\nprompt = "a"\nseed_list = [1]\n', ["jobs[0]", "'seed_list'", "prompts, seed, seeds"]),
    "job recipe key": ('[[jobs]]\nprompt = "a"\nrecipe = { stepz = 2 }\n', ["jobs[0].recipe", "'stepz'", "valid keys"]),
    "method": ('method = "t2v-hero"\n', ["method", "'t2v-hero'", "t2v-zero"]),
    "type": ('num_frames = "eight"\n', ["num_frames", "integer"]),
    "range": ("num_frames = 0\n", ["num_frames", ">= 1"]),
    "toml": ("num_frames = = 3\n", ["invalid TOML"]),
    "no prompt": ("[[jobs]]\nseeds = [1]\n", ["jobs[0]", "missing prompt"]),
    "empty prompts": ("[[jobs]]\nprompts = []\n", ["jobs[0]", "prompts is empty"]),
    "seed type": ('[[jobs]]\nprompt = "a"\nseeds = ["x"]\n', ["jobs[0]", "integer"]),
    "both": ('[[jobs]]\nprompt = "a"\nprompts = ["b"]\n', ["prompt or prompts"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_preset_is_one_clear_line(tmp_path, case):
    text, words = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as exc:
        render.load_preset(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_jobs_expand_and_override(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        TINY
        + '\n[[jobs]]\nprompts = ["a cat", "a dog"]\nseeds = [1, 2]\n'
        + '\n[[jobs]]\nprompt = "a car"\nrecipe = { num_frames = 4, motion = { zoom = 1.1 } }\n'
        + '\n[[jobs]]\nprompt = "a star"\nrecipe = { method = "t2i" }\n'
    )
    jobs = render.load_preset(path)
    assert [(j.prompt, j.seed) for j in jobs] == [
        ("a cat", 1), ("a cat", 2), ("a dog", 1), ("a dog", 2), ("a car", 0), ("a star", 0)
    ]
    car, star = jobs[4].recipe, jobs[5].recipe
    assert car.num_frames == 4 and car.motion.zoom == 1.1 and car.motion.translate == (2.0, 0.0)
    assert star.method == "t2i" and star.cross_frame is None  # re-based on METHODS["t2i"] ...
    assert star.num_inference_steps == 2 and star.motion == car.motion.__class__(translate=(2.0, 0.0))  # ... + preset
    overridden = render.apply_overrides(jobs, ["num_inference_steps=3", "motion.zoom=1.2"])
    assert all(j.recipe.num_inference_steps == 3 for j in overridden)
    assert overridden[0].recipe.motion.zoom == 1.2 and overridden[5].recipe.motion.zoom == 1.2
    with pytest.raises(RecipeError, match="unknown key"):
        render.apply_overrides(jobs, ["motion.speed=1"])


def test_render_command_line_jobs(tmp_path):
    parser = argparse.ArgumentParser()
    render_cli.add_render_parser(parser.add_subparsers())
    preset = preset_file(tmp_path, ["a cat"], seeds=(0, 1))
    args = parser.parse_args(["render", str(preset), "--set", "num_frames=4"])
    jobs = render_cli.jobs_from_args(args)
    assert [(j.prompt, j.seed, j.recipe.num_frames) for j in jobs] == [("a cat", 0, 4), ("a cat", 1, 4)]
    args = parser.parse_args(["render", str(preset), "--prompt", "a dog", "--seeds", "3,4,5"])
    assert [(j.prompt, j.seed) for j in render_cli.jobs_from_args(args)] == [("a dog", s) for s in (3, 4, 5)]
    empty = tmp_path / "empty.toml"
    empty.write_text(TINY)
    args = parser.parse_args(["render", str(empty), "--out", str(tmp_path / "o")])
    assert args.func(args) == 2  # no jobs: one error line, nothing rendered
    args = parser.parse_args(["render", str(preset), "--out", str(tmp_path / "o"), "--set", "num_inference_steps=1"])
    assert args.func(args) == 2  # t2v-zero needs >= 2 steps: found before any model work
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------
# rendering with the tiny model


@pytest.fixture(scope="module")
def local_render(tiny_sd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    jobs = render.load_preset(preset_file(folder, PROMPTS, seeds=(0,)))
    report = render.render(jobs, folder / "out", model=str(tiny_sd), progress=False)
    return jobs, folder / "out", report


def test_render_writes_every_video_record_and_manifest_line(local_render, tiny_sd):
    jobs, out, report = local_render
    assert report.ok and len(report.rendered) == 3 and report.skipped == []
    assert_complete(out, jobs, str(tiny_sd))
    for job in jobs:
        stem = render.job_stem(job, str(tiny_sd))
        record = io.read_record(out / f"{stem}.json")
        assert record["prompt"] == job.prompt and record["seed"] == job.seed
        assert record["recipe"]["num_inference_steps"] == 2 and record["recipe"]["motion"]["t1"] is not None
        assert record["model_id"] == str(tiny_sd) and record["num_frames"] == 8


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_render_streams_the_video_that_whole_frames_make(local_render, tiny_sd, tmp_path, monkeypatch, fmt):
    """Workers decode in chunks into the encoder and send back only the encoded file: the
    rendered video is the one `write_video` makes from the whole decoded frames (same bytes,
    same frames), and no decoded video crosses to the driver."""
    from zeroshot import generate as gen
    from zeroshot import models

    jobs, out, _ = local_render
    job = jobs[0]
    model = models.load(str(tiny_sd))
    decoded = []
    real = gen.generate

    def spy(*args, **kwargs):
        decoded.append(kwargs.get("decode", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "generate", spy)
    payload = render.render_job(model, job, fps=8, fmt=fmt)
    assert decoded == [False] and set(payload) == {"files", "record"}
    assert all(isinstance(data, bytes) for data in payload["files"].values())
    monkeypatch.undo()
    whole = gen.generate(model, job.prompt, job.recipe, seed=job.seed, progress=False).frames[0]
    before = io.write_video(whole, tmp_path / f"before.{fmt}", fps=8)
    stem = render.job_stem(job, str(tiny_sd))
    if fmt == "mp4":
        after = out / f"{stem}.mp4"  # the module's in-process render
    else:
        report = render.render([job], tmp_path / "png", model=str(tiny_sd), fmt="png", progress=False)
        assert report.ok
        after = tmp_path / "png" / stem
        assert io.read_record(tmp_path / "png" / f"{stem}.json")["video_sha256"] == io.video_digest(after)
        assert not [p for p in (tmp_path / "png").iterdir() if p.name.startswith(".")]  # no temporaries
    assert io.read_video_files(after) == io.read_video_files(before)
    assert torch.equal(io.read_video(after), io.read_video(before))


def test_second_run_renders_nothing_and_loads_no_model(local_render, tiny_sd, monkeypatch):
    jobs, out, _ = local_render
    before = (out / render.MANIFEST).read_bytes()

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when every job is done")

    monkeypatch.setattr(render, "load_model", no_model)
    report = render.render(jobs + jobs[:1], out, model=str(tiny_sd), progress=False)
    assert report.rendered == [] and len(report.skipped) == 3 and report.duplicates == 1 and report.ok
    assert (out / render.MANIFEST).read_bytes() == before


def test_damaged_or_unlogged_job_is_redone_once(local_render, tiny_sd, tmp_path):
    jobs, out, _ = local_render
    copy = tmp_path / "out"
    copy.mkdir()
    for name in os.listdir(out):
        (copy / name).write_bytes((out / name).read_bytes())
    stems = [render.job_stem(job, str(tiny_sd)) for job in jobs]
    data = (copy / f"{stems[0]}.mp4").read_bytes()
    (copy / f"{stems[0]}.mp4").write_bytes(data[: len(data) // 3])  # damaged video
    lines = (copy / render.MANIFEST).read_text().splitlines()
    (copy / render.MANIFEST).write_text("\n".join(line for line in lines if stems[1] not in line) + "\n")
    record = io.read_record(copy / f"{stems[2]}.json")
    del record["video_sha256"]  # a record without a digest: the video is decoded instead
    io.write_record(copy / f"{stems[2]}.json", record)
    report = render.render(jobs, copy, model=str(tiny_sd), progress=False)
    assert report.rendered == [stems[0]] and sorted(report.skipped) == sorted(stems[1:])
    # the re-rendered video is a second "done" line for stems[0]; stems[1] is logged again
    assert sorted(line["stem"] for line in done_lines(copy)) == sorted(stems + [stems[0]])
    assert io.video_is_valid(copy / f"{stems[0]}.mp4", 8)


def test_failing_job_is_retried_then_reported(tiny_sd, tmp_path, monkeypatch):
    calls: dict[str, int] = {}
    real = render.render_job

    def flaky(model, job, **kwargs):
        calls[job.prompt] = calls.get(job.prompt, 0) + 1
        if job.prompt == "a cat" or (job.prompt == "a dog" and calls[job.prompt] == 1):
            raise RuntimeError(f"boom {job.prompt}\nsecond line")
        return real(model, job, **kwargs)

    monkeypatch.setattr(render, "render_job", flaky)
    preset = preset_file(tmp_path, ["a cat", "a dog", "a car"])
    jobs = render.load_preset(preset)
    report = render.render(jobs, tmp_path / "out", model=str(tiny_sd), retries=2, progress=False)
    cat = render.job_stem(jobs[0], str(tiny_sd))
    assert calls == {"a cat": 3, "a dog": 2, "a car": 1}
    assert not report.ok and report.failed == {cat: "RuntimeError: boom a cat"}
    assert len(report.rendered) == 2
    lines = io.read_lines(tmp_path / "out" / render.MANIFEST)
    assert [(line["prompt"], line["status"], line["attempts"]) for line in lines] == [
        ("a car", "done", 1), ("a dog", "done", 2), ("a cat", "failed", 3)
    ]
    assert not (tmp_path / "out" / f"{cat}.mp4").exists()
    parser = argparse.ArgumentParser()
    render_cli.add_render_parser(parser.add_subparsers())
    args = parser.parse_args(["render", str(preset), "--out", str(tmp_path / "out"), "--model", str(tiny_sd),
                              "--no-progress"])
    assert args.func(args) == 1  # the cat still fails: non-zero exit
    assert calls["a cat"] == 4 and calls["a dog"] == 2


def _render_command(preset: Path, out: Path, model: Path) -> list[str]:
    args = ["render", str(preset), "--out", str(out), "--model", str(model), "--no-progress"]
    return [sys.executable, "-m", "zeroshot.cli", *args]


@pytest.mark.slow
def test_sigkill_mid_render_then_resume(tiny_sd, tmp_path):
    prompts = ["a red circle", "a blue square", "a green star", "a cat", "a dog", "a white car"]
    preset = preset_file(tmp_path, prompts)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = _render_command(preset, out, tiny_sd)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / render.MANIFEST).exists() or not done_lines(out):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no job finished in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(done_lines(out))
    assert 1 <= finished < len(prompts), "the kill must land mid-way"
    for path in out.glob("*.mp4"):  # nothing partial under a final name
        assert io.video_is_valid(path, 8)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_complete(out, render.load_preset(preset), str(tiny_sd))


def _die_once(flag: str, text: str) -> str:
    """Unpickled in a worker process: the first time, the process dies."""
    if not os.path.exists(flag):
        Path(flag).touch()
        os._exit(3)
    return text


class DieOnce(str):
    """A prompt whose first unpickling kills the worker process that receives it."""

    flag = ""

    def __reduce__(self):
        return _die_once, (self.flag, str(self))


@pytest.mark.slow
def test_local_processes_match_in_process_and_survive_a_dead_worker(local_render, tiny_sd, tmp_path):
    jobs, out, _ = local_render
    DieOnce.flag = str(tmp_path / "died")
    killer = render.Job(DieOnce("a white car"), 0, jobs[0].recipe)
    report = render.render([killer, *jobs[:2]], tmp_path / "procs", model=str(tiny_sd), workers=2,
                           retries=1, progress=False)
    assert (tmp_path / "died").exists()  # a worker process did die
    assert report.ok and len(report.rendered) == 3
    assert io.video_is_valid(tmp_path / "procs" / f"{render.job_stem(killer, str(tiny_sd))}.mp4", 8)
    for job in jobs[:2]:
        stem = render.job_stem(job, str(tiny_sd))
        a, b = io.read_video(out / f"{stem}.mp4"), io.read_video(tmp_path / "procs" / f"{stem}.mp4")
        assert (a - b).abs().max() <= 2 / 255


@pytest.mark.slow
def test_ray_matches_local(local_render, tiny_sd, tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed: pip install 'zeroshot[ray]'")
    jobs, out, _ = local_render
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = render.render(
            jobs[:2], tmp_path / "ray", model=str(tiny_sd), workers=2, executor="ray", progress=False
        )
    finally:
        ray.shutdown()
    assert report.ok and len(report.rendered) == 2
    for job in jobs[:2]:
        stem = render.job_stem(job, str(tiny_sd))
        a, b = io.read_video(out / f"{stem}.mp4"), io.read_video(tmp_path / "ray" / f"{stem}.mp4")
        assert a.shape == (8, 3, 32, 32) and (a - b).abs().max() <= 2 / 255


def test_bad_arguments_fail_before_work(tmp_path):
    job = render.Job("a cat", 0, METHODS["t2i"])
    with pytest.raises(ValueError, match="executor"):
        render.render([job], tmp_path, executor="slurm")
    with pytest.raises(ValueError, match="workers"):
        render.render([job], tmp_path, workers=0)
    with pytest.raises(ValueError, match="retries"):
        render.render([job], tmp_path, retries=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        render.render([job], tmp_path / "file" / "out")


def test_model_flags_name_the_outputs_and_bad_loras_fail_before_work(tmp_path, tiny_sd, capsys):
    from zeroshot.cli import main
    from zeroshot.models import ModelSpec

    job = render.Job("a cat", 0, METHODS["t2i"])
    plain = render.job_stem(job, str(tiny_sd))
    assert render.job_stem(job, ModelSpec(str(tiny_sd), device="cpu", dtype="float32")) == plain
    styled = render.job_stem(job, ModelSpec(str(tiny_sd), loras=(("style.safetensors", 1.0),)))
    half = render.job_stem(job, ModelSpec(str(tiny_sd), loras=(("style.safetensors", 0.5),)))
    assert len({plain, styled, half}) == 3  # a LoRA and its scale are part of what a video was made with
    preset = tmp_path / "p.toml"
    preset.write_text('method = "t2i"\n[[jobs]]\nprompts = ["a cat"]\n')
    rc = main(["render", str(preset), "--model", str(tiny_sd), "--lora", str(tmp_path / "none.safetensors"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "LoRA file not found" in err
    assert not (tmp_path / "out").exists()
