"""The video model zoo's temporal designs as trainable blocks on a frozen image UNet.

    model = inflate(unet, design="lavie")            # identity at init
    eps = model(latents_bcfhw, t, encoder_hidden_states=text.repeat_interleave(f, 0)).sample
    save(model, "lavie.safetensors"); model = load("lavie.safetensors", unet)

Every design turns a `UNet2DConditionModel` into a video denoiser with AnimateDiff's call
convention (`(b, c, f, h, w)` samples, text repeated per frame). `animatediff` is today's
`UNetMotionModel` (zeroshot.trained.inflate); every other design is a `ZooUNet`: a frozen
copy of the image UNet (`image`) with temporal layers (`temporal`, `zoo.layers`) hooked
onto its resnets, transformers or attention layers where the paper puts them
(`zoo.designs`). The given UNet is never changed; only the temporal layers train; each
design starts as the identity, so the inflated model is the per-frame image model until
trained. docs/zoo.md describes each design.

A saved module is one `.safetensors` file whose metadata records the design, its options
and the base UNet's identity (`base_identity`); loading it onto another base, or as another
design, fails in one line before any model work.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn

from zeroshot.trained.zoo.designs import BUILDERS
from zeroshot.trained.zoo.layers import Frames

#: Every design, in the order docs/zoo.md lists them.
DESIGNS = (
    "animatediff",
    "vdm",
    "make-a-video",
    "modelscope",
    "video-ldm",
    "latent-shift",
    "simda",
    "magicvideo",
    "videofactory",
    "walt",
    "lavie",
    "lvdm",
)
#: Options of each design and their defaults.
OPTIONS: dict[str, dict[str, Any]] = {
    "animatediff": {"heads": None, "max_seq_length": 32, "transformer_layers": 1},
    **{name: dict(defaults) for name, (_, defaults) in BUILDERS.items()},
}
#: Metadata key of a zoo module file (value: JSON with design, options, base, format).
METADATA_KEY = "zeroshot.zoo"
FORMAT = 1


def check_design(design: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The design's full options (defaults filled); ValueError in one line for an unknown
    design or option."""
    if design not in OPTIONS:
        raise ValueError(f"unknown design {design!r}; designs: {', '.join(DESIGNS)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS[design]))
    if unknown:
        valid = ", ".join(OPTIONS[design]) or "none"
        raise ValueError(f"design {design!r} has no option {', '.join(unknown)}; its options: {valid}")
    return {**OPTIONS[design], **options}


def base_identity(unet: Any) -> dict[str, Any]:
    """What a module file records about its base UNet: class, channels, text width and a
    hash of the whole config (private keys left out). Personalised copies of a base (LoRA,
    DreamBooth) share it; another architecture does not. `unet`: a UNet, or the dict of its
    config.json (defaults filled in as loading would)."""
    if isinstance(unet, dict):
        name, config = unet.get("_class_name", "UNet2DConditionModel"), _filled_config(unet)
    else:
        name, config = type(unet).__name__, dict(unet.config)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=list)
    return {
        "class": name,
        "block_out_channels": [int(c) for c in config["block_out_channels"]],
        "cross_attention_dim": config.get("cross_attention_dim"),
        "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
    }


def _filled_config(config: dict) -> dict:
    """A UNet2DConditionModel config.json with every default filled in, as a loaded model has it."""
    import inspect

    from diffusers import UNet2DConditionModel

    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}
    return {**defaults, **UNet2DConditionModel.extract_init_dict(dict(config))[0]}


class ZooUNet(nn.Module):
    """A frozen image UNet (`image`, a copy) with a design's temporal layers hooked on.

    Called like diffusers' `UNetMotionModel`: `(sample (b, c, f, h, w), timestep,
    encoder_hidden_states ((b f), n, d))`; returns an object with `.sample` (b, c, f, h, w).
    """

    def __init__(self, image: nn.Module, design: str, options: dict, layers: dict, base: dict):
        super().__init__()
        self.image = image
        self.design, self.options, self.base = design, dict(options), dict(base)
        self.frames = Frames()
        self.temporal = nn.ModuleDict({key: layer for key, (_, layer) in layers.items()})
        self.sites = {key: site for key, (site, _) in layers.items()}
        for key, layer in self.temporal.items():
            layer.frames = self.frames
            layer.attach(image.get_submodule(self.sites[key]))

    @property
    def dtype(self) -> torch.dtype:
        return self.image.dtype

    @property
    def device(self) -> torch.device:
        return self.image.device

    @property
    def config(self):
        """The image UNet's config (channels, sample size, ...)."""
        return self.image.config

    def train(self, mode: bool = True) -> ZooUNet:
        super().train(mode)
        self.image.eval()  # the frozen image model never trains (no dropout in it)
        return self

    def forward(self, sample, timestep, encoder_hidden_states, *, return_dict: bool = True, **kwargs):
        from diffusers.models.unets.unet_3d_condition import UNet3DConditionOutput

        b, _, f = sample.shape[:3]
        # contiguous: a permuted view can make every activation channels-last, and CPU Conv3d
        # backward (video-ldm's temporal resnets) crashed on those (torch 2.13)
        x = rearrange(sample, "b c f h w -> (b f) c h w").contiguous()
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 1 and t.numel() == b and b * f != b:
            t = t.repeat_interleave(f)  # one timestep per video -> per frame
        self.frames.count = f
        try:
            out = self.image(x, t, encoder_hidden_states=encoder_hidden_states, **kwargs).sample
        finally:
            self.frames.count = None
        out = rearrange(out, "(b f) c h w -> b c f h w", f=f)
        return UNet3DConditionOutput(sample=out) if return_dict else (out,)

    # attention processors: the image model's names as in the image UNet, temporal ones under "temporal."
    @property
    def attn_processors(self) -> dict[str, Any]:
        found = {f"{n}.processor": m.get_processor() for n, m in self.image.named_modules() if hasattr(m, "get_processor")}
        found.update(
            {f"temporal.{n}.processor": m.get_processor() for n, m in self.temporal.named_modules() if hasattr(m, "get_processor")}
        )
        return found

    def set_attn_processor(self, processors: dict[str, Any]) -> None:
        for name, proc in processors.items():
            path = name[: -len(".processor")]
            owner = self if path.startswith("temporal.") else self.image
            owner.get_submodule(path).set_processor(proc)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The temporal layers' parameters (what training updates)."""
    if isinstance(model, ZooUNet):
        return list(model.temporal.parameters())
    from zeroshot.trained.inflate import motion_parameters

    return motion_parameters(model)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The temporal layers' tensors (copied), keyed as `save` writes them."""
    if isinstance(model, ZooUNet):
        return {k: v.detach().clone() for k, v in model.temporal.state_dict().items()}
    from zeroshot.trained.inflate import motion_state_dict

    return motion_state_dict(model)


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put tensors from `trainable_state` back (strict for a ZooUNet)."""
    if isinstance(model, ZooUNet):
        model.temporal.load_state_dict(state, strict=True)
    else:
        model.load_state_dict(state, strict=False)


@contextlib.contextmanager
def temporal_off(model: nn.Module):
    """Within the block the temporal layers pass frames through (images: joint image-video
    training, motion-free guidance); per-frame adapters keep working."""
    if not isinstance(model, ZooUNet):
        raise ValueError("temporal_off needs a zoo model (the animatediff design has no switch)")
    before = model.frames.temporal
    model.frames.temporal = False
    try:
        yield model
    finally:
        model.frames.temporal = before


def inflate(unet: Any, design: str = "animatediff", *, seed: int = 0, **options: Any) -> nn.Module:
    """A new video UNet: `unet` (a `UNet2DConditionModel`, read, never changed) with one
    design's temporal layers, deterministic in `seed` (global RNG untouched), frozen except
    for the temporal layers, in eval mode, the identity at init."""
    options = check_design(design, options)
    base = base_identity(unet)
    if design == "animatediff":
        from zeroshot.trained.inflate import inflate as inflate_motion
        from zeroshot.trained.inflate import new_motion_adapter

        adapter = new_motion_adapter(
            unet,
            seed=seed,
            num_attention_heads=options["heads"],
            max_seq_length=options["max_seq_length"],
            transformer_layers=options["transformer_layers"],
        )
        model = inflate_motion(unet, adapter)
        model.zoo_design, model.zoo_options, model.zoo_base = design, options, base
        return model
    builder = BUILDERS[design][0]
    image = copy.deepcopy(unet).requires_grad_(False).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = builder(image, **options)
    model = ZooUNet(image, design, options, layers, base)
    model.temporal.to(device=image.device, dtype=image.dtype)
    model.temporal.requires_grad_(False)
    return model.eval()


def design_of(model: nn.Module) -> str:
    return model.design if isinstance(model, ZooUNet) else getattr(model, "zoo_design", "animatediff")


# ---------------------------------------------------------------------------------------
# files


def save(model: nn.Module, path: str | Path) -> Path:
    """Write the temporal layers to one `.safetensors` file (atomically), with the design,
    options and base identity in its metadata. An `animatediff` file is also a motion
    adapter file that `trained.animatediff.load_motion_adapter` reads."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"zoo modules are saved as .safetensors files, got {path}")
    design = design_of(model)
    if isinstance(model, ZooUNet):
        options, base = model.options, model.base
        state = {k: v.detach().contiguous().cpu() for k, v in model.temporal.state_dict().items()}
        metadata = {}
    else:
        from zeroshot.trained import animatediff as ad
        from zeroshot.trained.inflate import ADAPTER_KEYS, extract_adapter

        options, base = getattr(model, "zoo_options", {}), getattr(model, "zoo_base", None)
        adapter = extract_adapter(model)
        state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
        config = {k: ad._plain(adapter.config[k]) for k in ADAPTER_KEYS}
        metadata = {ad.METADATA_KEY: json.dumps(config)}
    header = {"design": design, "options": options, "base": base, "format": FORMAT}
    metadata[METADATA_KEY] = json.dumps(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """A module file's design, options and base (None where not recorded), from its metadata
    only. A motion adapter without zoo metadata (ours before the zoo, AnimateDiff's
    originals, a diffusers folder) reads as the `animatediff` design with an unknown base."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".safetensors":
        return {"design": "animatediff", "options": {}, "base": None}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({exc})") from None
    if METADATA_KEY not in metadata:
        return {"design": "animatediff", "options": {}, "base": None}
    header = json.loads(metadata[METADATA_KEY])
    if header.get("design") not in DESIGNS:
        raise ValueError(f"{path}: unknown design {header.get('design')!r}; designs: {', '.join(DESIGNS)}")
    return header


def check_file(path: str | Path, unet_config: Any = None, *, design: str | None = None) -> dict[str, Any]:
    """The file's header, checked (ValueError in one line, before any model work) against the
    design asked for and the base it goes onto (`unet_config`: a UNet, the dict of its
    config.json, or None)."""
    header = read_header(path)
    if design is not None and header["design"] != design:
        raise ValueError(f"{path} holds a {header['design']!r} module, not {design!r}")
    if unet_config is not None and header.get("base"):
        mine = base_identity(unet_config)
        theirs = header["base"]
        if {k: theirs.get(k) for k in mine} != mine:
            raise ValueError(
                f"{path} was trained on another base model (block_out_channels {theirs.get('block_out_channels')}, "
                f"cross_attention_dim {theirs.get('cross_attention_dim')}, config {theirs.get('config_sha256')}); "
                f"this one has {mine['block_out_channels']}, {mine['cross_attention_dim']}, {mine['config_sha256']}"
            )
    return header


def load(path: str | Path, unet: Any, *, design: str | None = None, device=None, dtype=None) -> nn.Module:
    """Inflate `unet` with the module saved at `path` (its recorded design and options)."""
    header = check_file(path, unet, design=design)
    if header["design"] == "animatediff":
        from zeroshot.trained.animatediff import load_motion_adapter
        from zeroshot.trained.inflate import inflate as inflate_motion

        adapter = load_motion_adapter(path, device=unet.device, dtype=unet.dtype)
        model = inflate_motion(unet, adapter)
        model.zoo_design = "animatediff"
        model.zoo_options = header.get("options") or {}
        model.zoo_base = header.get("base") or base_identity(unet)
        return model
    from safetensors.torch import load_file

    model = inflate(unet, header["design"], **header["options"])
    state = load_file(str(path))
    try:
        model.temporal.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"{path}: tensors do not fit the {header['design']} design on this base ({first})") from None
    return model.to(device=device or unet.device, dtype=dtype or unet.dtype)


__all__ = [
    "DESIGNS",
    "METADATA_KEY",
    "OPTIONS",
    "ZooUNet",
    "base_identity",
    "check_design",
    "check_file",
    "design_of",
    "inflate",
    "load",
    "load_trainable_state",
    "read_header",
    "save",
    "temporal_off",
    "trainable_parameters",
    "trainable_state",
]
