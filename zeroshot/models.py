"""Load a model: the embedded shapes model, a diffusers folder of any family in
`zeroshot.families.FAMILIES` (SD 1.x/2.x, SDXL, AnimateDiff, ModelScope/ZeroScope), a single
`.safetensors` checkpoint (SD, SDXL), or a hub id (where a hub is reachable).

A model folder may carry `zeroshot.json` with recommended recipe settings
(`{"defaults": {"guidance_scale": 3.0, "motion.t0": 4, ...}, "vocabulary": [...]}`);
`generate()` uses them unless the user overrides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeroshot.families import SD, UnsupportedFamily, family_for
from zeroshot.families.base import read_config, vae_scale_factor

log = logging.getLogger(__name__)

#: The embedded models by name (`--model shapes`): v1 (plain backgrounds) and v2 (patterned
#: backgrounds, `zeroshot.shapes.train --world v2`, with its own motion module).
EMBEDDED_MODELS = {
    "shapes": Path(__file__).parent / "shapes" / "model",
    "shapes-v2": Path(__file__).parent / "shapes" / "model_v2",
}
#: What `--model` means when it is not given: v2, which draws v1's plain-background captions
#: better than v1 (docs/shapes.md: 99.2 % vs 93.0 % on held-out captions) and patterns too.
DEFAULT_EMBEDDED = "shapes-v2"
EMBEDDED_MODEL = EMBEDDED_MODELS[DEFAULT_EMBEDDED]
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
#: Families whose single checkpoint files diffusers converts (`from_single_file`).
SINGLE_FILE_FAMILIES = ("sd", "sdxl")


class ModelError(ValueError):
    """A model could not be found or loaded. The message is one line for users."""


#: A loaded model is an instance of its family's class (zeroshot.families); `Model` is the
#: Stable Diffusion family, the default.
Model = SD


def read_model_card(folder: Path) -> dict:
    """The folder's `zeroshot.json` (recommended defaults, vocabulary) or {}."""
    path = Path(folder) / "zeroshot.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def model_defaults(family: type | None, folder: Path, card: dict) -> dict[str, Any]:
    """A folder's recipe defaults: what its configs imply (`folder_defaults`), under its
    zeroshot.json's `defaults`."""
    implied = family.folder_defaults(folder) if family is not None else {}
    return {**implied, **card.get("defaults", {})}


@dataclass(frozen=True)
class ModelCard:
    """What can be known about a model without loading weights (checks before model work)."""

    model_id: str
    defaults: dict[str, Any]
    vocabulary: list[str] | None
    vae_scale_factor: int | None
    path: str | None = None
    family_class: type | None = None  # None: not known without loading (a hub id or a single file)


def embedded(path_or_id: str | None) -> tuple[Path, str] | None:
    """(folder, model id) of an embedded model name (None: the default one), else None."""
    name = DEFAULT_EMBEDDED if path_or_id is None else path_or_id
    if name not in EMBEDDED_MODELS:
        return None
    return EMBEDDED_MODELS[name], "zeroshot/shapes" if name == "shapes" else f"zeroshot/{name}"


def peek(path_or_id: str | None) -> ModelCard:
    """Read a model's recommended defaults, vocabulary and VAE factor from its JSON files only."""
    known = embedded(path_or_id)
    folder = known[0] if known else Path(path_or_id).expanduser()
    model_id = known[1] if known else str(path_or_id)
    if not folder.is_dir():
        return ModelCard(str(path_or_id), {}, None, None)
    family = None
    if (folder / "model_index.json").is_file():
        family = folder_family(folder, model_id)
    card = read_model_card(folder)
    vae = read_config(folder, "vae")
    if vae.get("block_out_channels"):
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
    else:  # Wan's VAE
        factor = 2 ** len(vae["temperal_downsample"]) if vae.get("temperal_downsample") else None
    return ModelCard(
        model_id,
        model_defaults(family, folder, card),
        card.get("vocabulary"),
        factor,
        str(folder),
        family,
    )


def folder_family(folder: Path, model_id: str) -> type:
    """The family class of a diffusers folder, from its model_index.json `_class_name`; a
    Stable Diffusion folder whose UNet takes 8 channels (latents and image latents, as
    converted instruct-pix2pix checkpoints are often saved) is a pix2pix model."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{model_id}: unreadable model_index.json ({exc})") from None
    try:
        family = family_for(index.get("_class_name", "StableDiffusionPipeline"), model_id)
    except UnsupportedFamily as exc:
        raise ModelError(str(exc)) from None
    if family is SD and read_config(folder, "unet").get("in_channels") == 8:
        from zeroshot.families import Pix2Pix

        return Pix2Pix
    return family


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") != 1 or Path(text).suffix != ""


def check_model_arg(path_or_id: str | None, *, allow_pickle: bool = False) -> None:
    """Fail fast (before any model work) on a missing path, an unknown name or a refused pickle."""
    known = embedded(path_or_id)
    if known is not None:
        if not (known[0] / "model_index.json").is_file():
            raise ModelError(
                f"the embedded model {path_or_id or DEFAULT_EMBEDDED!r} is not in this installation ({known[0]}); "
                f"embedded models present: {', '.join(n for n, f in EMBEDDED_MODELS.items() if f.is_dir()) or 'none'}"
            )
        return
    path = Path(path_or_id).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise ModelError(f"{path_or_id}: not a diffusers model folder (no model_index.json)")
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES and not allow_pickle:
                raise ModelError(
                    f"{path_or_id}: refusing to load a pickle checkpoint ({suffix}), which can run "
                    "arbitrary code; convert it to .safetensors or pass --allow-pickle if you trust it"
                )
            if suffix not in PICKLE_SUFFIXES + (".safetensors",):
                raise ModelError(f"{path_or_id}: unsupported model file type {suffix!r}; use .safetensors")
        return
    if "/" not in path_or_id and not path_or_id.startswith((".", "~")) and Path(path_or_id).suffix == "":
        raise ModelError(
            f"unknown model {path_or_id!r}: embedded models are {', '.join(EMBEDDED_MODELS)}; "
            "otherwise pass a diffusers folder, a .safetensors file or a hub id org/name"
        )
    if _looks_like_path(path_or_id):
        raise ModelError(f"model path not found: {path_or_id}")


def load(
    path_or_id: str | None = None,
    *,
    allow_pickle: bool = False,
    device=None,
    dtype=None,
    config: str | None = None,
) -> Model:
    """Load a model.

    - `None` or an embedded name (`EMBEDDED_MODELS`: "shapes", "shapes-v2"): a model shipped
      in the package;
    - a diffusers folder (`model_index.json`), SD 1.x/2.x;
    - a single `.safetensors` checkpoint (`config`: a local diffusers folder whose configs it
      uses; without one, diffusers fetches them from the hub);
    - `.ckpt`/`.bin` pickles only with `allow_pickle=True`;
    - a hub id such as `org/name` (needs a reachable hub).
    """
    check_model_arg(path_or_id, allow_pickle=allow_pickle)
    known = embedded(path_or_id)
    if known is None and Path(path_or_id).expanduser().is_dir():
        folder_family(Path(path_or_id).expanduser(), str(path_or_id))  # unsupported: one line, no weights read
    if known is not None:
        model = _load_folder(known[0], model_id=known[1])
    else:
        path = Path(path_or_id).expanduser()
        if path.is_dir():
            model = _load_folder(path, model_id=str(path_or_id))
        elif path.is_file():
            model = _load_single_file(path, config=config)
        else:
            model = _load_hub(path_or_id)
    for module in model.modules():
        module.requires_grad_(False)
        module.eval()
    if dtype is not None and dtype != model.dtype:
        model.to(dtype=dtype)
    if device is not None and torch.device(device) != model.device:
        model.to(device=device)
    return model


#: VAEs that decode (and encode) one frame at a time, which `--vae` can swap for each other: a
#: model's own `AutoencoderKL` for another (a fine-tuned decoder) or for an `AutoencoderTiny`
#: (TAESD-style: a small conv decoder, several times faster, a little less sharp).
PER_FRAME_VAES = ("AutoencoderKL", "AutoencoderTiny")


def in_model_folder(name: str, root: str | None) -> str:
    """A file or folder the user names beside a model: `name` as given when it exists here (or
    is absolute, or there is no model folder `root`), else the same relative name inside the
    model's folder when it is there (what a model ships: `--vae vae_tiny`, `--flow-adapter
    flow_adapter.safetensors`)."""
    path = Path(name).expanduser()
    if root is None or path.is_absolute() or path.exists():
        return name
    shipped = Path(root) / name
    return str(shipped) if shipped.exists() else name


def vae_folder(vae: str, model_path: str | None) -> Path:
    """The folder `--vae` names (`in_model_folder`)."""
    folder = Path(in_model_folder(vae, peek(model_path).path)).expanduser()
    if folder.is_dir():
        return folder
    raise ModelError(f"--vae: no VAE folder {vae}" + ("" if Path(vae).is_absolute() else " (here or in the model's folder)"))


def check_vae(vae: str, model_path: str | None) -> Path:
    """`--vae` against the model, from JSON files only: a diffusers `AutoencoderKL` or
    `AutoencoderTiny` folder, a model whose frames are decoded one at a time by an
    `AutoencoderKL`, the same latent channels and pixels per latent. Returns the folder."""
    folder = vae_folder(vae, model_path)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"--vae {vae}: no readable config.json in {folder} (a diffusers AutoencoderKL or "
                         "AutoencoderTiny folder)") from None
    kind = config.get("_class_name")
    if kind not in PER_FRAME_VAES:
        raise ModelError(f"--vae {vae}: a {kind} cannot replace a model's VAE; pass an AutoencoderKL or AutoencoderTiny folder")
    card = peek(model_path)
    own = read_config(Path(card.path), "vae") if card.path and card.family_class is not None else {}
    if not own:
        return folder  # a single file or a hub id: checked against the loaded VAE
    family = card.family_class.family
    if own.get("_class_name") != "AutoencoderKL":
        raise not_per_frame(family, own.get("_class_name"))
    check_vae_fits(config, own, vae)
    return folder


def not_per_frame(family: str, kind: str | None) -> ModelError:
    """The refusal of `--vae` for a family whose VAE decodes frames together."""
    return ModelError(f"--vae: {family} models decode with their {kind} (frames together); "
                      "a per-frame VAE cannot replace it")


def check_vae_fits(config, own, name: str) -> None:
    """A VAE config `config` can stand in for `own`: same latent channels, same pixels per latent."""
    for what, mine, theirs in (("latent channels", own.get("latent_channels"), config.get("latent_channels")),
                               ("pixels per latent", vae_scale_factor(own), vae_scale_factor(config))):
        if mine != theirs:
            raise ModelError(f"--vae {name}: {theirs} {what}, the model's VAE has {mine}")


def swap_vae(model, folder: Path):
    """`model` with the VAE of `folder` (`check_vae`), on the model VAE's device and dtype; its
    `model_id` (which records keep) gains `+vae=<folder name>`, as LoRAs add theirs."""
    import diffusers

    from zeroshot.trained.inflate import quiet_diffusers

    if type(model.vae).__name__ != "AutoencoderKL":
        raise not_per_frame(model.family, type(model.vae).__name__)
    config = json.loads((folder / "config.json").read_text())
    check_vae_fits(config, model.vae.config, str(folder))
    with quiet_diffusers():
        vae = getattr(diffusers, config["_class_name"]).from_pretrained(str(folder), local_files_only=True,
                                                                        torch_dtype=model.vae.dtype)
    model.vae = vae.to(device=model.vae.device).requires_grad_(False).eval()
    model.model_id = f"{model.model_id}+vae={folder.name}"  # records say which VAE decoded
    return model


DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """A model as the command line names it: what `zeroshot generate` and every render worker load.

    `path`: as for `load` (None: the embedded model); `config`: configs for a single file;
    `dtype`: one of `DTYPES`; `device`: None means the GPU when there is one; `loras`:
    (file, scale) pairs merged in order (`zeroshot.trained.lora.personalised_model`);
    `offload`, `vae_tiling`: `zeroshot.memory`'s model CPU offload and tiled VAE.
    """

    path: str | None = None
    allow_pickle: bool = False
    config: str | None = None
    dtype: str | None = None
    device: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    offload: bool = False
    vae_tiling: bool = False
    vae: str | None = None

    @property
    def render_id(self) -> str | None:
        """What output names hash: the path, plus each LoRA (file stem and scale) and another VAE if any."""
        if not self.loras and self.vae is None:
            return self.path
        return "+".join([self.path or "embedded", *(f"{Path(f).stem}:{s:g}" for f, s in self.loras),
                         *([f"vae={self.vae}"] if self.vae is not None else [])])

    def check(self) -> None:
        """Fail fast, before any weights load: a missing model, a refused pickle, a bad LoRA file."""
        from zeroshot.loras import file_format

        if self.dtype is not None and self.dtype not in DTYPES:
            raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_model_arg(self.path, allow_pickle=self.allow_pickle)
        for file, _ in self.loras:
            file_format(file)
        if self.vae is not None:
            check_vae(self.vae, self.path)
        if self.offload or self.vae_tiling:
            from zeroshot import memory

            try:
                memory.check(peek(self.path).family_class, offload=self.offload, vae_tiling=self.vae_tiling,
                             device=self.device)
            except memory.MemoryOptionError as exc:
                raise ModelError(str(exc)) from None

    def load(self, device: str | None = None) -> Model:
        """The model on `device` (default: `self.device`, else the GPU when there is one)."""
        from zeroshot.loras import apply_loras

        from zeroshot import memory

        device = device or self.device or ("cuda" if torch.cuda.is_available() else None)
        dtype = getattr(torch, self.dtype) if self.dtype else None
        target = "cpu" if self.offload else device  # offload: components wait in CPU memory
        model = load(self.path, allow_pickle=self.allow_pickle, device=target, dtype=dtype, config=self.config)
        model = apply_loras(model, self.loras)
        if self.vae is not None:
            swap_vae(model, vae_folder(self.vae, self.path))
        if self.vae_tiling:
            memory.enable_vae_tiling(model)
        if self.offload:
            memory.enable_offload(model, device or "cuda")
        return model


def _pipeline_class(family: type):
    import diffusers

    return getattr(diffusers, family.pipelines[0])


def _pipeline_kwargs(family: type) -> dict[str, Any]:
    """Loader options: SD folders may name a safety checker that is not shipped."""
    return dict(safety_checker=None, requires_safety_checker=False) if family is SD else {}


def _load_folder(path: Path, *, model_id: str):
    from zeroshot.trained.inflate import quiet_diffusers

    family = folder_family(path, model_id)
    card = read_model_card(path)
    with quiet_diffusers():
        pipe = _pipeline_class(family).from_pretrained(str(path), local_files_only=True, **_pipeline_kwargs(family))
    return family.from_pipeline(
        pipe, model_id=model_id, defaults=model_defaults(family, path, card), vocabulary=card.get("vocabulary"), path=path
    )


def _load_single_file(path: Path, *, config: str | None):
    family = SD if config is None else folder_family(Path(config), str(config))
    if family.family not in SINGLE_FILE_FAMILIES:
        raise ModelError(
            f"{path}: single-file checkpoints of the {family.family} family are not supported; "
            "pass its diffusers folder"
        )
    kwargs: dict[str, Any] = _pipeline_kwargs(family)
    if config is not None:
        kwargs.update(config=str(config), local_files_only=True)
    try:
        pipe = _pipeline_class(family).from_single_file(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub, format and config errors come in many types
        raise ModelError(
            f"{path}: could not load the single-file checkpoint ({_first_line(exc)}); offline, pass "
            "config=<local diffusers folder of the same family> (CLI: --model-config)"
        ) from None
    return family.from_pipeline(pipe, model_id=str(path))


def _load_hub(model_id: str):
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(model_id)
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        raise ModelError(
            f"could not load {model_id!r} from the model hub ({_first_line(exc)}); if this machine is "
            "offline, download the model elsewhere and pass its local folder: --model /path/to/folder"
        ) from None
    try:
        return family_for(type(pipe).__name__, model_id).from_pipeline(pipe, model_id=model_id)
    except UnsupportedFamily as exc:
        raise ModelError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
