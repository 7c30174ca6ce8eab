"""LoRA files as users have them, merged into a loaded model.

- zeroshot's own format (`zeroshot.trained.lora.save_lora`: metadata `zeroshot.lora`) is
  merged into a copy of the UNet (`personalised_model`);
- every other `.safetensors` LoRA goes through diffusers' own loaders
  (`lora_state_dict` / `load_lora_weights`, with `peft`): the diffusers/PEFT layout and the
  kohya (A1111, civitai) layout, for the `sd`, `sdxl` and `animatediff` families. Several
  files load as named adapters with their scales and are fused into the weights, so the
  model runs as fast as without them and attention hooks see plain layers.

Before anything is loaded, every tensor's layer is looked up in the model: a LoRA made for
another base fails in one line naming the first key that matches nothing, and the model is
left untouched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zeroshot.trained.lora import METADATA_KEY, lora_file_metadata, personalised_model

#: Families whose diffusers pipelines carry the LoRA loaders used here.
LORA_FAMILIES = ("sd", "sdxl", "animatediff")
#: The suffixes of a LoRA tensor's key after the layer it adapts.
_SUFFIX = re.compile(
    r"\.(lora_[AB]|lora\.(up|down)|lora_(up|down)|lora_linear_layer\.(up|down)|lora_magnitude_vector|alpha)(\.[^.]+)*$"
)
#: diffusers' older attention-processor layout: `attn1.processor.to_q_lora.down.weight`.
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.(up|down)\.weight$")


def layer_of(key: str) -> str | None:
    """The layer path a LoRA tensor adapts (within its component), or None if not a LoRA key."""
    match = _PROCESSOR.search(key)
    if match:
        name = "to_out.0" if match.group(1) == "to_out" else match.group(1)
        return key[: match.start()] + "." + name
    layer = _SUFFIX.sub("", key)
    return None if layer == key else layer


class LoraError(ValueError):
    """A LoRA file that cannot be used with this model (one line for users)."""


def file_format(path: str | Path) -> str:
    """"zeroshot" for our own files, "diffusers" for every other readable `.safetensors` LoRA."""
    path = Path(path)
    if path.is_file() and path.suffix != ".safetensors":
        raise LoraError(f"{path}: LoRA files must be .safetensors")
    try:
        meta = lora_file_metadata(path)
    except (FileNotFoundError, ValueError) as exc:
        raise LoraError(str(exc)) from None
    return "zeroshot" if METADATA_KEY in meta else "diffusers"


def unmatched_key(state: dict, components: dict[str, Any]) -> str | None:
    """The first key of a diffusers-format LoRA state dict whose layer is not in the model.

    Keys look like `unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`
    or `text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight`.
    """
    for key in sorted(state):
        prefix, _, rest = key.partition(".")
        module = components.get(prefix)
        layer = layer_of(rest)
        if module is None or layer is None:
            return key
        try:
            module.get_submodule(layer)
        except AttributeError:
            return key
    return None


def apply_loras(model, loras) -> Any:
    """`model` with every `(file, scale)` of `loras` merged, in order (see module docstring)."""
    ours = [(p, s) for p, s in loras if file_format(p) == "zeroshot"]
    theirs = [(p, s) for p, s in loras if file_format(p) == "diffusers"]
    for path, scale in ours:
        model = personalised_model(model, path, scale=scale)
    if theirs:
        _load_with_diffusers(model, theirs)
    return model


def _load_with_diffusers(model, loras) -> None:
    from zeroshot.trained.inflate import quiet_diffusers

    if model.family not in LORA_FAMILIES:
        raise LoraError(f"LoRA files load on {', '.join(LORA_FAMILIES)} models, not on {model.family} models")
    pipe = model.pipeline()
    components = {name: getattr(model, name) for name in ("unet", "text_encoder", "text_encoder_2") if getattr(model, name, None) is not None}
    for path, _ in loras:
        try:
            with quiet_diffusers():
                state, _alphas = pipe.lora_state_dict(str(path))
        except Exception as exc:  # noqa: BLE001 - diffusers' converters raise many types
            raise LoraError(f"{path}: not a LoRA diffusers can read ({_first_line(exc)})") from None
        bad = unmatched_key(state, components)
        if bad is not None:
            raise LoraError(f"{path}: LoRA key {bad!r} matches no layer of this {model.family} model (another base?)")
    names = [f"lora{i}" for i in range(len(loras))]
    with quiet_diffusers():
        for name, (path, _) in zip(names, loras):
            pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[float(s) for _, s in loras])
        pipe.fuse_lora(adapter_names=names)
        pipe.unload_lora_weights()
    model.model_id = "+".join([model.model_id, *(f"{Path(p).stem}:{s:g}" for p, s in loras)])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
