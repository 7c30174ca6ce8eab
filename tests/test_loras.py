"""LoRA files as users have them (diffusers/PEFT and kohya layouts, through diffusers'
loaders) and zeroshot's own, on the sd, sdxl and animatediff families."""

import pytest
import torch
from safetensors.torch import save_file

from zeroshot import models, testing
from zeroshot.generate import generate
from zeroshot.loras import LoraError, apply_loras
from zeroshot.recipe import Recipe

SMALL = Recipe(method="t2i", height=32, width=32, num_inference_steps=2, num_frames=2)
LAYER = "down_blocks.{}.attentions.0.transformer_blocks.0.attn1.to_q"


def kohya_lora(unet, path, *, rank=2, alpha=1.0, seed=0, block=None):
    """A kohya/A1111-layout LoRA on every attn1.to_q of `unet` (or the named block);
    returns {layer: (up, down)}."""
    gen = torch.Generator().manual_seed(seed)
    state, parts = {}, {}
    for name, module in unet.named_modules():
        if not name.endswith("attn1.to_q") or (block is not None and name != block):
            continue
        down = torch.randn(rank, module.in_features, generator=gen) * 0.5
        up = torch.randn(module.out_features, rank, generator=gen) * 0.5
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
        state[f"{key}.alpha"] = torch.tensor(alpha)
        parts[name] = (up, down)
    save_file(state, str(path))
    return parts


def peft_lora(unet, folder, *, seed=0):
    """A diffusers/PEFT-layout LoRA (`save_lora_weights`) on the attention projections."""
    import copy

    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = copy.deepcopy(unet)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                    init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return testing.build_sd_folder(tmp_path_factory.mktemp("sd"), "tiny", seed=0)


def test_kohya_lora_fuses_exactly_the_scaled_low_rank_update(sd_folder, tmp_path):
    model = models.load(str(sd_folder))
    path = tmp_path / "style.safetensors"
    parts = kohya_lora(model.unet, path, rank=2, alpha=1.0)
    before = {n: model.unet.get_submodule(n).weight.detach().clone() for n in parts}
    out = apply_loras(model, [(path, 0.5)])
    for name, (up, down) in parts.items():
        expected = before[name] + 0.5 * (1.0 / 2) * up @ down  # scale * alpha / rank
        assert torch.allclose(out.unet.get_submodule(name).weight, expected, atol=1e-5)
    assert not any("lora" in n for n, _ in out.unet.named_modules())  # fused: plain layers


def test_peft_and_kohya_loras_together_with_scales(sd_folder, tmp_path):
    base = generate(models.load(str(sd_folder)), "a red cat", SMALL, progress=False).frames
    model = models.load(str(sd_folder))
    a = peft_lora(model.unet, tmp_path / "peft")
    b = tmp_path / "kohya.safetensors"
    kohya_lora(model.unet, b, seed=1)
    one = generate(apply_loras(models.load(str(sd_folder)), [(a, 1.0)]), "a red cat", SMALL, progress=False).frames
    both = generate(apply_loras(model, [(a, 1.0), (b, 0.7)]), "a red cat", SMALL, progress=False).frames
    assert (one - base).abs().max() > 1e-3 and (both - one).abs().max() > 1e-3
    zero = generate(apply_loras(models.load(str(sd_folder)), [(a, 0.0)]), "a red cat", SMALL, progress=False).frames
    assert (zero - base).abs().max() < 1e-5  # scale 0 is the base model


@pytest.mark.parametrize("family", ["sdxl", "animatediff"])
def test_kohya_lora_on_other_families(family, tmp_path):
    folder = testing.FAMILY_FOLDERS[family](tmp_path / family)
    model = models.load(str(folder))
    path = tmp_path / "l.safetensors"
    name = next(n for n, _ in model.unet.named_modules() if n.endswith("attn1.to_q") and "motion" not in n)
    parts = kohya_lora(model.unet, path, block=name)
    before = model.unet.get_submodule(name).weight.detach().clone()
    apply_loras(model, [(path, 1.0)])
    up, down = parts[name]
    assert torch.allclose(model.unet.get_submodule(name).weight, before + 0.5 * up @ down, atol=1e-5)


def test_lora_for_another_base_names_the_key_and_leaves_the_model_untouched(sd_folder, tmp_path):
    model = models.load(str(sd_folder))
    path = tmp_path / "other.safetensors"
    rank = 2
    save_file(
        {
            "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(rank, 32),
            "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.ones(32, rank),
        },
        str(path),
    )
    state = {k: v.clone() for k, v in model.unet.state_dict().items()}
    with pytest.raises(LoraError, match="down_blocks.7") as info:
        apply_loras(model, [(path, 1.0)])
    assert "\n" not in str(info.value)
    assert all(torch.equal(v, state[k]) for k, v in model.unet.state_dict().items())


def test_cli_lora_other_base_is_one_line_exit_2(sd_folder, tmp_path, capsys):
    from zeroshot.cli import main

    path = tmp_path / "other.safetensors"
    save_file({"lora_unet_nothing_here.lora_down.weight": torch.ones(2, 4),
               "lora_unet_nothing_here.lora_up.weight": torch.ones(4, 2)}, str(path))
    rc = main(["generate", "a red cat", "--model", str(sd_folder), "--lora", f"{path}:0.8", "--method", "t2i",
               "--height", "32", "--width", "32", "--steps", "2", "--frames", "2", "--out", str(tmp_path / "o.mp4"),
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "matches no layer" in err
    assert not (tmp_path / "o.mp4").exists()
