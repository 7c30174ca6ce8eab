"""Train a flow adapter (`zeroshot.trained.flow_adapter`) for AnimateDiff on the shapes world.

    python -m zeroshot.trained.train_flow --time-limit 1140           # CPU
    python -m zeroshot.trained.train_flow --steps 5000 --batch-size 16 --device cuda
    python -m zeroshot.trained.train_flow --world v2 --model zeroshot/shapes/model_v2 --motion-module MM

The image model (default: the embedded shapes model) and its motion module (default: the
shipped one, `trained/weights/shapes_motion.safetensors`) stay frozen; only the adapter
learns. Its zero convolutions start at zero, so step 0 is exactly today's AnimateDiff. Clips
come from the shapes world with their exact flow: world v1 (`sample_video`: translate,
bounce, zoom on plain backgrounds) or v2 (`sample_video_v2`: also curves, patterned
backgrounds that stay or pan). The adapter sees the backward flow of every frame to frame 0
(`backward_flow`: object pixels follow the object's translation and scale, the others the
background's pan), area-averaged onto the latent cells, as generation sees a motion
request's field. Loss, timesteps, Min-SNR weighting and 10% empty captions are
`train_motion`'s.

Runs are seeded and resumable as `train_motion`'s: a checkpoint (adapter, optimiser, step,
losses) is written atomically every `--save-every` steps to `--checkpoint` (outside the
repository) and picked up on the next start; sample `i` is a pure function of (seed, i).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeroshot.trained import flow_adapter as fa
from zeroshot.trained.train_motion import (
    EMBEDDED_MODEL,
    ShapesVideos,
    batches,
    caption_embeds,
    diffusion_loss,
    encode_prompts,
    encode_video,
    load_components,
    optimize,
    add_run_arguments,
    run_fields,
    run_training,
    start_run,
)

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parent / "weights" / "shapes_flow.safetensors"
DEFAULT_CHECKPOINT = "/tmp/zeroshot-flow/checkpoint.pt"
WORLDS = ("v1", "v2")


@dataclass(frozen=True)
class FlowTrainConfig:
    """Everything that defines a flow-adapter training run."""

    model: str | None = None  # SD folder; None: the embedded shapes model
    motion_module: str | None = None  # motion module file/folder; None: the shipped one
    out: str = str(DEFAULT_OUT)
    checkpoint: str = DEFAULT_CHECKPOINT
    world: str = "v1"
    steps: int = 2000
    batch_size: int = 4
    frames: tuple[int, ...] = (8,)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 30
    grad_clip: float = 1.0
    seed: int = 0
    hidden: int = 32
    injection: str = "residuals"  # fa.INJECTIONS: skip residuals (ControlNet-style) or temporal attention (OnlyFlow)
    empty_prompt_prob: float = 0.1
    min_snr_gamma: float | None = 5.0
    save_every: int = 50
    device: str = "cpu"
    workers: int = 0  # data loader processes
    estimated_flow: float = 0.0  # share of clips trained on their DIS-estimated flow instead of the exact one


# ---------------------------------------------------------------------------------------
# data


def backward_flow(video: Any) -> np.ndarray:
    """Exact backward flow `(f, 2, H, W)` px of a rendered world clip (`world.Video`): where
    each pixel of frame k was in frame 0. Object pixels (frame k's mask) follow the object's
    translation and scale about its centre; the others the background's pan (zero when it
    stays)."""
    scenes = video.scenes
    size = scenes[0].size
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    first = scenes[0]
    vx, vy = video.background.velocity
    out = np.zeros((len(scenes), 2, size, size), np.float32)
    for k, scene in enumerate(scenes):
        ratio = first.radius / scene.radius
        obj_x = first.center[0] + ratio * (xs - scene.center[0]) - xs
        obj_y = first.center[1] + ratio * (ys - scene.center[1]) - ys
        mask = video.masks[k]
        out[k, 0] = np.where(mask, obj_x, -k * vx)
        out[k, 1] = np.where(mask, obj_y, -k * vy)
    return out


def to_latent_grid(flow_px: np.ndarray, factor: int) -> np.ndarray:
    """`(f, 2, H, W)` flow area-averaged onto `(f, 2, H/factor, W/factor)` cells (px kept)."""
    f, c, height, width = flow_px.shape
    return flow_px.reshape(f, c, height // factor, factor, width // factor, factor).mean(axis=(3, 5))


class ShapesFlowVideos(ShapesVideos):
    """Item `i`: `ShapesVideos`' clip `i` with its flow.

    Returns (frames (f, 3, H, W) float [0, 1], caption, flow features (f, 4, h, w)); the clip
    length is `frames[(i // batch_size) % len(frames)]`, so a batch has one length.
    `estimated`: the share of clips whose flow is estimated from their frames (OpenCV DIS,
    `motion.VideoFlow`, as `--motion-from` reads a reference video) instead of the world's
    exact flow, so that the adapter also follows the flows users bring.
    """

    def __init__(self, seed: int, batch_size: int, frames: tuple[int, ...], size: int, length: int, *,
                 factor: int, world: str = "v1", estimated: float = 0.0):
        super().__init__(seed, batch_size, frames, size, length, world)
        if not 0.0 <= estimated <= 1.0:
            raise ValueError(f"estimated flow share must be in [0, 1], got {estimated}")
        self.factor, self.estimated = factor, estimated

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, torch.Tensor]:
        video, rng = self.clip(index)
        if self.estimated and rng.random() < self.estimated:
            from zeroshot.motion import VideoFlow

            grid = (self.size // self.factor, self.size // self.factor)
            flow = VideoFlow.from_frames(video.frames).flow(len(video.frames), self.size, self.size, grid)
        else:
            flow = torch.from_numpy(to_latent_grid(backward_flow(video), self.factor))
        return torch.from_numpy(video.frames), video.caption, fa.flow_features(flow, self.size, self.size)


def _collate(items):
    return torch.stack([f for f, _, _ in items]), [c for _, c, _ in items], torch.stack([x for _, _, x in items])


# ---------------------------------------------------------------------------------------
# training


def motion_unet_for(unet: Any, motion_module: str | None) -> Any:
    """The frozen video UNet the adapter trains on: `unet` with the motion module (default:
    the shipped one)."""
    from zeroshot.trained import zoo
    from zeroshot.trained.animatediff import EMBEDDED_ADAPTER

    path = motion_module or EMBEDDED_ADAPTER
    model = zoo.load(path, unet)
    return model.eval().requires_grad_(False)


def train(
    config: FlowTrainConfig,
    *,
    components: dict[str, Any] | None = None,
    motion_unet: Any = None,
    progress: bool = True,
    stop_at: int | None = None,
    time_limit_s: float | None = None,
) -> dict:
    """Train (or resume) a flow adapter; returns {"losses", "adapter", "steps"}.

    `components` (unet, vae, text_encoder, tokenizer, scheduler) default to the model
    folder's, `motion_unet` to the unet with `config.motion_module`. `stop_at` and
    `time_limit_s` end the run early with a checkpoint; a later call resumes. The adapter is
    written to `config.out` (when set) at the end of every run.
    """
    from tqdm.auto import tqdm

    from zeroshot.trained.zoo import base_identity

    device = torch.device(config.device)
    if components is None:
        components = load_components(config.model or EMBEDDED_MODEL, config.device)
    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    tokenizer, scheduler = components["tokenizer"], components["scheduler"]
    if motion_unet is None:
        motion_unet = motion_unet_for(unet, config.motion_module)
    motion_unet = motion_unet.to(device)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = int(unet.config.sample_size) * factor
    dataset = ShapesFlowVideos(config.seed, config.batch_size, config.frames, size, config.steps * config.batch_size,
                               factor=factor, world=config.world, estimated=config.estimated_flow)

    adapter = fa.new_flow_adapter(unet, hidden=config.hidden, seed=config.seed, injection=config.injection,
                                  motion_unet=motion_unet).to(device)
    adapter.train().requires_grad_(True)
    model = fa.FlowConditioned(motion_unet, adapter)
    params = list(adapter.parameters())
    empty = encode_prompts(tokenizer, text_encoder, [""])  # 1 n d

    def flow_checkpoint(state):
        if state.get("kind") != "flow_adapter":
            raise ValueError(f"checkpoint {config.checkpoint} is not a flow-adapter checkpoint")

    run = start_run(config, params, device, key="adapter", check=flow_checkpoint, kind="flow_adapter",
                    weights=lambda: {k: v.detach().clone() for k, v in adapter.state_dict().items()},
                    load=adapter.load_state_dict)
    optimizer, schedule, generator, losses, start = run.optimizer, run.schedule, run.generator, run.losses, run.start
    checkpoint = run.checkpoint

    loader = batches(dataset, start, config.steps, config.batch_size, config.workers, collate=_collate)
    bar = tqdm(loader, total=config.steps, initial=start, disable=not progress, desc="flow adapter")

    def loss_of(batch):
        frames, captions, flow = batch
        embeds = caption_embeds(tokenizer, text_encoder, captions, empty, config.empty_prompt_prob, generator)
        latents = encode_video(vae, frames)
        model.flow = flow.to(device=device, dtype=latents.dtype)
        return diffusion_loss(model, scheduler, latents, embeds, generator, min_snr_gamma=config.min_snr_gamma)

    step = optimize(bar, loss_of, optimizer=optimizer, schedule=schedule, params=params, grad_clip=config.grad_clip,
                    losses=losses, start=start, save_every=config.save_every, checkpoint=checkpoint,
                    stop_at=stop_at, time_limit_s=time_limit_s)
    adapter.eval().requires_grad_(False)
    if config.out:
        notes = {"motion_module": Path(config.motion_module).name if config.motion_module else "shapes_motion.safetensors",
                 "world": config.world, "steps": step, "estimated_flow": config.estimated_flow}
        fa.save(adapter, config.out, base=base_identity(unet), notes=notes)
    return {"losses": losses, "adapter": adapter, "steps": step}


def main(argv: list[str] | None = None) -> int:
    defaults = FlowTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.train_flow", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="SD model folder (default: the embedded shapes model)")
    parser.add_argument("--motion-module", default=None,
                        help="motion module file or folder the adapter conditions (default: the shipped one)")
    parser.add_argument("--world", default=defaults.world, choices=WORLDS, help="shapes world of the clips")
    parser.add_argument("--out", default=None, help=f"adapter .safetensors file to write (default: {DEFAULT_OUT})")
    parser.add_argument("--checkpoint", default=None, help=f"resumable checkpoint file ('' for none; default {DEFAULT_CHECKPOINT})")
    add_run_arguments(parser, defaults, frames=True)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="data loader processes")
    parser.add_argument("--estimated-flow", type=float, default=defaults.estimated_flow, metavar="P",
                        help="share of clips trained on their DIS-estimated flow (what --motion-from reads) "
                             "instead of the exact one, 0..1")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="flow encoder channels")
    parser.add_argument("--injection", choices=fa.INJECTIONS, default=defaults.injection,
                        help="residuals: ControlNet-style skip residuals; attention: OnlyFlow, into every temporal attention")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.hidden < 1:
        parser.error("--steps, --batch-size and --hidden must be >= 1")
    if not 0.0 <= args.estimated_flow <= 1.0:
        parser.error(f"--estimated-flow must be in [0, 1], got {args.estimated_flow}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = FlowTrainConfig(
        model=args.model,
        motion_module=args.motion_module,
        out=str(DEFAULT_OUT) if args.out is None else args.out,
        checkpoint=DEFAULT_CHECKPOINT if args.checkpoint is None else args.checkpoint,
        world=args.world,
        **run_fields(args),
        hidden=args.hidden,
        injection=args.injection,
        workers=args.workers,
        estimated_flow=args.estimated_flow,
    )
    return run_training(parser, train, config, time_limit_s=args.time_limit, log=args.log)

if __name__ == "__main__":
    raise SystemExit(main())
