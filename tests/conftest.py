"""Shared fixtures and helpers.

Fixtures: `tiny_sd` (a tiny random Stable Diffusion folder), `tiny_model` (it, loaded as a
`zeroshot.models.Model`), `tiny_parts` (its components as a dict), `refused_before_loading`
(runs CLI commands that must fail in one line before any model loads). Helper: `randn`.

Tests marked `slow` start processes or sample the embedded model over a held-out set;
`python -m pytest -m "not slow"` is the fast run, `python -m pytest` runs everything.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from zeroshot.testing import build_sd_components, build_sd_folder  # noqa: E402


def randn(*shape, seed=0):
    """Standard normal noise of `shape` from a generator seeded with `seed`."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """Path of a tiny random Stable Diffusion folder (32x32 px, VAE factor 4)."""
    return build_sd_folder(tmp_path_factory.mktemp("tiny_sd"), "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_model(tiny_sd):
    """The tiny folder loaded with `zeroshot.models.load` (one per test module)."""
    from zeroshot import models

    return models.load(str(tiny_sd))


@pytest.fixture(scope="module")
def tiny_parts():
    """Tiny random SD components (unet, vae, text_encoder, tokenizer, scheduler)."""
    return build_sd_components("tiny", seed=0)


@pytest.fixture
def refused_before_loading(tmp_path, capsys, monkeypatch):
    """`check(args, needle)`: `zeroshot ARGS --out TMP/o.mp4 --quiet` exits 2 with one line
    containing `needle`, no model loaded and nothing written."""
    from zeroshot import models
    from zeroshot.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models.ModelSpec, "load", refuse)
    out = tmp_path / "refused"
    out.mkdir()

    def check(args, needle):
        capsys.readouterr()  # what the test printed before (building folders)
        rc = main([*args, "--out", str(out / "o.mp4"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
        assert not list(out.iterdir())

    return check


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
