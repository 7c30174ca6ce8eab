"""The `modelscope` design's exact export to diffusers' `UNet3DConditionModel`.

An inflated `modelscope` model (a frozen SD UNet with `TemporalConvLayer`s and
`TransformerTemporalModel`s hooked where UNet3D has them) maps onto a `UNet3DConditionModel`
weight for weight: the 2-D layers keep their names (1x1-convolution projections squeezed to
the linear ones UNet3D uses), the temporal ones go to `temp_convs`, `temp_attentions` and
`transformer_in`. UNet3D has one attention head size for every level (its
`attention_head_dim`), so only bases whose spatial heads have one size export exactly
(SD 2.x: 64 everywhere); others train and sample as this design but do not export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zeroshot.trained.inflate import move

#: UNet2DConditionModel config values UNet3DConditionModel can only reproduce as these.
_FIXED = {
    "addition_embed_type": None,
    "class_embed_type": None,
    "encoder_hid_dim": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "timestep_post_act": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "resnet_time_scale_shift": "default",
    "only_cross_attention": False,
    "upcast_attention": False,
    "dual_cross_attention": False,
    "cross_attention_norm": None,
    "attention_type": "default",
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "center_input_sample": False,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
}
_BLOCKS_3D = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlock3D",
    "DownBlock2D": "DownBlock3D",
    "CrossAttnUpBlock2D": "CrossAttnUpBlock3D",
    "UpBlock2D": "UpBlock3D",
}


def check_base(unet: Any) -> None:
    """ValueError (one line) when `unet` has a part UNet3DConditionModel's layout lacks."""
    cfg = unet.config
    bad = [f"{k}={cfg.get(k)!r}" for k, v in _FIXED.items() if k in cfg and cfg.get(k) != v]
    blocks = [b for b in (*cfg.down_block_types, *cfg.up_block_types) if b not in _BLOCKS_3D]
    bad += [f"block {b}" for b in blocks]
    per_block = cfg.transformer_layers_per_block
    if (per_block if isinstance(per_block, int) else max(per_block)) != 1:
        bad.append(f"transformer_layers_per_block={per_block}")
    if not any(b.startswith("CrossAttn") for b in cfg.down_block_types):
        bad.append("no cross-attention block")
    if bad:
        raise ValueError(f"the modelscope design needs a UNet3D-like SD UNet; this one has {', '.join(bad)}")


def head_dim(unet: Any, site: str) -> int:
    """The attention head size of the spatial transformer at `site`."""
    transformer = unet.get_submodule(site)
    attn = transformer.transformer_blocks[0].attn1
    return transformer.in_channels // attn.heads


def unet3d_config(unet: Any) -> dict:
    """The `UNet3DConditionModel` config that reproduces `unet`'s 2-D layers exactly."""
    from zeroshot.trained.zoo.designs import transformers

    check_base(unet)
    dims = sorted({head_dim(unet, s) for s in transformers(unet)})
    if len(dims) != 1:
        raise ValueError(
            f"UNet3DConditionModel has one attention head size for every level; this base has {dims} "
            "(it trains and samples as the modelscope design but does not export)"
        )
    cfg = unet.config
    return {
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": tuple(_BLOCKS_3D[b] for b in cfg.down_block_types),
        "up_block_types": tuple(_BLOCKS_3D[b] for b in cfg.up_block_types),
        "block_out_channels": tuple(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "downsample_padding": cfg.downsample_padding,
        "mid_block_scale_factor": cfg.mid_block_scale_factor,
        "act_fn": cfg.act_fn,
        "norm_num_groups": cfg.norm_num_groups,
        "norm_eps": cfg.norm_eps,
        "cross_attention_dim": cfg.cross_attention_dim,
        "attention_head_dim": dims[0],
        "time_cond_proj_dim": cfg.time_cond_proj_dim,
    }


def _unet3d_name(key: str, site: str) -> str:
    """UNet3D module name of the temporal layer keyed `key` hooked at `site`."""
    if site == "conv_in":
        return "transformer_in"
    if key.endswith(":conv"):
        return site.replace(".resnets.", ".temp_convs.")
    return site.replace(".attentions.", ".temp_attentions.")


def export_unet3d(model: Any) -> Any:
    """A new `UNet3DConditionModel` equal to an inflated `modelscope` model (weights copied)."""
    from diffusers import UNet3DConditionModel

    if getattr(model, "design", None) != "modelscope":
        raise ValueError(f"only the modelscope design exports to UNet3DConditionModel, not {getattr(model, 'design', '?')!r}")
    image = model.image
    with torch.random.fork_rng(devices=[]):
        unet3d = UNet3DConditionModel(**unet3d_config(image))
    state = {}
    for name, tensor in image.state_dict().items():
        if (name.endswith(("proj_in.weight", "proj_out.weight"))) and tensor.ndim == 4:
            tensor = tensor[:, :, 0, 0]  # 1x1 convolution -> linear
        state[name] = tensor
    for key, layer in model.temporal.items():
        prefix = _unet3d_name(key, model.sites[key])
        for name, tensor in layer.layer.state_dict().items():
            state[f"{prefix}.{name}"] = tensor
    unet3d.load_state_dict(state, strict=True)
    return move(unet3d, device=model.device, dtype=model.dtype).eval()


def save_pipeline(model: Any, components: dict[str, Any], folder: str | Path) -> Path:
    """Write a `TextToVideoSDPipeline` folder (the `unet3d` family loads it) from an inflated
    `modelscope` model and its base's vae, text_encoder, tokenizer and scheduler."""
    from diffusers import TextToVideoSDPipeline

    parts = {k: components[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    pipe = TextToVideoSDPipeline(unet=export_unet3d(model), **parts)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def main(argv: list[str] | None = None) -> int:
    """`python -m zeroshot.trained.zoo.modelscope MODULE --out FOLDER [--model SD_FOLDER]`:
    a trained `modelscope` module file as a `TextToVideoSDPipeline` folder (the unet3d family)."""
    import argparse

    from zeroshot.trained import zoo
    from zeroshot.trained.train_motion import EMBEDDED_MODEL, load_components

    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.zoo.modelscope", description=main.__doc__.split("\n")[0])
    parser.add_argument("module", help="a modelscope module .safetensors file")
    parser.add_argument("--model", default=None, help="its base SD folder (default: the embedded shapes model)")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    args = parser.parse_args(argv)
    try:
        zoo.check_file(args.module, design="modelscope")
        components = load_components(args.model or EMBEDDED_MODEL, "cpu")
        save_pipeline(zoo.load(args.module, components["unet"], design="modelscope"), components, args.out)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
