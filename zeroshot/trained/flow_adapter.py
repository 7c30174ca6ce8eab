"""A trained flow adapter for AnimateDiff: dense flow in, ControlNet-style residuals out.

A small per-frame convolutional encoder reads each frame's dense flow (the motion request's
field, `zeroshot.motion`, evaluated at the latent cells) and produces one feature map per
resolution of the UNet; a zero-initialised 1x1 convolution per skip connection turns them
into the residuals diffusers' video UNets add to their down-block outputs
(`down_block_additional_residuals`, one per skip connection, and
`mid_block_additional_residual`), as ControlNet does (Zhang et al., ICCV 2023, Sec. 3.1:
"zero convolutions"). The encoder itself is small and reads only the flow, like the motion
encoders of MotionCtrl (Wang et al., SIGGRAPH 2024, object-motion module) and T2I-Adapter;
it does not copy the UNet's encoder. With every zero convolution at zero the residuals are
exactly zero, so an untrained adapter leaves AnimateDiff's output unchanged (tested).

Flow features (`flow_features`): the backward flow of frame k to frame 0 (content at q of
frame k comes from q + flow(q) of frame 0; `zeroshot.motion`'s convention) and its change
from frame k-1, both in units of an eighth of the frame's short side (so the numbers mean
the same at every resolution): 4 channels per latent cell.

Two injections (`INJECTIONS`): `residuals` (above), or `attention`, OnlyFlow's (Koroglu et
al., arXiv 2411.10501): the encoder's features, through one zero-initialised 1x1 convolution
per motion module, are added to the tokens each temporal attention reads (the input of the
motion module's `proj_in`, after its norm), so the flow steers the temporal attention itself
and nothing else; its sites are the motion UNet's motion modules (`motion_sites`).

A saved adapter is one `.safetensors` file whose metadata (`METADATA_KEY`) records its
configuration and the base image UNet it was trained for (`zoo.base_identity`); another base
is refused in one line before any model work (`check_file`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Metadata key of a flow adapter file (value: JSON with format, config, base, notes).
METADATA_KEY = "zeroshot.flow_adapter"
FORMAT = 1
#: Channels of the flow features: backward flow to frame 0 (x, y) and its change since the previous frame.
FLOW_CHANNELS = 4
#: Flow is measured in units of the frame's short side divided by this.
FLOW_UNIT_DIVISOR = 8.0
#: How the flow reaches the video UNet: ControlNet-style skip residuals, or OnlyFlow-style
#: features added to every temporal attention's input tokens.
INJECTIONS = ("residuals", "attention")


def motion_sites(unet: Any) -> list[list]:
    """[name, channels, level] of every motion module (`AnimateDiffTransformer3D`) of a
    `UNetMotionModel`, in module order: level l is at the latent size / 2**l (down block l,
    the mid block at the last level, up block i at the last level - i)."""
    from zeroshot.trained.inflate import temporal_transformers

    found = {id(m) for m in temporal_transformers(unet)}
    levels = len(unet.config.block_out_channels)
    sites = []
    for name, module in unet.named_modules():
        if id(module) not in found:
            continue
        part, _, rest = name.partition(".")
        index = int(rest.split(".")[0]) if part in ("down_blocks", "up_blocks") else levels - 1
        level = index if part == "down_blocks" else levels - 1 - index if part == "up_blocks" else levels - 1
        sites.append([name, int(module.in_channels), level])
    if not sites:
        raise ValueError(f"{type(unet).__name__} has no motion modules for an attention flow adapter")
    return sites


def flow_features(flow_px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Adapter input `(f, 4, h, w)` from a backward flow `(f, 2, h, w)` in output px."""
    if flow_px.ndim != 4 or flow_px.shape[1] != 2:
        raise ValueError(f"flow_px must be (f, 2, h, w), got {tuple(flow_px.shape)}")
    unit = min(height, width) / FLOW_UNIT_DIVISOR
    flow = flow_px.float() / unit
    step = torch.cat([torch.zeros_like(flow[:1]), flow[1:] - flow[:-1]])  # (f, 2, h, w)
    return torch.cat([flow, step], dim=1)


def residual_layout(block_out_channels, layers_per_block) -> list[tuple[int, int]]:
    """(channels, level) of every skip connection of an SD-style UNet's down path, in order:
    conv_in's output, each down block's resnets, and its downsampler (all but the last
    block); level l is at the latent size / 2**l."""
    channels = [int(c) for c in block_out_channels]
    per_block = [int(layers_per_block)] * len(channels) if isinstance(layers_per_block, int) else list(layers_per_block)
    layout = [(channels[0], 0)]
    for level, (c, n) in enumerate(zip(channels, per_block)):
        layout += [(c, level)] * n
        if level < len(channels) - 1:
            layout.append((c, level + 1))
    return layout


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FlowAdapter(nn.Module):
    """Flow features `((b f), 4, h, w)` -> (down residuals, mid residual) of a video UNet.

    block_out_channels / layers_per_block: the UNet's (its skip connections,
    `residual_layout`); hidden: the encoder's channels at every level.
    """

    def __init__(self, block_out_channels, layers_per_block, *, hidden: int = 32, in_channels: int = FLOW_CHANNELS,
                 injection: str = "residuals", sites: list | None = None):
        super().__init__()
        if injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {injection!r}")
        if injection == "attention" and not sites:
            raise ValueError("an attention flow adapter needs the motion modules' sites (motion_sites)")
        self.config = {
            "block_out_channels": [int(c) for c in block_out_channels],
            "layers_per_block": layers_per_block if isinstance(layers_per_block, int) else list(layers_per_block),
            "hidden": int(hidden),
            "in_channels": int(in_channels),
        }
        if injection == "attention":
            self.config.update(injection=injection, sites=[[str(n), int(c), int(lv)] for n, c, lv in sites])
        levels = len(self.config["block_out_channels"])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU()
        )
        self.downs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU()
            )
            for _ in range(levels - 1)
        )
        if injection == "attention":
            self.site_convs = nn.ModuleList(_zero_conv(hidden, c) for _, c, _ in self.config["sites"])
        else:
            self.layout = residual_layout(block_out_channels, layers_per_block)
            self.zero_convs = nn.ModuleList(_zero_conv(hidden, c) for c, _ in self.layout)
            self.mid_conv = _zero_conv(hidden, self.config["block_out_channels"][-1])

    @property
    def injection(self) -> str:
        return self.config.get("injection", "residuals")

    def _levels(self, features: torch.Tensor) -> list[torch.Tensor]:
        levels = [self.stem(features)]  # level 0: the latent size
        for down in self.downs:
            levels.append(down(levels[-1]))
        return levels

    def forward(self, features: torch.Tensor):
        """Residuals: (down residuals, mid residual); attention: one feature map
        `((b f), channels, h_l, w_l)` per motion module site, in `config["sites"]` order."""
        levels = self._levels(features)
        if self.injection == "attention":
            return tuple(conv(levels[level]) for conv, (_, _, level) in zip(self.site_convs, self.config["sites"]))
        down_residuals = tuple(conv(levels[level]) for conv, (_, level) in zip(self.zero_convs, self.layout))
        return down_residuals, self.mid_conv(levels[-1])

    def residuals(self, features: torch.Tensor, *, dtype: torch.dtype | None = None) -> dict[str, Any]:
        """The UNet keywords of flow features `((b f), 4, h, w)`."""
        if self.injection != "residuals":
            raise ValueError("an attention flow adapter adds no residuals (attention_injection)")
        down, mid = self(features)
        if dtype is not None:
            down, mid = tuple(d.to(dtype) for d in down), mid.to(dtype)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def new_flow_adapter(unet: Any, *, hidden: int = 32, seed: int = 0, injection: str = "residuals",
                     motion_unet: Any = None) -> FlowAdapter:
    """A fresh adapter for `unet` (an image UNet or a video UNet with the same down path),
    deterministic in `seed` (global RNG untouched), acting as nothing until trained. The
    attention injection reads its sites from `motion_unet` (default: `unet`, which must then
    be a `UNetMotionModel`)."""
    config = dict(unet.config)
    sites = motion_sites(motion_unet if motion_unet is not None else unet) if injection == "attention" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = FlowAdapter(config["block_out_channels"], config["layers_per_block"], hidden=hidden,
                              injection=injection, sites=sites)
    return adapter.to(device=unet.device, dtype=unet.dtype)


class AttentionInjection:
    """OnlyFlow's injection on a `UNetMotionModel`: forward pre-hooks on every site's
    `proj_in` add the adapter's feature map of that site to the tokens `((b h w), f, c)`
    the temporal attention reads. `set(features, batch, frames)` before each UNet call
    (features `((b f), 4, h, w)`); `remove()` takes the hooks off."""

    def __init__(self, unet: Any, adapter: FlowAdapter):
        modules = dict(unet.named_modules())
        mismatch = [n for n, c, _ in adapter.config["sites"] if n not in modules or getattr(modules[n], "in_channels", None) != c]
        if mismatch or len(adapter.config["sites"]) != len(motion_sites(unet)):
            raise ValueError(f"the flow adapter's motion-module sites do not fit this UNet (first: {mismatch[:1]})")
        self.adapter, self.maps, self.shape = adapter, None, None
        self.handles = [
            modules[name].proj_in.register_forward_pre_hook(self._hook(k), with_kwargs=True)
            for k, (name, _, _) in enumerate(adapter.config["sites"])
        ]

    def set(self, features: torch.Tensor | None, batch: int = 0, frames: int = 0) -> None:
        self.maps = None if features is None else self.adapter(features)
        self.shape = (batch, frames)

    def _hook(self, k: int):
        def hook(module, args, kwargs):
            if self.maps is None:
                return None
            x = kwargs["input"] if "input" in kwargs else args[0]  # ((b h w), f, c)
            b, f = self.shape
            m = self.maps[k]  # ((b f), c, h, w)
            c, h, w = m.shape[1:]
            tokens = m.reshape(b, f, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, f, c).to(x.dtype)
            if "input" in kwargs:
                return args, {**kwargs, "input": x + tokens}
            return (x + tokens, *args[1:]), kwargs

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class FlowConditioned(nn.Module):
    """A video UNet called as usual, with a flow adapter's residuals added: set `flow`
    (flow features `(b, f, 4, h, w)`) before each call. Used by training; generation adds
    the residuals through the model's `residuals_fn` (`techniques.flow_adapter`)."""

    def __init__(self, unet: nn.Module, adapter: FlowAdapter):
        super().__init__()
        self.unet, self.adapter = unet, adapter
        self.flow: torch.Tensor | None = None
        self._injection = AttentionInjection(unet, adapter) if adapter.injection == "attention" else None

    def forward(self, sample, timestep, encoder_hidden_states, **kwargs):
        if self.flow is None:
            raise ValueError("set FlowConditioned.flow (b, f, 4, h, w) before calling it")
        b, _, f = sample.shape[:3]
        if tuple(self.flow.shape[:2]) != (b, f):
            raise ValueError(f"flow is for {tuple(self.flow.shape[:2])} (videos, frames), the sample {(b, f)}")
        features = self.flow.flatten(0, 1).to(sample.device)
        if self._injection is not None:
            self._injection.set(features, b, f)
            try:
                return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)
            finally:
                self._injection.set(None)
        extra = self.adapter.residuals(features, dtype=sample.dtype)
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **extra, **kwargs)


# ---------------------------------------------------------------------------------------
# files


def _identity_fits(base: dict | None, unet: Any) -> str | None:
    """Why an adapter trained on `base` does not fit `unet` (a UNet or its config dict), or None.

    An image UNet (UNet2DConditionModel) must be the recorded base (`zoo.base_identity`);
    a video UNet whose image config is not at hand (an AnimateDiff folder's
    UNetMotionModel) must have the same skip connections and text width."""
    from zeroshot.trained.zoo import base_identity

    if not base or unet is None:
        return None
    config = dict(unet) if isinstance(unet, dict) else dict(unet.config)
    name = config.get("_class_name") or type(unet).__name__
    if name == "UNet2DConditionModel":
        mine = base_identity(unet)
        if {k: base.get(k) for k in mine} == mine:
            return None
        return (
            f"trained on another base model (block_out_channels {base.get('block_out_channels')}, cross_attention_dim "
            f"{base.get('cross_attention_dim')}, config {base.get('config_sha256')}); this one has "
            f"{mine['block_out_channels']}, {mine['cross_attention_dim']}, {mine['config_sha256']}"
        )
    channels = [int(c) for c in config.get("block_out_channels", [])]
    if channels != base.get("block_out_channels") or config.get("cross_attention_dim") != base.get("cross_attention_dim"):
        return (
            f"trained on another base model (block_out_channels {base.get('block_out_channels')}, cross_attention_dim "
            f"{base.get('cross_attention_dim')}); this one has {channels}, {config.get('cross_attention_dim')}"
        )
    return None


def save(adapter: FlowAdapter, path: str | Path, *, base: dict, notes: dict | None = None) -> Path:
    """Write the adapter to one `.safetensors` file (atomically) with its config and base
    (`zoo.base_identity` of the image UNet) in the metadata; `notes`: anything to record
    (the motion module and world it was trained with, steps)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"flow adapters are saved as .safetensors files, got {path}")
    header = {"format": FORMAT, "config": adapter.config, "base": base, "notes": notes or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(header)})
    tmp.replace(path)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """A flow adapter file's header (metadata only); ValueError in one line for a missing
    file, another kind of file or an unknown format."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: expected a .safetensors flow adapter file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, ValueError, SafetensorError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0]})") from None
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is not a flow adapter (no {METADATA_KEY} metadata; a motion module goes to --motion-adapter)")
    header = json.loads(metadata[METADATA_KEY])
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: flow adapter format {header.get('format')!r}, this version reads {FORMAT}")
    return header


def check_file(path: str | Path, unet: Any = None) -> dict[str, Any]:
    """The file's header, checked against the UNet it goes onto (a UNet, its config dict, or
    None): ValueError in one line, before any model work."""
    header = read_header(path)
    why = _identity_fits(header.get("base"), unet)
    if why:
        raise ValueError(f"{path} was {why}")
    return header


def load(path: str | Path, unet: Any = None, *, device=None, dtype=None) -> FlowAdapter:
    """The adapter saved at `path`, checked against `unet` (see `check_file`)."""
    from safetensors.torch import load_file

    header = check_file(path, unet)
    config = header["config"]
    with torch.random.fork_rng(devices=[]):
        adapter = FlowAdapter(
            config["block_out_channels"], config["layers_per_block"], hidden=config["hidden"], in_channels=config["in_channels"],
            injection=config.get("injection", "residuals"), sites=config.get("sites"),
        )
    try:
        adapter.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: tensors do not fit its recorded config ({str(exc).splitlines()[0]})") from None
    if unet is not None and not isinstance(unet, dict):
        device, dtype = device or unet.device, dtype or unet.dtype
    return adapter.to(device=device, dtype=dtype).eval().requires_grad_(False)


__all__ = [
    "FLOW_CHANNELS",
    "INJECTIONS",
    "AttentionInjection",
    "motion_sites",
    "METADATA_KEY",
    "FlowAdapter",
    "FlowConditioned",
    "check_file",
    "flow_features",
    "load",
    "new_flow_adapter",
    "read_header",
    "residual_layout",
    "save",
]
