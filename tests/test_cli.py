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
