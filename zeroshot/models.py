"""Load a frozen text-to-image model: the embedded shapes model, a diffusers folder, a single
`.safetensors` checkpoint, or a hub id (where a hub is reachable).

A model folder may carry `zeroshot.json` with recommended recipe settings
(`{"defaults": {"guidance_scale": 3.0, "motion.t0": 16, ...}, "vocabulary": [...]}`);
`generate()` uses them unless the user overrides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

EMBEDDED_MODEL = Path(__file__).parent / "shapes" / "model"
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)
# The seam for more families: model_index.json's _class_name -> loader.
FUTURE_PIPELINES = {"StableDiffusionXLPipeline": "SDXL"}


class ModelError(ValueError):
    """A model could not be found or loaded. The message is one line for users."""


@dataclass
class Model:
    """The frozen components of a text-to-image latent diffusion model."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    model_id: str = "unknown"
    defaults: dict[str, Any] = field(default_factory=dict)
    vocabulary: list[str] | None = None
    path: str | None = None  # the diffusers folder it was loaded from (relative defaults resolve here)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device=None, dtype=None) -> Model:
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(**kwargs)
        return self

    @classmethod
    def from_pipeline(cls, pipe, *, model_id: str | None = None, defaults=None, vocabulary=None, path=None) -> Model:
        """Wrap the components of a diffusers Stable Diffusion pipeline (shared, not copied)."""
        name = model_id or getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "pipeline")
        return cls(
            unet=pipe.unet,
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            scheduler=pipe.scheduler,
            model_id=str(name),
            defaults=dict(defaults or {}),
            vocabulary=vocabulary,
            path=None if path is None else str(path),
        )

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings `(n, L, D)` as Stable Diffusion computes them."""
        tok = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tok.input_ids.to(self.text_encoder.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tok.attention_mask.to(ids.device)
        return self.text_encoder(ids, attention_mask=mask)[0].to(self.unet.dtype)


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


@dataclass(frozen=True)
class ModelCard:
    """What can be known about a model without loading weights (checks before model work)."""

    model_id: str
    defaults: dict[str, Any]
    vocabulary: list[str] | None
    vae_scale_factor: int | None
    path: str | None = None


def peek(path_or_id: str | None) -> ModelCard:
    """Read a model's recommended defaults, vocabulary and VAE factor from its JSON files only."""
    folder = EMBEDDED_MODEL if path_or_id is None else Path(path_or_id).expanduser()
    if not folder.is_dir():
        return ModelCard(str(path_or_id), {}, None, None)
    card = read_model_card(folder)
    factor = None
    vae_config = folder / "vae" / "config.json"
    if vae_config.is_file():
        channels = json.loads(vae_config.read_text()).get("block_out_channels")
        factor = 2 ** (len(channels) - 1) if channels else None
    return ModelCard(
        str(path_or_id or "zeroshot/shapes"), card.get("defaults", {}), card.get("vocabulary"), factor, str(folder)
    )


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") != 1 or Path(text).suffix != ""


def check_model_arg(path_or_id: str | None, *, allow_pickle: bool = False) -> None:
    """Fail fast (before any model work) on a missing path or a refused pickle."""
    if path_or_id is None:
        if not (EMBEDDED_MODEL / "model_index.json").is_file():
            raise ModelError(
                f"the embedded model is missing ({EMBEDDED_MODEL}); pass --model PATH to a diffusers folder"
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

    - `None`: the embedded shapes model shipped in the package;
    - a diffusers folder (`model_index.json`), SD 1.x/2.x;
    - a single `.safetensors` checkpoint (`config`: a local diffusers folder whose configs it
      uses; without one, diffusers fetches them from the hub);
    - `.ckpt`/`.bin` pickles only with `allow_pickle=True`;
    - a hub id such as `org/name` (needs a reachable hub).
    """
    check_model_arg(path_or_id, allow_pickle=allow_pickle)
    if path_or_id is None:
        model = _load_folder(EMBEDDED_MODEL, model_id="zeroshot/shapes")
    else:
        path = Path(path_or_id).expanduser()
        if path.is_dir():
            model = _load_folder(path, model_id=str(path_or_id))
        elif path.is_file():
            model = _load_single_file(path, config=config)
        else:
            model = _load_hub(path_or_id)
    for module in (model.unet, model.vae, model.text_encoder):
        module.requires_grad_(False)
        module.eval()
    if dtype is not None and dtype != model.dtype:
        model.to(dtype=dtype)
    if device is not None and torch.device(device) != model.device:
        model.to(device=device)
    return model


DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """A model as the command line names it: what `zeroshot generate` and every render worker load.

    `path`: as for `load` (None: the embedded model); `config`: configs for a single file;
    `dtype`: one of `DTYPES`; `device`: None means the GPU when there is one; `loras`:
    (file, scale) pairs merged in order (`zeroshot.trained.lora.personalised_model`).
    """

    path: str | None = None
    allow_pickle: bool = False
    config: str | None = None
    dtype: str | None = None
    device: str | None = None
    loras: tuple[tuple[str, float], ...] = ()

    @property
    def render_id(self) -> str | None:
        """What output names hash: the path, plus each LoRA (file stem and scale) if any."""
        if not self.loras:
            return self.path
        return "+".join([self.path or "embedded", *(f"{Path(f).stem}:{s:g}" for f, s in self.loras)])

    def check(self) -> None:
        """Fail fast, before any weights load: a missing model, a refused pickle, a bad LoRA file."""
        from zeroshot.trained.lora import load_lora

        if self.dtype is not None and self.dtype not in DTYPES:
            raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_model_arg(self.path, allow_pickle=self.allow_pickle)
        for file, _ in self.loras:
            load_lora(file)

    def load(self, device: str | None = None) -> Model:
        """The model on `device` (default: `self.device`, else the GPU when there is one)."""
        from zeroshot.trained.lora import personalised_model

        device = device or self.device or ("cuda" if torch.cuda.is_available() else None)
        dtype = getattr(torch, self.dtype) if self.dtype else None
        model = load(self.path, allow_pickle=self.allow_pickle, device=device, dtype=dtype, config=self.config)
        for file, scale in self.loras:
            model = personalised_model(model, file, scale=scale)
        return model


def _load_folder(path: Path, *, model_id: str) -> Model:
    from diffusers import StableDiffusionPipeline

    index = json.loads((path / "model_index.json").read_text())
    kind = index.get("_class_name", "StableDiffusionPipeline")
    if kind in FUTURE_PIPELINES:
        raise ModelError(f"{model_id}: {FUTURE_PIPELINES[kind]} models ({kind}) are not supported yet; SD 1.x/2.x are")
    if kind not in SUPPORTED_PIPELINES:
        raise ModelError(f"{model_id}: unsupported pipeline {kind!r}; supported: {', '.join(SUPPORTED_PIPELINES)}")
    card = read_model_card(path)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    return Model.from_pipeline(
        pipe, model_id=model_id, defaults=card.get("defaults", {}), vocabulary=card.get("vocabulary"), path=path
    )


def _load_single_file(path: Path, *, config: str | None) -> Model:
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = dict(safety_checker=None, requires_safety_checker=False)
    if config is not None:
        kwargs.update(config=str(config), local_files_only=True)
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub, format and config errors come in many types
        raise ModelError(
            f"{path}: could not load the single-file checkpoint ({_first_line(exc)}); offline, pass "
            "config=<local diffusers folder of the same family> (CLI: --model-config)"
        ) from None
    return Model.from_pipeline(pipe, model_id=str(path))


def _load_hub(model_id: str) -> Model:
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model_id, safety_checker=None, requires_safety_checker=False
        )
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        raise ModelError(
            f"could not load {model_id!r} from the model hub ({_first_line(exc)}); if this machine is "
            "offline, download the model elsewhere and pass its local folder: --model /path/to/folder"
        ) from None
    return Model.from_pipeline(pipe, model_id=model_id)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
