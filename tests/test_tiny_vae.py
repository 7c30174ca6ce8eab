"""Another VAE for a model (`--vae`, `ModelSpec.vae`) and the tiny-VAE distiller
(`python -m zeroshot.trained.train_tiny_vae`): a distilled `AutoencoderTiny` folder loads in
place of the model's VAE and decodes the same latents; the model's own VAE folder swaps to
identical output; a relative name is found in the model's folder; what cannot stand in is
refused in one line before any weights load."""

import json
import math

import pytest
import torch

from zeroshot import models
from zeroshot.cli import main
from zeroshot.families.sd import decode_frames, encode_frames
from zeroshot.generate import generate
from zeroshot.models import ModelError, ModelSpec
from zeroshot.recipe import Recipe
from zeroshot.trained import train_tiny_vae as tv

RECIPE = Recipe(method="t2v-zero", num_frames=3, height=32, width=32, num_inference_steps=3)


def _config(tiny_sd, tmp_path, name, **kw):
    return tv.TrainConfig(model=str(tiny_sd), out=str(tmp_path / name), checkpoint=str(tmp_path / f"{name}.pt"),
                          steps=2, batch_size=2, channels=8, warmup=1, save_every=1, **kw)


@pytest.fixture(scope="module")
def tiny_vae(tiny_sd, tmp_path_factory):
    """A two-step distilled AutoencoderTiny folder for the tiny SD model."""
    config = _config(tiny_sd, tmp_path_factory.mktemp("tiny_vae"), "vae_tiny")
    result = tv.train(config, progress=False)
    return config.out, result


def test_distilled_folder_loads_and_a_resumed_run_equals_an_uninterrupted_one(tiny_sd, tiny_vae, tmp_path):
    from diffusers import AutoencoderTiny

    out, result = tiny_vae
    assert result["steps"] == 2 and all(math.isfinite(x) for x in result["losses"])
    loaded = AutoencoderTiny.from_pretrained(out)
    own = models.load(str(tiny_sd)).vae
    assert loaded.config.latent_channels == own.config.latent_channels and loaded.config.scaling_factor == 1.0
    z = torch.randn(1, 4, 8, 8)
    assert loaded.decode(z).sample.shape == (1, 3, 32, 32)  # the model VAE's 4 pixels per latent
    resumed = _config(tiny_sd, tmp_path, "b")
    tv.train(resumed, progress=False, stop_at=1)
    again = tv.train(resumed, progress=False)
    # the same draws and steps (float rounding of oneDNN convolutions aside)
    assert again["losses"] == pytest.approx(result["losses"], rel=1e-5)
    b = AutoencoderTiny.from_pretrained(resumed.out)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(loaded.state_dict().values(), b.state_dict().values()))


def test_distillation_learns_the_model_vae(tiny_sd, tmp_path):
    """Forty steps at a high rate: the decoder's error against the big VAE's decoding falls."""
    config = _config(tiny_sd, tmp_path, "learn", lr=3e-3)
    config = tv.TrainConfig(**{**config.__dict__, "steps": 40, "save_every": 100, "checkpoint": ""})
    losses = tv.train(config, progress=False)["losses"]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_the_swapped_vae_decodes_the_same_latents(tiny_sd, tiny_vae):
    out, _ = tiny_vae
    plain_model = models.load(str(tiny_sd))
    swapped = ModelSpec(str(tiny_sd), vae=out).load("cpu")
    assert type(swapped.vae).__name__ == "AutoencoderTiny" and swapped.vae_scale_factor == plain_model.vae_scale_factor
    assert swapped.model_id == f"{plain_model.model_id}+vae=vae_tiny"
    plain = generate(plain_model, "a red cat", RECIPE, progress=False)
    tiny = generate(swapped, "a red cat", RECIPE, progress=False)
    assert torch.equal(plain.latents, tiny.latents)  # denoising never reads the VAE
    assert torch.equal(tiny.frames, decode_frames(swapped.vae, tiny.latents))
    assert not torch.equal(tiny.frames, plain.frames)
    # encoding (video editing, image input) reads the tiny encoder's latents, already scaled
    latents = encode_frames(swapped.vae, tiny.frames)
    assert latents.shape == tiny.latents.shape


def test_the_own_vae_by_name_in_the_model_folder_is_the_plain_model(tiny_sd):
    spec = ModelSpec(str(tiny_sd), vae="vae")  # a relative name: the model folder's own VAE
    spec.check()
    assert "vae=vae" in spec.render_id
    plain = generate(models.load(str(tiny_sd)), "a red cat", RECIPE, progress=False).frames
    again = generate(spec.load("cpu"), "a red cat", RECIPE, progress=False).frames
    assert torch.equal(plain, again)


def test_what_cannot_stand_in_is_refused_before_weights_load(tiny_sd, tmp_path, monkeypatch, capsys):
    from diffusers import AutoencoderTiny

    with pytest.raises(ModelError, match="no VAE folder"):
        ModelSpec(str(tiny_sd), vae=str(tmp_path / "missing")).check()
    with pytest.raises(ModelError, match="a UNet2DConditionModel cannot replace"):
        ModelSpec(str(tiny_sd), vae=str(tiny_sd / "unet")).check()
    wide = tmp_path / "wide"
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                    num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=8).save_pretrained(wide)
    with pytest.raises(ModelError, match="8 latent channels, the model's VAE has 4"):
        ModelSpec(str(tiny_sd), vae=str(wide)).check()
    coarse = tmp_path / "coarse"
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(coarse)
    with pytest.raises(ModelError, match="8 pixels per latent, the model's VAE has 4"):
        ModelSpec(str(tiny_sd), vae=str(coarse)).check()

    def no_model_work(*a, **k):
        raise AssertionError("the model was loaded before --vae was checked")

    monkeypatch.setattr(models, "load", no_model_work)
    rc = main(["generate", "a red cat", "--model", str(tiny_sd), "--vae", str(wide), "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "latent channels" in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_a_temporal_vae_family_is_refused(tmp_path, tiny_sd):
    from zeroshot.testing import build_svd_folder

    svd = build_svd_folder(tmp_path / "svd")
    with pytest.raises(ModelError, match="svd models decode with their AutoencoderKLTemporalDecoder"):
        ModelSpec(str(svd), vae=str(tiny_sd / "vae")).check()


def test_cli_distils_a_few_steps(tiny_sd, tmp_path):
    out, log = tmp_path / "t", tmp_path / "log.json"
    rc = tv.main(["--model", str(tiny_sd), "--out", str(out), "--checkpoint", "", "--steps", "2", "--batch-size", "1",
                  "--channels", "8", "--log", str(log)])
    assert rc == 0 and (out / "config.json").is_file() and len(json.loads(log.read_text())["losses"]) == 2
    with pytest.raises(SystemExit):
        tv.main(["--model", str(tiny_sd), "--channels", "0"])


def test_shapes_v2_ships_a_distilled_tiny_vae_found_by_name():
    """`--model shapes-v2 --vae vae_tiny`: the shipped AutoencoderTiny decodes the model's latents
    of world images to what its own VAE decodes (above 30 dB over the [-1, 1] range; 33 dB when
    shipped, an untrained one 6 dB) and encodes them to its posterior means (1 % of their
    power; 0.2 % when shipped)."""
    from zeroshot.trained.train_controlnet import ShapesImages

    spec = ModelSpec("shapes-v2", vae="vae_tiny")
    spec.check()
    tiny = spec.load("cpu").vae
    own = models.load("shapes-v2").vae
    images = torch.stack([ShapesImages(seed=11, size=64, length=6, world="v2")[i][0] for i in range(6)])
    x = images * 2 - 1
    scale = own.config.scaling_factor
    with torch.no_grad():
        z = own.encode(x).latent_dist.mean * scale
        reference = own.decode(z / scale).sample.clamp(-1, 1)
        decoded = tiny.decode(z).sample.clamp(-1, 1)
        encoded = tiny.encode(x).latents
    psnr = 10 * torch.log10(4 / ((decoded - reference) ** 2).mean())
    assert psnr > 30, psnr
    assert ((encoded - z) ** 2).mean() < 0.01 * (z**2).mean()
