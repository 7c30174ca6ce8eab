"""Train a motion module (AnimateDiff's, or any design of the zoo) on a frozen text-to-image model.

    python -m zeroshot.trained.train_motion --time-limit 1140          # CPU, ~19 min
    python -m zeroshot.trained.train_motion --steps 5000 --batch-size 16 --device cuda
    python -m zeroshot.trained.train_motion --design lavie --time-limit 1800
    python -m zeroshot.trained.train_motion --design list              # the designs

Every design (`zeroshot.trained.zoo.DESIGNS`) trains on the same clips, steps, batch,
seed and learning-rate rule; `--option KEY=VALUE` sets a design's options. With
`--joint-images P` a fraction P of the batches are images: the temporal layers are off
and every frame is its own image (VDM, Make-A-Video and LaVie train jointly this way). The
image model is frozen here, so image batches only teach per-frame parts (SimDA's spatial
adapters); for the purely temporal designs they carry no gradient.

The image model (default: the embedded shapes model) stays frozen; it is inflated with
a new motion adapter whose output projections start at zero, so step 0 is exactly the
image model. Only the motion layers learn, from the shapes world's moving videos
(`zeroshot.shapes.world.sample_video`; translate, bounce and zoom) with the usual
epsilon-prediction loss and 10% empty captions (AnimateDiff, Guo et al., Sec. 4.2).

Runs are seeded and resumable: a checkpoint (adapter, optimiser, step, losses) is written
atomically every `--save-every` steps to `--checkpoint` and picked up on the next start.
Sample `i` of the data stream is a pure function of (seed, i), so a resumed run sees the
same data as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from zeroshot.trained import zoo

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "shapes" / "model"
EMBEDDED_MODEL_V2 = EMBEDDED_MODEL.with_name("model_v2")
DEFAULT_OUT = Path(__file__).resolve().parent / "weights" / "shapes_motion.safetensors"
DEFAULT_CHECKPOINT = "/tmp/zeroshot-motion/checkpoint.pt"


def default_paths(design: str, world: str = "v1") -> tuple[str, str]:
    """(out, checkpoint) defaults of a design: today's for animatediff, per design otherwise;
    world v2's with a `_v2` suffix."""
    suffix = "" if world == "v1" else f"_{world}"
    if design == "animatediff":
        return (str(DEFAULT_OUT.with_name(f"shapes{suffix}_motion.safetensors")),
                DEFAULT_CHECKPOINT.replace("checkpoint", f"checkpoint{suffix}"))
    return (str(DEFAULT_OUT.with_name(f"shapes{suffix}_{design}.safetensors")),
            f"/tmp/zeroshot-motion/{design}{suffix}.pt")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a motion-module training run."""

    model: str | None = None  # SD folder; None: the embedded shapes model
    out: str = str(DEFAULT_OUT)
    checkpoint: str = DEFAULT_CHECKPOINT
    steps: int = 650
    batch_size: int = 4
    frames: tuple[int, ...] = (8,)  # clip lengths, cycled batch by batch
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 30
    grad_clip: float = 1.0
    seed: int = 0
    max_seq_length: int = 8
    num_attention_heads: int | None = 4
    transformer_layers: int = 1
    empty_prompt_prob: float = 0.1
    min_snr_gamma: float | None = 5.0
    save_every: int = 50
    device: str = "cpu"
    workers: int = 0
    design: str = "animatediff"  # zeroshot.trained.zoo.DESIGNS
    options: dict = field(default_factory=dict)  # the design's options (zoo.OPTIONS)
    joint_images: float = 0.0  # fraction of batches trained as images (temporal layers off)
    world: str = "v1"  # shapes world of the clips: v1, or v2 (patterned backgrounds, camera pans)


# ---------------------------------------------------------------------------------------
# data


class ShapesVideos(torch.utils.data.Dataset):
    """Item `i`: a shapes-world clip drawn from `numpy.random.default_rng([seed, i])`.

    Its length is `frames[(i // batch_size) % len(frames)]`, so a batch has one length.
    Returns (frames (f, 3, H, W) float in [0, 1], caption). World v2 clips move the object
    and the background separately and never show a held-out caption (`HELD_OUT_V2`).
    """

    def __init__(self, seed: int, batch_size: int, frames: tuple[int, ...], size: int, length: int,
                 world: str = "v1"):
        if world not in ("v1", "v2"):
            raise ValueError(f"world must be v1 or v2, got {world!r}")
        self.seed, self.batch_size, self.frames, self.size, self.length = seed, batch_size, frames, size, length
        self.world = world

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int):
        """Item `index`'s `world.Video` and the generator it was drawn with (left where the
        clip's draws end, for a subclass's own draws)."""
        import numpy as np

        from zeroshot.shapes import world

        rng = np.random.default_rng([self.seed, index])
        num_frames = self.frames[(index // self.batch_size) % len(self.frames)]
        if self.world == "v2":
            return world.sample_video_v2(rng, num_frames, size=self.size, exclude=world.HELD_OUT_V2), rng
        return world.sample_video(rng, num_frames, size=self.size), rng

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        video, _ = self.clip(index)
        return torch.from_numpy(video.frames), video.caption


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([f for f, _ in items]), [c for _, c in items]


def batches(dataset: torch.utils.data.Dataset, start_step: int, steps: int, batch_size: int, workers: int,
            collate=_collate):
    """Batches of `dataset` for steps start_step..steps-1 (deterministic, resumable; `workers`
    processes draw the clips, each item being a function of its index alone)."""
    indices = range(start_step * batch_size, steps * batch_size)
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------
# model pieces


def load_components(path: str | Path, device: str) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer and scheduler of an SD folder, frozen, in eval mode."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = str(path)
    parts = {
        "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True),
        "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True),
        "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True),
    }
    for module in parts.values():
        module.requires_grad_(False).eval().to(device)
    parts["tokenizer"] = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
    parts["scheduler"] = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    return parts


@torch.no_grad()
def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings (b, n, d) of `prompts` (padded to the tokenizer's max length)."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


@torch.no_grad()
def encode_video(vae: Any, frames: torch.Tensor) -> torch.Tensor:
    """Latents (b, c, f, h, w) of videos (b, f, 3, H, W) in [0, 1] (posterior means, scaled)."""
    x = rearrange(frames, "b f c h w -> (b f) c h w").to(vae.device, vae.dtype) * 2 - 1
    z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    return rearrange(z, "(b f) c h w -> b c f h w", b=frames.shape[0])


def diffusion_loss(
    motion_unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    generator: torch.Generator,
    *,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """Squared error of the noise (or v) prediction at uniformly drawn timesteps.

    One timestep per video, shared by its frames. With `min_snr_gamma`, each video's
    error is weighted by min(SNR, gamma) / SNR (Min-SNR, Hang et al., ICCV 2023; the
    weighting the embedded model was trained with); for v-prediction by
    min(SNR, gamma) / (SNR + 1).
    """
    b, _, f = latents.shape[:3]
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=device)
    noisy = scheduler.add_noise(latents, noise, t)
    v_pred = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, t) if v_pred else noise
    pred = motion_unet(noisy, t, encoder_hidden_states=embeds.repeat_interleave(f, dim=0)).sample
    error = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3, 4))  # (b,)
    if min_snr_gamma is None:
        return error.mean()
    ac = scheduler.alphas_cumprod.to(device)[t].float()
    snr = ac / (1 - ac)
    weight = snr.clamp(max=min_snr_gamma) / (snr + 1 if v_pred else snr)
    return (weight * error).mean()


# ---------------------------------------------------------------------------------------
# training


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def warmup_cosine(optimizer, warmup: int, steps: int):
    """The trainers' learning-rate rule: linear warm-up over `warmup` steps, cosine to 0 at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))),
    )


def resume(ckpt_path: Path | None, config, optimizer, schedule, generator, device, check=None
           ) -> tuple[dict | None, list, int]:
    """A run's checkpoint, when there is one: `check(state)` first (a ValueError for another
    trainer's checkpoint), then the optimizer, schedule and generator restored; returns (its
    state, for the trainer's own weights; the losses; the step to start at), or (None, [], 0)."""
    if ckpt_path is None or not ckpt_path.is_file():
        return None, [], 0
    state = torch.load(ckpt_path, map_location=device, weights_only=False)
    if check is not None:
        check(state)
    if state["config"] != dataclasses.asdict(config):
        logger.warning("checkpoint %s was written with another config; resuming anyway", ckpt_path)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    saved, now = state["generator"], generator.get_state()
    if saved.numel() == now.numel():
        generator.set_state(saved.to(now.device))
    else:  # written on another device type (a CPU run resumed on CUDA, or back): reseed by step
        logger.warning("checkpoint %s has another device's random state; reseeding at step %d", ckpt_path, int(state["step"]))
        generator.manual_seed(config.seed + int(state["step"]))
    logger.info("resumed from %s at step %d", ckpt_path, int(state["step"]))
    return state, list(state["losses"]), int(state["step"])


def save_run(ckpt_path: Path | None, config, optimizer, schedule, generator, losses: list, step: int,
             **weights) -> None:
    """Write a resumable checkpoint (nothing without a path): the trainer's `weights` beside
    the config, optimizer, schedule, generator, losses and step `resume` reads back."""
    if ckpt_path is None:
        return
    _save_checkpoint(ckpt_path, {
        "config": dataclasses.asdict(config), **weights, "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "generator": generator.get_state(), "losses": losses, "step": step,
    })


@dataclass
class RunState:
    """A trainer's run as `start_run` sets it up (resumed where a checkpoint was)."""

    optimizer: Any
    schedule: Any
    generator: torch.Generator
    losses: list
    start: int
    checkpoint: Any  # checkpoint(step): write a resumable checkpoint (nothing without a path)


def start_run(config, params, device, *, key: str, weights, load, check=None, **tags) -> RunState:
    """What every trainer here starts with: AdamW on `params` (`config.lr`, and its
    `weight_decay` where it has one), the warm-up-cosine schedule, a generator seeded with
    `config.seed`, all resumed from `config.checkpoint` when it exists (`check(state)` first;
    `load(state[key])` restores the trained weights), and `checkpoint(step)`, which writes
    `weights()` under `key` (and `tags`) beside what `resume` reads back."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=getattr(config, "weight_decay", 0.0))
    schedule = warmup_cosine(optimizer, config.warmup, config.steps)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    ckpt_path = Path(config.checkpoint) if config.checkpoint else None
    state, losses, start = resume(ckpt_path, config, optimizer, schedule, generator, device, check=check)
    if state is not None:
        load(state[key])

    def checkpoint(step: int) -> None:
        save_run(ckpt_path, config, optimizer, schedule, generator, losses, step, **tags,
                 **{key: weights() if ckpt_path else None})

    return RunState(optimizer, schedule, generator, losses, start, checkpoint)


def caption_embeds(tokenizer, text_encoder, captions, empty: torch.Tensor, drop_prob: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Text embeddings of a batch, each caption replaced by the empty one with probability
    `drop_prob` (one draw per caption from `generator`: classifier-free guidance training)."""
    drop = torch.rand(len(captions), generator=generator, device=empty.device) < drop_prob
    embeds = encode_prompts(tokenizer, text_encoder, list(captions))
    return torch.where(drop[:, None, None], empty.expand_as(embeds), embeds)


def optimize(
    bar,
    loss_of,
    *,
    optimizer,
    schedule,
    params,
    grad_clip: float | None,
    losses: list[float],
    start: int,
    save_every: int | None,
    checkpoint,
    stop_at: int | None = None,
    time_limit_s: float | None = None,
) -> int:
    """The optimisation loop every trainer here shares: for each batch of `bar` (a tqdm),
    `loss_of(batch)`, a clipped step, the schedule, the running loss on the bar, `checkpoint(step)`
    every `save_every` steps and at the end; it stops early at `stop_at` or after
    `time_limit_s` (resumably). Returns the last step."""
    step, t_start = start, time.time()
    for batch in bar:
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        schedule.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if save_every and step % save_every == 0:
            checkpoint(step)
        if step == stop_at or (time_limit_s is not None and time.time() - t_start > time_limit_s):
            break
    if step > start:
        checkpoint(step)
    logger.info("trained steps %d..%d in %.1f s", start, step, time.time() - t_start)
    return step


#: The run arguments every trainer takes (`add_run_arguments`), as config fields.
RUN_FIELDS = ("steps", "batch_size", "lr", "warmup", "seed", "save_every", "device")


def add_run_arguments(parser: argparse.ArgumentParser, defaults, *, frames: bool = False) -> None:
    """The arguments every trainer shares, with `defaults` (its config) as defaults: steps,
    batch size (and clip lengths with `frames`), learning rate and warm-up, seed, how often
    to checkpoint, device, time limit and loss log."""
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    if frames:
        parser.add_argument("--frames", type=_parse_frames, default=defaults.frames, help="clip lengths, e.g. 8,16")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--save-every", type=int, default=defaults.save_every)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--time-limit", type=float, default=None, help="stop (resumably) after this many seconds")
    parser.add_argument("--log", default=None, help="write the loss curve (JSON) here")


def run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields of `add_run_arguments`' arguments (with --frames where given)."""
    fields = {name: getattr(args, name) for name in RUN_FIELDS}
    if hasattr(args, "frames"):
        fields["frames"] = args.frames
    return fields


def run_training(parser: argparse.ArgumentParser, train_fn, config, *, time_limit_s: float | None,
                 log: str | None) -> int:
    """A trainer's command: `train_fn(config)`; a ValueError is the parser's one-line error;
    the loss curve (JSON) goes to `log`."""
    try:
        result = train_fn(config, time_limit_s=time_limit_s)
    except ValueError as exc:
        parser.error(str(exc))
    if log:
        Path(log).write_text(json.dumps({"config": dataclasses.asdict(config), "losses": result["losses"]}))
    return 0


def train(
    config: TrainConfig,
    *,
    components: dict[str, Any] | None = None,
    dataset: torch.utils.data.Dataset | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    time_limit_s: float | None = None,
) -> dict:
    """Train (or resume) a motion module of `config.design`; returns {"losses", "motion_unet", "steps"}.

    `components` (unet, vae, text_encoder, tokenizer, scheduler) default to the model
    folder's; `dataset` defaults to `ShapesVideos`. `stop_at` (a step) and
    `time_limit_s` end this run early, with a checkpoint, as an interruption would; a
    later call resumes. The adapter is written to `config.out` (when set) at the end of
    every run, so a time-boxed run still leaves usable weights.
    """
    from tqdm.auto import tqdm

    from zeroshot.trained.animatediff import save_motion_adapter

    device = torch.device(config.device)
    if components is None:
        components = load_components(config.model or EMBEDDED_MODEL, config.device)
    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    tokenizer, scheduler = components["tokenizer"], components["scheduler"]
    if dataset is None:
        size = int(unet.config.sample_size) * (2 ** (len(vae.config.block_out_channels) - 1))
        dataset = ShapesVideos(config.seed, config.batch_size, config.frames, size, config.steps * config.batch_size,
                               world=config.world)

    motion_unet = build_model(unet, config).to(device)
    params = zoo.trainable_parameters(motion_unet)
    for p in params:
        p.requires_grad_(True)
    motion_unet.train()
    empty = encode_prompts(tokenizer, text_encoder, [""])  # 1 n d

    def same_design(state):
        saved = state["config"].get("design", "animatediff")
        if saved != config.design:
            raise ValueError(f"checkpoint {config.checkpoint} trains design {saved!r}, not {config.design!r}")

    run = start_run(config, params, device, key="motion", weights=lambda: zoo.trainable_state(motion_unet),
                    load=lambda saved: zoo.load_trainable_state(motion_unet, saved), check=same_design)
    optimizer, schedule, generator, losses, start = run.optimizer, run.schedule, run.generator, run.losses, run.start
    checkpoint = run.checkpoint

    loader = batches(dataset, start, config.steps, config.batch_size, config.workers)
    bar = tqdm(loader, total=config.steps, initial=start, disable=not progress, desc="motion module")

    def loss_of(batch):
        frames, captions = batch
        embeds = caption_embeds(tokenizer, text_encoder, captions, empty, config.empty_prompt_prob, generator)
        latents = encode_video(vae, frames)
        images = config.joint_images > 0 and float(torch.rand(1, generator=generator, device=device)) < config.joint_images
        with zoo.temporal_off(motion_unet) if images else contextlib.nullcontext():
            return diffusion_loss(motion_unet, scheduler, latents, embeds, generator, min_snr_gamma=config.min_snr_gamma)

    step = optimize(bar, loss_of, optimizer=optimizer, schedule=schedule, params=params, grad_clip=config.grad_clip,
                    losses=losses, start=start, save_every=config.save_every, checkpoint=checkpoint,
                    stop_at=stop_at, time_limit_s=time_limit_s)
    motion_unet.eval().requires_grad_(False)
    if config.out:
        if config.design == "animatediff" and not str(config.out).endswith(".safetensors"):
            save_motion_adapter(motion_unet, config.out)  # a MotionAdapter folder
        else:
            zoo.save(motion_unet, config.out)
    return {"losses": losses, "motion_unet": motion_unet, "steps": step}


def build_model(unet: Any, config: TrainConfig) -> torch.nn.Module:
    """The inflated model a run trains: `config.design` on `unet` (copied), identity at init.

    `num_attention_heads` goes to every design with a `heads` option; `max_seq_length` and
    `transformer_layers` to animatediff; `options` override both."""
    defaults = zoo.OPTIONS.get(config.design, {})
    options = {"heads": config.num_attention_heads} if "heads" in defaults else {}
    if config.design == "animatediff":
        options.update(max_seq_length=config.max_seq_length, transformer_layers=config.transformer_layers)
    else:
        if config.out and Path(config.out).resolve() == DEFAULT_OUT.resolve():
            raise ValueError(f"--out {config.out} is the shipped AnimateDiff module; give design {config.design} its own file")
    if config.joint_images and config.design == "animatediff":
        raise ValueError("--joint-images needs a zoo design (animatediff's motion modules have no off switch here)")
    return zoo.inflate(unet, config.design, seed=config.seed, **{**options, **config.options})


def _parse_frames(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--frames must be positive integers like 8,16, got {text!r}")
    return values


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.train_motion", description=__doc__.split("\n")[0])
    parser.add_argument("--design", default=defaults.design,
                        help=f"temporal design ({', '.join(zoo.DESIGNS)}); 'list' prints them")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=_parse_option,
                        help="a design option (repeatable; JSON values, e.g. heads=4)")
    parser.add_argument("--joint-images", type=float, default=0.0, metavar="P",
                        help="fraction of batches trained as images, temporal layers off (0..1)")
    parser.add_argument("--world", choices=("v1", "v2"), default="v1",
                        help="shapes world of the training clips (v2: patterned backgrounds, pans; held-out captions excluded)")
    parser.add_argument("--model", default=None,
                        help="SD model folder (default: the embedded shapes model of --world)")
    parser.add_argument("--out", default=None,
                        help="module .safetensors file (or adapter folder for animatediff) to write "
                             "(default: weights/shapes_motion.safetensors; shapes_<design>.safetensors for other designs)")
    parser.add_argument("--checkpoint", default=None,
                        help="resumable checkpoint file ('' for none; default under /tmp/zeroshot-motion/)")
    add_run_arguments(parser, defaults, frames=True)
    parser.add_argument("--max-seq-length", type=int, default=defaults.max_seq_length)
    parser.add_argument("--heads", type=int, default=defaults.num_attention_heads, help="motion attention heads")
    parser.add_argument("--transformer-layers", type=int, default=defaults.transformer_layers)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="data loader processes")
    args = parser.parse_args(argv)
    if args.design == "list":
        print("\n".join(zoo.DESIGNS))
        return 0
    try:
        zoo.check_design(args.design, dict(args.option))
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= args.joint_images <= 1:
        parser.error(f"--joint-images must be in [0, 1], got {args.joint_images}")
    if args.design == "animatediff" and max(args.frames) > args.max_seq_length:
        parser.error(f"--frames {max(args.frames)} exceeds --max-seq-length {args.max_seq_length}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, checkpoint = default_paths(args.design, args.world)
    config = TrainConfig(
        model=args.model if args.model or args.world == "v1" else str(EMBEDDED_MODEL_V2),
        out=out if args.out is None else args.out,
        checkpoint=checkpoint if args.checkpoint is None else args.checkpoint,
        **run_fields(args),
        max_seq_length=args.max_seq_length,
        num_attention_heads=args.heads,
        transformer_layers=args.transformer_layers,
        workers=args.workers,
        design=args.design,
        options=dict(args.option),
        joint_images=args.joint_images,
        world=args.world,
    )
    return run_training(parser, train, config, time_limit_s=args.time_limit, log=args.log)

if __name__ == "__main__":
    raise SystemExit(main())
