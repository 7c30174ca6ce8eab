"""Recipes: frozen dataclasses that say how a video is made.

A `Recipe` is the whole configuration of one `generate()` call except the model, the
prompt and the seed. Its optional parts (`cross_frame`, `motion`, `smoothing`,
`freeinit`, ...) are `None` when off, so an ablation is just another recipe. Presets
(TOML), CLI flags and `--set a.b=v` overrides all map onto these fields 1:1.

Fields left `None` at the top level take the model's recommended value (its
`zeroshot.json`) or, failing that, the library default; `resolve()` fills them in.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any


class RecipeError(ValueError):
    """A recipe, preset or override is invalid. The message is one line for users."""


@dataclass(frozen=True)
class Noise:
    """The initial (and per-step) noise prior; see `zeroshot.noise`.

    `prior` names an entry of `zeroshot.noise.PRIORS`. Parameters left `None` take the
    prior's own default. `per_step` draws the stochastic samplers' per-step noise from
    the same prior (it matters only when `eta > 0` or with an ancestral sampler).
    """

    prior: str = "iid"
    alpha: float | None = None  # PYoCo alpha (mixed, progressive)
    lam: float | None = None  # VideoFusion shared fraction
    key_frame: int | None = None  # VideoFusion: frame that gets the pure base noise
    window: int = 16  # FreeNoise window length (frames)
    stride: int = 4  # FreeNoise window stride (frames)
    per_step: bool = True
    degradation: float | None = None  # flow-warped: share of fresh noise blended in (0: none)


@dataclass(frozen=True)
class CrossFrame:
    """Cross-frame self-attention (Text2Video-Zero Sec. 3.3).

    mode: "first" (keys/values from the anchor frame) or "sparse-causal" (anchor and
    previous frame). layers: which UNet parts get it ("down", "mid", "up").
    steps: the fraction of the sampling schedule (start, end) where it is active.
    """

    mode: str = "first"
    anchor: int = 0
    layers: tuple[str, ...] = ("down", "mid", "up")
    steps: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Motion:
    """Text2Video-Zero motion dynamics (Sec. 3.2) and the motion field they apply.

    The field is in pixels of the output image per frame; positive x moves content
    right, positive y down. `translate=None` takes the model's default (else 12, 12).
    `t0`/`t1` are step indices counted from the end of the schedule, as in the paper's
    code (44 and 47 of 50); `None` scales the paper's (or the model's) choice to the
    step count in use. `mode=None` takes the model's recommended warp sampling, else the
    paper's nearest; `padding=None` the model's recommended padding, else the paper's
    reflection. `dynamics=False` keeps the motion request but skips T2V-Zero's warp: the
    field then only drives flow-warped noise (`noise.prior = "flow-warped"`).
    """

    translate: tuple[float, float] | None = None
    zoom: float = 1.0  # scale factor per frame
    rotate: float = 0.0  # degrees per frame, counter-clockwise on screen
    path: str | None = None  # keyframed camera path (TOML file)
    trajectories: tuple[str, ...] = ()  # polylines "x,y x,y[@frame] ... [r=R] [mask=IMG]" (or "x0,y0->x1,y1")
    still: str | None = None  # with trajectories: a mask image of still pixels, or "rest"
    densify: str = "rbf"  # trajectories -> dense flow: rbf | gaussian (blurred sparse map)
    sigma: float | None = None  # densifying Gaussian's sigma in px; None: a quarter of the smaller side
    from_video: str | None = None  # transfer the motion of a reference video
    mode: str | None = None  # warp: nearest | bilinear | variance-preserving; None: model's, else nearest
    padding: str | None = None  # reflection | border | zeros; None: the model's, else reflection
    t0: int | None = None
    t1: int | None = None
    dynamics: bool = True  # T2V-Zero's warp at T'; false: the field drives flow-warped noise only


@dataclass(frozen=True)
class Smoothing:
    """Text2Video-Zero background smoothing (official code; see methods/smoothing.py)."""

    strength: float = 0.6  # weight of the warped first-frame background
    dilate: int = 5  # foreground mask dilation kernel (latent pixels)
    mask_video: str | None = None  # user-supplied foreground masks instead of attention


@dataclass(frozen=True)
class FreeInit:
    """FreeInit (Wu et al., arXiv 2312.07537): iterative low-frequency re-initialisation."""

    iterations: int = 3
    filter: str = "butterworth"  # butterworth | gaussian | ideal | box
    order: int = 4
    d_s: float = 0.25  # spatial stop frequency (normalised)
    d_t: float = 0.25  # temporal stop frequency (normalised)
    coarse_to_fine: bool = False


@dataclass(frozen=True)
class AnimateDiff:
    """AnimateDiff motion module (trained-module path)."""

    adapter: str | None = None  # MotionAdapter folder/file; None: the embedded model's
    context_length: int | None = None  # FreeNoise/context windows; None: adapter max
    context_stride: int = 4
    flow_adapter: str | None = None  # trained flow adapter file (trained.flow_adapter); follows recipe.motion
    # GenTron's motion-free guidance (Chen et al., arXiv 2312.04557, Eq. 3): lambda_M of
    # eps(empty, off) + lambda_T (eps(text, off) - eps(empty, off)) + lambda_M (eps(text, on) - eps(text, off)),
    # "off" the temporal layers passing frames through; None: plain classifier-free guidance
    motion_free_scale: float | None = None


@dataclass(frozen=True)
class Windows:
    """Context windows over the model function (long videos; zeroshot.techniques.windows):
    the network runs on `length` frames every `stride`, fused with `weighting`."""

    length: int = 16
    stride: int = 4
    weighting: str = "pyramid"  # pyramid | flat


@dataclass(frozen=True)
class Chunks:
    """Frames through the network `size` at a time, output identical to one batch
    (zeroshot.techniques.chunks): memory that does not grow with the video's length."""

    size: int = 8


@dataclass(frozen=True)
class StepCache:
    """DeepCache-style step caching (Ma et al., CVPR 2024, arXiv 2312.00858;
    zeroshot.techniques.step_cache): every `interval` steps the UNet runs whole and the output
    of its deep part (below the `branch`-th resolution level) is kept; the steps between
    recompute only the shallow levels 0..`branch` around that kept feature. interval=1 is
    the uncached run. The first `start` share of the schedule always runs whole (the early
    steps decide the layout; caching only the later ones keeps it). `order=1` forecasts the
    kept feature at a cached step from the last two full steps (a first-order Taylor step in
    the schedule index, as TaylorSeer, Liu et al., ICCV 2025, arXiv 2503.06923) instead of
    reusing the last one (order 0, DeepCache)."""

    interval: int = 3
    branch: int = 0
    start: float = 0.0
    order: int = 0


@dataclass(frozen=True)
class GuidanceInterval:
    """Classifier-free guidance on the `[start, end)` share of the schedule's steps only
    (Kynkäänniemi et al., NeurIPS 2024, arXiv 2404.07724; zeroshot.techniques.guidance_interval):
    the other steps run the conditional branch alone, half the network batch. start=0, end=1
    is plain guidance."""

    start: float = 0.0
    end: float = 0.5


@dataclass(frozen=True)
class TokenMerge:
    """Token merging for Stable Diffusion (ToMe for SD, Bolya & Hoffman, arXiv 2303.17604;
    zeroshot.techniques.token_merge): spatial self-attention runs on `ratio` fewer tokens,
    each merged (bipartite soft matching) into its most similar token of a `stride` x `stride`
    grid, and copied back after; only layers at most `max_downsample` times coarser than the
    latents. ratio=0 is the unmerged run."""

    ratio: float = 0.5
    stride: int = 2
    max_downsample: int = 1


@dataclass(frozen=True)
class SVD:
    """Stable Video Diffusion's own conditioning (`svd` models; zeroshot.families.svd), as its
    pipeline takes it. The guidance rises linearly over the frames from `min_guidance_scale`
    (first frame) to the recipe's `guidance_scale` (last frame)."""

    fps: int = 7  # frame rate the video is conditioned on (the network sees fps - 1)
    motion_bucket_id: int = 127  # more motion for higher values
    noise_aug_strength: float = 0.02  # noise added to the input image before it is encoded
    min_guidance_scale: float = 1.0  # guidance of the first frame
    decode_chunk_size: int | None = None  # frames the temporal decoder sees at once; None: all


@dataclass(frozen=True)
class ControlNet:
    """ControlNet conditioning (Zhang et al., arXiv 2302.05543) of every frame
    (zeroshot.techniques.controlnet); Text2Video-Zero's conditioned modes (Sec. 4.4) add
    cross-frame attention on the ControlNets and one shared initial latent (method
    `controlnet`).

    models: ControlNet folders or `.safetensors` files; signals: one `KIND:VIDEO` per model
    (`zeroshot.control.KINDS`: canny computes edges, depth/pose/map are ready-made maps);
    scales: one conditioning scale per model (empty: 1.0 each); resize: resample a control
    video whose frame count or size differs from the request (else refused); start/end:
    the fraction of the schedule where the ControlNets act (diffusers'
    `control_guidance_start/end`); guess_mode: the ControlNets see the positive prompt only.
    """

    models: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    scales: tuple[float, ...] = ()
    resize: bool = False
    low_threshold: float = 100.0  # canny hysteresis thresholds (gradient magnitudes of 8-bit frames)
    high_threshold: float = 200.0
    guess_mode: bool = False
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class Edit:
    """Video-to-video (SDEdit, Meng et al., arXiv 2108.01073; zeroshot.techniques.edit): the
    input video (`Recipe.video`) is encoded by the VAE, noised to `strength` of the schedule
    with the recipe's noise prior, and denoised over the rest of it (as diffusers' img2img:
    `int(steps * strength)` steps)."""

    strength: float = 0.6


@dataclass(frozen=True)
class Pix2Pix:
    """Video Instruct-Pix2Pix (`pix2pix` models, zeroshot.families.pix2pix; InstructPix2Pix,
    Brooks et al., arXiv 2211.09800, in Text2Video-Zero's video mode): every frame is edited
    by the instruction (the prompt) conditioned on its input frame (`Recipe.video`).
    `image_guidance_scale` weighs the input frames against no image, the recipe's
    `guidance_scale` the text against the input frames alone (three-way guidance, as
    `StableDiffusionInstructPix2PixPipeline`)."""

    image_guidance_scale: float = 1.5


@dataclass(frozen=True)
class Recipe:
    """Everything about how a video is made, except model, prompt and seed."""

    method: str = "t2i"
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str = ""
    eta: float = 0.0
    scheduler: str = "auto"  # the model's own, or one of zeroshot.sampling.SCHEDULERS
    noise: Noise = field(default_factory=Noise)
    cross_frame: CrossFrame | None = None
    motion: Motion | None = None
    smoothing: Smoothing | None = None
    freeinit: FreeInit | None = None
    animatediff: AnimateDiff | None = None
    windows: Windows | None = None
    chunks: Chunks | None = None
    step_cache: StepCache | None = None
    token_merge: TokenMerge | None = None
    guidance_interval: GuidanceInterval | None = None
    prompt_at: tuple[str, ...] = ()  # prompt travel: "FRAME:PROMPT" entries (techniques.prompt_travel)
    image: str | None = None  # input image (path) of image-to-video models (svd)
    video: str | None = None  # input video (path) of video-to-video methods (edit, pix2pix)
    controlnet: ControlNet | None = None
    edit: Edit | None = None
    svd: SVD | None = None  # svd models' conditioning; None: SVD()'s defaults
    pix2pix: Pix2Pix | None = None  # pix2pix models' image guidance; None: Pix2Pix()'s defaults


LIBRARY_DEFAULTS: dict[str, Any] = {
    "num_frames": 8,
    "height": 512,
    "width": 512,
    "num_inference_steps": 50,
    "guidance_scale": 7.5,
    "motion.translate": (12.0, 12.0),
}

# The paper's T2V-Zero warp steps, for a 50-step schedule.
PAPER_T0, PAPER_T1, PAPER_STEPS = 44, 47, 50

METHODS: dict[str, Recipe] = {
    "t2i": Recipe(method="t2i"),
    "t2v-zero": Recipe(method="t2v-zero", cross_frame=CrossFrame(), motion=Motion()),
    "animatediff": Recipe(method="animatediff", animatediff=AnimateDiff()),
    "pyoco-mixed": Recipe(method="pyoco-mixed", noise=Noise(prior="mixed")),
    "pyoco-progressive": Recipe(method="pyoco-progressive", noise=Noise(prior="progressive")),
    "videofusion": Recipe(method="videofusion", noise=Noise(prior="videofusion")),
    "video": Recipe(method="video"),
    # Text2Video-Zero's conditioned modes: one shared initial latent (VideoFusion's prior at
    # lam = 1), no motion warp, cross-frame attention on the UNet and the ControlNets
    "controlnet": Recipe(
        method="controlnet", cross_frame=CrossFrame(), noise=Noise(prior="videofusion", lam=1.0), controlnet=ControlNet()
    ),
    "edit": Recipe(method="edit", cross_frame=CrossFrame(), noise=Noise(prior="videofusion", lam=1.0), edit=Edit()),
    # Text2Video-Zero's Video Instruct-Pix2Pix: an instruct-pix2pix model with cross-frame
    # attention to frame 0; each frame's own initial noise, as its code draws them
    "pix2pix": Recipe(method="pix2pix", cross_frame=CrossFrame(), pix2pix=Pix2Pix()),
}
#: A method's one-line description (`zeroshot methods`).
DESCRIPTIONS: dict[str, str] = {
    "t2i": "independent frames of an image model (the baseline)",
    "t2v-zero": "Text2Video-Zero: motion dynamics in the latents + cross-frame attention to frame 0",
    "animatediff": "AnimateDiff motion modules (an adapter on an image model, or an AnimateDiff folder)",
    "pyoco-mixed": "PYoCo mixed noise prior",
    "pyoco-progressive": "PYoCo progressive noise prior",
    "videofusion": "VideoFusion shared + residual noise prior",
    "video": "a video model's own sampling (ModelScope/ZeroScope, AnimateDiff folders)",
    "controlnet": "Text2Video-Zero's ControlNet mode: control videos, one shared latent, cross-frame attention",
    "edit": "video-to-video: the input video re-noised to a strength and denoised with cross-frame attention",
    "pix2pix": "Video Instruct-Pix2Pix: an instruct-pix2pix model edits each input frame, cross-frame attention",
}


def natural_method(family) -> str:
    """The method a model runs without --method: t2v-zero for image models, the model's own
    video sampling for video models (`animatediff` for AnimateDiff folders, `pix2pix` for
    instruct-pix2pix ones)."""
    if family.family in ("animatediff", "pix2pix"):
        return family.family
    return "t2v-zero" if family.image_model else "video"


def rebase(recipe: Recipe, method: str) -> Recipe:
    """`recipe` re-based on another method: that method's parts, this recipe's top-level
    settings (frames, size, steps, guidance, negative prompt, eta, scheduler, noise)."""
    base = get_method(method)
    keep = {f.name: getattr(recipe, f.name) for f in fields(Recipe) if _part_type(_hints(Recipe)[f.name]) is None}
    keep["noise"] = recipe.noise if recipe.noise != Recipe().noise else base.noise
    keep["method"] = method
    return replace(base, **keep)


def get_method(name: str) -> Recipe:
    """The registered recipe for a method name."""
    if name not in METHODS:
        raise RecipeError(f"unknown method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]


# ---------------------------------------------------------------------------------------
# dict / TOML mapping


def _part_type(tp: Any) -> type | None:
    """The dataclass type inside an annotation like `Motion | None`."""
    for arg in typing.get_args(tp) or (tp,):
        if is_dataclass(arg):
            return arg
    return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert a plain (TOML/JSON/CLI) value to the annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0] if errors else f"{where}: invalid value {value!r}")
    part = _part_type(tp)
    if part is not None:
        if isinstance(value, part):
            return value
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table of {part.__name__} fields, got {value!r}")
        return _from_dict(part, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise RecipeError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise RecipeError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise RecipeError(f"{where}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            # numbers split on ","; lists of strings (drags "x0,y0->x1,y1") on ";"
            sep = ";" if args and args[0] is str else ","
            value = [v.strip() for v in value.split(sep) if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise RecipeError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is Any:
        return value
    raise RecipeError(f"{where}: unsupported field type {tp!r}")


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = _hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise RecipeError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def recipe_from_dict(data: dict, *, where: str = "recipe", base: Recipe | None = None) -> Recipe:
    """Build a Recipe from a plain mapping (a TOML table). Unknown keys are errors.

    With `base`, the mapping overrides it: parts given as tables are merged field by field
    into the base's part (or the part's defaults), and `part = false` switches it off.
    """
    base = base if base is not None else Recipe()
    hints = _hints(Recipe)
    valid = [f.name for f in fields(Recipe)]
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise RecipeError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        part = _part_type(hints[key])
        if part is not None and isinstance(value, dict):
            current = getattr(base, key) or part()
            merged = {**_to_plain(current), **value}
            changes[key] = _from_dict(part, merged, f"{where}.{key}")
        elif part is not None and value is False:
            if key == "noise":
                raise RecipeError(f"{where}.noise cannot be switched off; set noise.prior")
            changes[key] = None
        elif part is not None and value is True:
            changes[key] = getattr(base, key) or part()
        else:
            changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return replace(base, **changes)


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def recipe_to_dict(recipe: Recipe, *, drop_none: bool = False) -> dict:
    """The recipe as plain data (JSON/TOML); parts that are off are `False` in TOML form."""
    out = _to_plain(recipe)
    if drop_none:
        hints = _hints(Recipe)
        for key in list(out):
            if out[key] is None:
                if _part_type(hints[key]) is not None:
                    out[key] = False
                else:
                    del out[key]
        for key, value in list(out.items()):
            if isinstance(value, dict):
                out[key] = {k: v for k, v in value.items() if v is not None}
    return out


def recipe_hash(recipe: Recipe) -> str:
    """A short stable hash of a recipe (used in output names)."""
    blob = json.dumps(recipe_to_dict(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------
# overrides: "a.b=v"


def parse_override(text: str) -> tuple[str, str]:
    """Split `key=value` (dotted key) into its parts."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: expected key=value, e.g. motion.t0=40")
    return key.strip(), value.strip()


def _parse_value(value: Any) -> Any:
    """CLI values: 'none'/'off' switch a part off; lists are comma separated."""
    if isinstance(value, str):
        low = value.lower()
        if low in ("none", "null"):
            return None
    return value


def apply_override(recipe: Recipe, key: str, value: Any) -> Recipe:
    """Return `recipe` with the dotted field `key` set to `value` (checked and coerced).

    Setting a field of a part that is off switches the part on with its defaults first;
    `part=off` (or false/none) switches it off, `part=on` switches it on.
    """
    value = _parse_value(value)
    head, _, rest = key.partition(".")
    if key == "method":
        if not isinstance(value, str):
            raise RecipeError(f"method: expected a method name, got {value!r}")
        return recipe if value == recipe.method else rebase(recipe, value)
    hints = _hints(Recipe)
    if head not in hints:
        valid = ", ".join(f.name for f in fields(Recipe))
        raise RecipeError(f"unknown key {key!r}; valid keys: {valid}")
    part = _part_type(hints[head])
    if not rest:
        if part is not None and not isinstance(value, dict):
            low = str(value).lower() if value is not None else "off"
            if low in ("off", "false", "none", "0", "no"):
                if head == "noise":
                    raise RecipeError("noise cannot be switched off; set noise.prior")
                return replace(recipe, **{head: None})
            if low in ("on", "true", "1", "yes"):
                return replace(recipe, **{head: getattr(recipe, head) or part()})
            raise RecipeError(f"{head}: expected on or off, got {value!r}")
        return replace(recipe, **{head: _coerce(value, hints[head], head)})
    if part is None:
        raise RecipeError(f"unknown key {key!r}: {head} has no fields")
    current = getattr(recipe, head) or part()
    phints = _hints(part)
    if rest not in phints:
        valid = ", ".join(f"{head}.{f.name}" for f in fields(part))
        raise RecipeError(f"unknown key {key!r}; valid keys: {valid}")
    new_part = replace(current, **{rest: _coerce(value, phints[rest], key)})
    return replace(recipe, **{head: new_part})


def get_field(recipe: Recipe, key: str) -> Any:
    """The value of a dotted field (None when its part is off)."""
    obj: Any = recipe
    for name in key.split("."):
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


# ---------------------------------------------------------------------------------------
# resolution and validation


def scaled_warp_steps(num_steps: int, t0: int, t1: int, ref_steps: int) -> tuple[int, int]:
    """Scale T2V-Zero's (t0, t1), given for `ref_steps` steps, to `num_steps` steps.

    The paper's code denoises frame 0 for `ref_steps - t1 - 1` steps to reach T, then
    `t1 - t0` more to reach T'. Both spans are scaled and kept at least 0 and 1 steps,
    so any step count >= 2 gets a valid pair (t0 < t1 <= num_steps - 1).
    """
    if num_steps < 2:
        raise RecipeError(f"num_inference_steps must be >= 2 for t2v-zero motion, got {num_steps}")
    pre = round((ref_steps - t1 - 1) * num_steps / ref_steps)
    mid = max(1, round((t1 - t0) * num_steps / ref_steps))
    pre = min(pre, num_steps - 1 - mid)
    new_t1 = num_steps - 1 - pre
    return new_t1 - mid, new_t1


def resolve(recipe: Recipe, model_defaults: dict[str, Any] | None = None) -> Recipe:
    """Fill every `None` default from the model's recommendations, then the library's.

    `model_defaults` maps dotted keys to values (a model folder's `zeroshot.json`).
    The model may give `motion.t0`/`motion.t1` for its own `num_inference_steps`; they
    are rescaled when the recipe uses another step count.
    """
    model_defaults = dict(model_defaults or {})
    out = recipe
    for key in ("num_frames", "height", "width", "num_inference_steps", "guidance_scale"):
        if getattr(out, key) is None:
            value = model_defaults.get(key, LIBRARY_DEFAULTS[key])
            out = apply_override(out, key, value)
    if out.motion is not None:
        m = out.motion
        if m.translate is None and not (m.path or m.trajectories or m.from_video):
            value = model_defaults.get("motion.translate", LIBRARY_DEFAULTS["motion.translate"])
            out = apply_override(out, "motion.translate", list(value))
        if m.mode is None:
            # the paper warps with nearest sampling; a model may recommend another mode
            out = apply_override(out, "motion.mode", model_defaults.get("motion.mode", "nearest"))
        if m.padding is None:
            # the paper pads with reflection; a model may recommend another padding
            out = apply_override(out, "motion.padding", model_defaults.get("motion.padding", "reflection"))
        n = out.num_inference_steps
        if m.t0 is None or m.t1 is None:
            if "motion.t0" in model_defaults and "motion.t1" in model_defaults:
                ref = int(model_defaults.get("num_inference_steps", n))
                t0, t1 = int(model_defaults["motion.t0"]), int(model_defaults["motion.t1"])
            else:
                ref, t0, t1 = PAPER_STEPS, PAPER_T0, PAPER_T1
            t0, t1 = (t0, t1) if ref == n else scaled_warp_steps(n, t0, t1, ref)
            out = replace(
                out,
                motion=replace(
                    out.motion,
                    t0=m.t0 if m.t0 is not None else t0,
                    t1=m.t1 if m.t1 is not None else t1,
                ),
            )
    validate(out)
    return out


def validate(recipe: Recipe, *, vae_scale_factor: int | None = None, family=None) -> None:
    """Raise RecipeError (one line naming the field and the valid range) if invalid.

    The top-level fields are checked here; every part by its technique
    (`zeroshot.techniques`), against `family` (a family class; None: Stable Diffusion, and
    the method is not checked against the family).
    """
    from zeroshot.sampling import SCHEDULERS

    r = recipe
    if r.num_frames is not None and r.num_frames < 1:
        raise RecipeError(f"num_frames must be >= 1, got {r.num_frames}")
    for key in ("height", "width"):
        value = getattr(r, key)
        if value is not None:
            if value <= 0:
                raise RecipeError(f"{key} must be positive, got {value}")
            if vae_scale_factor and value % vae_scale_factor:
                raise RecipeError(
                    f"{key} must be a multiple of the VAE factor {vae_scale_factor}, got {value}"
                )
    if r.num_inference_steps is not None and r.num_inference_steps < 1:
        raise RecipeError(f"num_inference_steps must be >= 1, got {r.num_inference_steps}")
    if r.guidance_scale is not None and r.guidance_scale < 0:
        raise RecipeError(f"guidance_scale must be >= 0, got {r.guidance_scale}")
    if not 0.0 <= r.eta <= 1.0:
        raise RecipeError(f"eta must be in [0, 1], got {r.eta}")
    if r.scheduler not in SCHEDULERS:
        raise RecipeError(f"scheduler {r.scheduler!r} unknown; valid: {', '.join(SCHEDULERS)}")
    from zeroshot.families import SD
    from zeroshot.techniques import check_all

    if r.method == "video" and family is not None and family.image_model:
        raise RecipeError(
            f"method video samples a video model's frames together; {family.family} models are image models "
            "(use t2i, t2v-zero, animatediff or a noise prior)"
        )
    check_all(r, family or SD)


def recipe_fields() -> list[str]:
    """Every dotted key that `--set` accepts."""
    out = []
    hints = _hints(Recipe)
    for f in fields(Recipe):
        part = _part_type(hints[f.name])
        if part is None:
            out.append(f.name)
        else:
            out.append(f.name)
            out.extend(f"{f.name}.{pf.name}" for pf in fields(part))
    return out


__all__ = [
    "AnimateDiff",
    "CrossFrame",
    "FreeInit",
    "METHODS",
    "Motion",
    "Noise",
    "Recipe",
    "RecipeError",
    "Smoothing",
    "SVD",
    "Windows",
    "Chunks",
    "StepCache",
    "TokenMerge",
    "GuidanceInterval",
    "ControlNet",
    "Edit",
    "Pix2Pix",
    "apply_override",
    "natural_method",
    "rebase",
    "get_method",
    "recipe_from_dict",
    "recipe_hash",
    "recipe_to_dict",
    "resolve",
    "validate",
]
