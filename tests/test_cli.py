"""The CLI: a playable video with its record, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from zeroshot import io
from zeroshot.cli import main

SMALL = ["--height", "32", "--width", "32", "--steps", "4", "--frames", "4", "--quiet"]


def test_generate_writes_playable_mp4_and_record(tiny_sd, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--motion", "4,0", "--out", str(out), *SMALL])
    assert rc == 0
    assert io.video_is_valid(out, 4)
    frames = io.read_video(out)
    assert frames.shape == (4, 3, 32, 32)
    record = json.loads((tmp_path / "clip.json").read_text())
    assert record["prompt"] == "a red cat" and record["seed"] == 0
    assert record["recipe"]["motion"]["translate"] == [4.0, 0.0]
    assert record["recipe"]["num_frames"] == 4
    assert str(out) in capsys.readouterr().out


def test_set_override_and_gif(tiny_sd, tmp_path):
    out = tmp_path / "clip.gif"
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", "--set", "num_frames=3",
               "--out", str(out), "--height", "32", "--width", "32", "--steps", "3", "--quiet"])
    assert rc == 0
    assert io.read_video(out).shape[0] == 3


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--height", "30"], "multiple of the VAE factor"),
        (["--frames", "0"], "num_frames"),
        (["--set", "motion.t0=9", "--set", "motion.t1=5"], "t0"),
        (["--method", "nope"], "unknown method"),
        (["--model", "/no/such/model"], "not found"),
        (["--out", "x.avi"], "unsupported extension"),
        (["--set", "bogus=1"], "unknown key"),
        (["--set", "motion.zoom=abc"], "expected a number"),
        (["--guidance", "inf"], "finite"),
        (["--motion", "1"], "DX,DY"),
        (["--steps", "1.5"], "integer"),
        (["--noise", "pink"], "pink"),
        (["--lora", "/no/such/lora.safetensors"], "LoRA file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_sd, tmp_path, capsys, args, needle):
    base = ["generate", "a red cat", "--model", str(tiny_sd), "--out", str(tmp_path / "o.mp4")]
    if "--model" in args:
        base = ["generate", "a red cat", "--out", str(tmp_path / "o.mp4")]
    try:
        rc = main(base + args)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--motion-from", "/no/such/video.mp4"], "motion.from_video"),
        (["--path", "/no/such/path.toml"], "motion.path"),
        (["--trajectory", "1,2-3,4"], "motion.trajectories"),
        (["--smooth-bg", "--set", "smoothing.mask_video=/no/such/masks"], "smoothing.mask_video"),
        (["--method", "animatediff", "--motion-adapter", "/no/such/adapter"], "animatediff.adapter"),
        (["--method", "animatediff"], "animatediff.adapter is required"),
    ],
)
def test_missing_inputs_fail_before_the_model_loads(tiny_sd, tmp_path, capsys, monkeypatch, args, needle):
    from zeroshot import models

    def no_model_work(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(models, "load", no_model_work)
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--out", str(tmp_path / "o.mp4"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert needle in err


def test_refused_pickle(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert main(["generate", "a red cat", "--model", str(ckpt), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_unwritable_output(tiny_sd, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--out", str(blocker / "o.mp4")])
    assert rc == 2
    assert "not a folder" in capsys.readouterr().err


def test_methods_lists_core_methods(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "t2i" in out and "t2v-zero" in out


@pytest.mark.slow
def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "zeroshot.cli", "generate", "a cat", "--model", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("zeroshot: error:")


def test_lora_flag_merges_a_lora_and_leaves_bad_files_one_line(tiny_sd, tmp_path, capsys):
    import torch

    from zeroshot.models import load
    from zeroshot.trained.lora import STYLE_TARGETS, STYLE_UNDER, add_lora, save_lora

    unet = load(str(tiny_sd)).unet
    wrapped = add_lora(unet, rank=2, targets=STYLE_TARGETS, under=STYLE_UNDER)
    for layer in wrapped.values():
        layer.up.data.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    style = save_lora(wrapped, tmp_path / "style.safetensors")
    args = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", *SMALL]
    assert main([*args, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*args, "--lora", f"{style}:0.5", "--out", str(tmp_path / "lora.png")]) == 0
    plain, styled = io.read_video(tmp_path / "plain.png"), io.read_video(tmp_path / "lora.png")
    assert plain.shape == styled.shape and float((plain - styled).abs().max()) > 0.05
    not_lora = tmp_path / "not_lora.safetensors"
    not_lora.write_bytes(b"garbage")
    capsys.readouterr()
    assert main([*args, "--lora", str(not_lora), "--out", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not_lora.safetensors" in err
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------------------------------
# every generate flag reaches the recipe (the record) and the video


def _records(folder, stem):
    return [json.loads((folder / f"{stem}-v{i}.json").read_text()) for i in range(2)]


def test_every_recipe_flag_reaches_the_recipe_and_the_video(tiny_sd, tiny_model, tmp_path):
    """One run with every recipe flag: the records hold the recipe the flags describe,
    and that recipe with the recorded seed reproduces both videos through the API."""
    from zeroshot.generate import generate
    from zeroshot.recipe import recipe_from_dict

    out = tmp_path / "clip.png"
    argv = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2v-zero", "--frames", "3",
            "--steps", "4", "--guidance", "2.5", "--height", "32", "--width", "24", "--negative-prompt", "a blue dog",
            "--eta", "0.5", "--scheduler", "ddpm", "--seed", "5", "--num-videos", "2", "--motion", "2,-1",
            "--zoom", "1.1", "--rotate", "5", "--smooth-bg", "0.4", "--noise", "mixed", "--noise-alpha", "0.5",
            "--freeinit", "2", "--step-cache", "2", "--token-merge", "0.3", "--device", "cpu", "--dtype", "float32", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    records = _records(tmp_path, "clip")
    r = records[0]["recipe"]
    assert (r["num_frames"], r["num_inference_steps"], r["guidance_scale"], r["height"], r["width"]) == (3, 4, 2.5, 32, 24)
    assert (r["negative_prompt"], r["eta"], r["scheduler"]) == ("a blue dog", 0.5, "ddpm")
    assert (r["motion"]["translate"], r["motion"]["zoom"], r["motion"]["rotate"]) == ([2.0, -1.0], 1.1, 5.0)
    assert r["smoothing"]["strength"] == 0.4 and r["freeinit"]["iterations"] == 2
    assert (r["noise"]["prior"], r["noise"]["alpha"]) == ("mixed", 0.5)
    assert r["step_cache"]["interval"] == 2 and r["token_merge"]["ratio"] == 0.3
    assert [(rec["seed"], rec["video_index"], rec["num_videos"]) for rec in records] == [(5, 0, 2), (5, 1, 2)]
    assert records[1]["recipe"] == r
    again = generate(tiny_model, "a red cat", recipe_from_dict(r), seed=5, num_videos=2, progress=False)
    for i in range(2):
        written = io.read_video(tmp_path / f"clip-v{i}")
        assert written.shape == (3, 3, 32, 24)
        assert (written - again.frames[i]).abs().max() <= 0.5 / 255 + 1e-6
    assert (again.frames[0] - again.frames[1]).abs().max() > 1e-3  # two videos, not one twice


@pytest.mark.parametrize("flags,needle", [
    (["--step-cache", "0"], "--step-cache must be an interval of >= 1 steps"),
    (["--step-cache", "-3"], "--step-cache must be an interval of >= 1 steps"),
    (["--token-merge", "1"], "--token-merge must be a ratio in [0, 1)"),
    (["--token-merge", "-0.1"], "--token-merge must be a ratio in [0, 1)"),
    (["--step-cache", "two"], "expected an integer"),
])
def test_speed_flags_bad_values_are_one_line_before_work(tmp_path, capsys, monkeypatch, flags, needle):
    from zeroshot import models

    def no_model(*args, **kwargs):
        raise AssertionError("no model may load for a bad flag")

    monkeypatch.setattr(models, "load", no_model)
    try:
        rc = main(["generate", "a red cat", *flags, "--out", str(tmp_path / "o.mp4")])
    except SystemExit as exc:  # argparse's own refusal of a non-number
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and needle in err[-1] and not list(tmp_path.iterdir())
    if flags[1] != "two":
        assert len(err) == 1


@pytest.mark.parametrize("flags,part,expected", [
    (["--path", "PATH"], "path", "PATH"),
    (["--trajectory", "4,4->20,8", "--trajectory", "28,28->20,28"], "trajectories", ["4,4->20,8", "28,28->20,28"]),
    (["--motion-from", "VIDEO"], "from_video", "VIDEO"),
])
def test_motion_source_flags(tiny_sd, tmp_path, flags, part, expected):
    import torch

    path = tmp_path / "path.toml"
    path.write_text("[[key]]\nframe = 0\n[[key]]\nframe = 2\ntranslate = [4, 0]\nzoom = 1.1\n")
    video = io.write_video(torch.rand(3, 3, 32, 32), tmp_path / "ref.png")  # a folder of frames
    subst = {"PATH": str(path), "VIDEO": str(video)}
    flags = [subst.get(f, f) for f in flags]
    expected = subst.get(expected, expected) if isinstance(expected, str) else expected
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red cat", "--model", str(tiny_sd), *SMALL, "--frames", "3", *flags,
                 "--out", str(out)]) == 0
    motion = json.loads((tmp_path / "clip.json").read_text())["recipe"]["motion"]
    assert motion[part] == expected and motion["translate"] == [0.0, 0.0]  # a source replaces the pan
    assert io.video_is_valid(out, 3)


def test_motion_adapter_flag(tiny_sd, tiny_model, tmp_path):
    from zeroshot.trained.animatediff import save_motion_adapter
    from zeroshot.trained.inflate import new_motion_adapter

    adapter = save_motion_adapter(new_motion_adapter(tiny_model.unet, max_seq_length=4), tmp_path / "mm.safetensors")
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red cat", "--model", str(tiny_sd), *SMALL, "--method", "animatediff",
                 "--motion-adapter", str(adapter), "--out", str(out)]) == 0
    recipe = json.loads((tmp_path / "clip.json").read_text())["recipe"]
    assert recipe["method"] == "animatediff" and recipe["animatediff"]["adapter"] == str(adapter)
    assert io.video_is_valid(out, 4)


def test_fps_flag_sets_the_frame_duration(tiny_sd, tmp_path):
    from PIL import Image

    args = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", *SMALL, "--frames", "2"]
    for fps in (None, "4", "20"):
        out = tmp_path / f"clip{fps}.gif"
        assert main([*args, *(["--fps", fps] if fps else []), "--out", str(out)]) == 0
        with Image.open(out) as gif:  # GIF stores frame durations in 10 ms units
            assert abs(gif.info["duration"] - 1000 / float(fps or 8)) < 10, fps
        assert json.loads(out.with_suffix(".json").read_text())["fps"] == float(fps or 8)


def test_dtype_flag_runs_the_model_in_that_precision(tiny_sd, tmp_path):
    args = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", *SMALL, "--frames", "1"]
    assert main([*args, "--dtype", "float32", "--out", str(tmp_path / "f32.png")]) == 0
    assert main([*args, "--dtype", "bfloat16", "--out", str(tmp_path / "bf16.png")]) == 0
    a, b = io.read_video(tmp_path / "f32.png"), io.read_video(tmp_path / "bf16.png")
    assert 0 < (a - b).abs().max() and (a - b).abs().mean() < 0.05  # rounded, not another image


def test_model_flags_reach_the_loader(tiny_sd, tmp_path, monkeypatch):
    """--model-config, --allow-pickle, --device and --dtype are what the model loader gets."""
    import torch

    from zeroshot import models

    seen = {}
    real_load = models.load

    def spy(path, **kwargs):
        seen.update(kwargs, path=path)
        return real_load(str(tiny_sd))

    monkeypatch.setattr(models, "load", spy)
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"stand-in: the spy loads the tiny folder")
    args = ["generate", "a red cat", "--method", "t2i", *SMALL, "--frames", "1"]
    assert main([*args, "--model", str(single), "--model-config", str(tiny_sd), "--device", "cpu",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert seen["path"] == str(single) and seen["config"] == str(tiny_sd) and seen["device"] == "cpu"
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"x")
    assert main([*args, "--model", str(pickle), "--allow-pickle", "--dtype", "float16",
                 "--out", str(tmp_path / "b.png")]) == 0
    assert seen["path"] == str(pickle) and seen["allow_pickle"] is True and seen["dtype"] == torch.float16


def test_version_and_verbose_flags(tiny_sd, tmp_path, capsys, monkeypatch):
    from zeroshot import __version__, generate

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"zeroshot {__version__}"

    def broken(*args, **kwargs):
        raise RuntimeError("the model fell over\nsecond line")

    monkeypatch.setattr(generate, "generate", broken)
    args = ["generate", "a red cat", "--model", str(tiny_sd), *SMALL, "--out", str(tmp_path / "o.mp4")]
    assert main(args) == 1  # an unexpected error: one line, no traceback, a pointer to -v
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("zeroshot:")]
    assert ours == ["zeroshot: failed: RuntimeError: the model fell over (run with -v for details)"]
    assert "Traceback" not in err and "second line" not in err
    with pytest.raises(RuntimeError, match="fell over"):  # -v shows the real error
        main(["-v", *args])


# ---------------------------------------------------------------------------------------
# the CLI package: every subcommand through `main`, and libraries that know nothing of it


@pytest.mark.parametrize("argv,prefix", [
    (["eval", "/no/such/video.mp4"], "zeroshot eval: error:"),
    (["render", "/no/such/preset.toml"], "zeroshot: error:"),
    (["render", "/no/such/preset.toml", "--workers", "0"], "zeroshot: error:"),
    (["show", "nope"], "zeroshot: error:"),
    (["generate", "a cat", "--frames", "x"], "zeroshot: error:"),
    (["nope"], "zeroshot: error:"),
])
def test_every_subcommand_reports_bad_input_in_one_line(capsys, argv, prefix):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(prefix), err


def _imports(path) -> set[str]:
    """Every module a source file imports, and `module.name` of each `from module import name`
    (absolute imports; `from . import x` is skipped)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_libraries_never_import_the_cli():
    from pathlib import Path

    import zeroshot

    root = Path(zeroshot.__file__).parent
    for path in root.rglob("*.py"):
        if path.parent.name == "cli" and path.parent.parent == root:
            continue
        cli = {name for name in _imports(path) if name == "zeroshot.cli" or name.startswith("zeroshot.cli.")}
        assert not cli, f"{path.relative_to(root)} imports {cli}"
    for name in ("render.py", "evaluate.py"):
        assert "argparse" not in _imports(root / name), name
        assert "print(" not in (root / name).read_text(), name
