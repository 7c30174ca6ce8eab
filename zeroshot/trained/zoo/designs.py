"""Where each design puts its layers on a 2-D UNet (one function per paper).

A design function takes the frozen image UNet and its options and returns
`{key: (site, layer)}`: the layer (`zoo.layers`) hooked onto the UNet submodule named
`site`. Sites are found from the UNet's blocks, never guessed from names:

- `resnets`: every `ResnetBlock2D`; `transformers`: every spatial `Transformer2DModel`;
- `layer_outputs`: the output of each layer of every block (its transformer, else its
  resnet), where AnimateDiff puts a motion module, so attention designs reach every level;
- `self_attentions`: the spatial self-attention (`attn1`) of every transformer block.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from zeroshot.trained.zoo import layers as L


def _blocks(unet) -> list[tuple[str, nn.Module]]:
    out = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        out.append(("mid_block", unet.mid_block))
    return out + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]


def resnets(unet) -> list[str]:
    return [f"{name}.resnets.{j}" for name, block in _blocks(unet) for j in range(len(block.resnets))]


def transformers(unet) -> list[str]:
    return [
        f"{name}.attentions.{j}"
        for name, block in _blocks(unet)
        for j in range(len(getattr(block, "attentions", None) or []))
    ]


def layer_outputs(unet) -> list[str]:
    sites = []
    for name, block in _blocks(unet):
        attentions = getattr(block, "attentions", None) or []
        if name == "mid_block":
            sites += [f"{name}.attentions.{j}" for j in range(len(attentions))] or [f"{name}.resnets.0"]
            continue
        for j in range(len(block.resnets)):
            sites.append(f"{name}.attentions.{j}" if j < len(attentions) else f"{name}.resnets.{j}")
    return sites


def self_attentions(unet) -> list[str]:
    return [
        f"{site}.transformer_blocks.{k}.attn1"
        for site in transformers(unet)
        for k in range(len(unet.get_submodule(site).transformer_blocks))
    ]


def channels(unet, site: str) -> int:
    """Output channels of the module at `site` (a resnet, transformer or convolution)."""
    module = unet.get_submodule(site)
    for attr in ("out_channels", "in_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the channels of {site} ({type(module).__name__})")


def _key(site: str, role: str) -> str:
    return f"{site.replace('.', '-')}:{role}"


def _attention_everywhere(unet, make) -> dict[str, tuple[str, L.ZooLayer]]:
    return {_key(s, "attn"): (s, make(channels(unet, s), i)) for i, s in enumerate(layer_outputs(unet))}


# ---------------------------------------------------------------------------------------
# the designs


def vdm(unet, *, heads=None, num_buckets=32, max_distance=32):
    """VDM (Ho et al., 2022, Sec. 3): factorised space-time attention; attention over frames
    at each position after every spatial layer, with a relative position bias."""
    return _attention_everywhere(
        unet,
        lambda c, i: L.TemporalAttention(
            c, heads, position="relative-bias", num_buckets=num_buckets, max_distance=max_distance
        ),
    )


def make_a_video(unet, *, heads=None, kernel_size=3):
    """Make-A-Video (Singer et al., 2022, Sec. 3.2): a 1-D temporal convolution after every
    spatial convolution of the resnets (Dirac init) and temporal attention after every layer
    (zero output projection). Frame order comes from the convolutions; the attention itself
    has no positions."""
    out = {}
    for site in resnets(unet):
        for conv in ("conv1", "conv2"):
            c = unet.get_submodule(f"{site}.{conv}").out_channels
            out[_key(f"{site}.{conv}", "conv")] = (f"{site}.{conv}", L.PseudoConv3d(c, kernel_size))
    out.update(_attention_everywhere(unet, lambda c, i: L.TemporalAttention(c, heads)))
    return out


def modelscope(unet):
    """ModelScope T2V (Wang et al., 2023, Sec. 3.2), as diffusers' `UNet3DConditionModel`
    lays it out: a `TemporalConvLayer` after every resnet, a `TransformerTemporalModel` after
    every spatial transformer and after `conv_in`; exported by `modelscope.export_unet3d`."""
    from diffusers.models.resnet import TemporalConvLayer
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    from zeroshot.trained.zoo.modelscope import check_base, head_dim

    check_base(unet)
    cfg = unet.config
    groups = cfg.norm_num_groups

    def temporal_transformer(c, dim, heads=None, cross=cfg.cross_attention_dim):
        layer = TransformerTemporalModel(heads or c // dim, dim, in_channels=c, num_layers=1,
                                         cross_attention_dim=cross, norm_num_groups=groups)
        L.zero_(layer.proj_out)
        return L.DiffusersTemporal(layer)

    first = transformers(unet)[0]
    c0 = cfg.block_out_channels[0]
    out = {_key("conv_in", "attn"): ("conv_in", temporal_transformer(c0, head_dim(unet, first), heads=8, cross=None))}
    for site in resnets(unet):
        c = channels(unet, site)
        out[_key(site, "conv")] = (site, L.DiffusersTemporal(TemporalConvLayer(c, c, dropout=0.1, norm_num_groups=groups)))
    for site in transformers(unet):
        out[_key(site, "attn")] = (site, temporal_transformer(channels(unet, site), head_dim(unet, site)))
    return out


def video_ldm(unet, *, heads=None, alpha=0.0):
    """Video LDM (Blattmann et al., 2023, Sec. 3.1): a temporal 3-D-conv resnet after every
    resnet and temporal attention after every spatial transformer, each merged with the
    image layer's output by a learned alpha (`AlphaBlender`, `alpha` = its initial logit)."""
    temb = unet.time_embedding.linear_2.out_features
    eps = float(unet.config.norm_eps)
    out = {}
    for site in resnets(unet):
        out[_key(site, "conv")] = (site, L.Blended(L.TemporalResnet(channels(unet, site), temb, eps), alpha))
    for site in transformers(unet):
        out[_key(site, "attn")] = (site, L.Blended(L.TemporalTransformer(channels(unet, site), heads), alpha))
    return out


def latent_shift(unet, *, fraction=0.25):
    """Latent-Shift (An et al., 2023, Sec. 3.2): the temporal shift of `fraction` of the
    channels (half forward, half backward) on the input of every resnet's first
    convolution, parameter-free in the paper; here gated by a zero-initialised
    per-channel scale so that the frozen image model is the starting point."""
    return {
        _key(f"{s}.conv1", "shift"): (f"{s}.conv1", L.GatedShift(unet.get_submodule(f"{s}.conv1").in_channels, fraction))
        for s in resnets(unet)
    }


def simda(unet, *, fraction=0.25, ratio=0.25):
    """SimDA (Xing et al., 2023, Sec. 3.2-3.3): latent-shift attention (keys and values of
    every spatial self-attention from tokens shifted over frames, gated) plus a spatial and
    a temporal bottleneck adapter after every spatial transformer (zero up-projections)."""
    out = {}
    for site in self_attentions(unet):
        dim = unet.get_submodule(site).query_dim
        out[_key(site, "shift")] = (site, L.ShiftedKeys(dim, fraction))
    for site in transformers(unet):
        c = channels(unet, site)
        out[_key(site, "spatial")] = (site, L.Adapter(c, ratio, temporal=False))
        out[_key(site, "temporal")] = (site, L.Adapter(c, ratio, temporal=True))
    return out


def magicvideo(unet, *, heads=None):
    """MagicVideo (Zhou et al., 2022, Sec. 3.3): directed temporal attention, each frame
    attending to itself and earlier frames only, with sinusoidal frame positions."""
    return _attention_everywhere(unet, lambda c, i: L.TemporalAttention(c, heads, sinusoidal=True, causal=True))


def videofactory(unet, *, heads=None, window_frames=None, window_size=4):
    """VideoFactory (Wang et al., 2023, Sec. 3.2): swapped spatial-temporal cross-attention
    in 3-D windows after every layer; the query stream alternates layer by layer."""
    window = (window_frames, window_size, window_size)
    return _attention_everywhere(
        unet,
        lambda c, i: L.SwapAttention(c, heads, query="spatial" if i % 2 == 0 else "temporal", window=window),
    )


def walt(unet, *, heads=None, window_frames=None, window_size=4):
    """W.A.L.T. (Gupta et al., 2023, Sec. 3.2): local window self-attention after every
    layer, alternating spatio-temporal windows (`window_frames` x size x size) and spatial
    ones (1 x size x size)."""
    return _attention_everywhere(
        unet,
        lambda c, i: L.WindowAttention(c, heads, frames=window_frames if i % 2 == 0 else 1, size=window_size),
    )


def lavie(unet, *, heads=None):
    """LaVie (Wang et al., 2023, Sec. 3.1): temporal attention with rotary frame positions."""
    return _attention_everywhere(unet, lambda c, i: L.TemporalAttention(c, heads, position="rotary"))


def lvdm(unet, *, heads=None, max_distance=16):
    """LVDM (He et al., 2022, Sec. 3.2): temporal attention with learned relative position
    vectors on keys and values (Shaw et al., 2018), clipped at `max_distance` frames."""
    return _attention_everywhere(
        unet, lambda c, i: L.TemporalAttention(c, heads, position="relative", max_distance=max_distance)
    )


#: design name -> (builder, default options). `animatediff` is built by zeroshot.trained.inflate.
BUILDERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "vdm": (vdm, {"heads": None, "num_buckets": 32, "max_distance": 32}),
    "make-a-video": (make_a_video, {"heads": None, "kernel_size": 3}),
    "modelscope": (modelscope, {}),
    "video-ldm": (video_ldm, {"heads": None, "alpha": 0.0}),
    "latent-shift": (latent_shift, {"fraction": 0.25}),
    "simda": (simda, {"fraction": 0.25, "ratio": 0.25}),
    "magicvideo": (magicvideo, {"heads": None}),
    "videofactory": (videofactory, {"heads": None, "window_frames": None, "window_size": 4}),
    "walt": (walt, {"heads": None, "window_frames": None, "window_size": 4}),
    "lavie": (lavie, {"heads": None}),
    "lvdm": (lvdm, {"heads": None, "max_distance": 16}),
}
