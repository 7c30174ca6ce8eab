"""The zoo's temporal designs side by side on the shapes world (writes docs/zoo.md's table).

For every design (`zeroshot.trained.zoo.DESIGNS`) on the embedded shapes model:

- trains it with `zeroshot.trained.train_motion` (same clips, steps, batch, seed and LR
  rule for all) for `--train-seconds`, resumable, into `--weights-dir`, or loads the file
  already there;
- measures trainable parameters, the training step time (forward + backward + AdamW on
  one batch, after a warm-up step) and the sampling time of one video;
- unless `--quick`, renders `--prompts` held-out captions x `--seeds` seeds and measures
  them with `zeroshot.shapes.metrics` (means ± standard errors over videos, as
  `zeroshot.trained.evaluate`), and with `--lora` again on the personalised model with the
  same module (AnimateDiff's transfer claim, without retraining);
- writes the table between the `zoo:begin`/`zoo:end` markers of docs/zoo.md, marking
  with `*` every mean further than 2 standard errors from AnimateDiff's, and with
  `--sheet` a contact sheet (one row per design).

    OMP_NUM_THREADS=1 python bench/zoo.py --train-seconds 1800 --prompts 8 --seeds 2
    OMP_NUM_THREADS=1 python bench/zoo.py --quick --designs vdm,lavie
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from zeroshot.trained import zoo  # noqa: E402
from zeroshot.trained.evaluate import COLUMNS, contact_sheet, generated_videos, summarise  # noqa: E402
from zeroshot.trained.train_motion import (  # noqa: E402
    ShapesVideos,
    TrainConfig,
    _collate,
    build_model,
    diffusion_loss,
    encode_prompts,
    encode_video,
    load_components,
    train,
)

logger = logging.getLogger("bench.zoo")
DOC = ROOT / "docs" / "zoo.md"


def step_time(design: str, components: dict, config: TrainConfig, repeats: int = 3) -> float:
    """Seconds per training step of `design` on one batch of the training stream."""
    model = build_model(components["unet"], replace(config, design=design, out=""))
    params = zoo.trainable_parameters(model)
    for p in params:
        p.requires_grad_(True)
    model.train()
    size = int(components["unet"].config.sample_size) * 2 ** (len(components["vae"].config.block_out_channels) - 1)
    data = ShapesVideos(config.seed, config.batch_size, config.frames, size, config.batch_size)
    frames, captions = _collate([data[i] for i in range(config.batch_size)])
    latents = encode_video(components["vae"], frames)
    embeds = encode_prompts(components["tokenizer"], components["text_encoder"], list(captions))
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = diffusion_loss(model, components["scheduler"], latents, embeds, torch.Generator().manual_seed(i))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / repeats


def sampling_time(model, recipe, prompt: str) -> float:
    from zeroshot.generate import generate

    generate(model, prompt, recipe, seed=0, progress=False)  # warm-up (loads and inflates once)
    start = time.perf_counter()
    generate(model, prompt, recipe, seed=0, progress=False)
    return time.perf_counter() - start


def beyond_two_se(row: dict, ref: dict, key: str) -> bool:
    se = math.hypot(row.get(f"{key}_sem", math.nan), ref.get(f"{key}_sem", math.nan))
    return se > 0 and abs(row[key] - ref[key]) > 2 * se


def table(rows: dict[str, dict], columns: tuple[str, ...]) -> list[str]:
    head = ("design", "trainable", "step s", "sample s", *columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = rows.get("animatediff", {})
    for name, row in rows.items():
        cells = [name, f"{row['params']:,}", f"{row['step_s']:.2f}", f"{row.get('sample_s', math.nan):.1f}"]
        for k in columns:
            if k not in row:
                cells.append("–")
                continue
            mark = "*" if name != "animatediff" and k in ref and beyond_two_se(row, ref, k) else ""
            cells.append(f"{row[k]:.3f} ± {row[k + '_sem']:.3f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_doc(lines: list[str], command: str) -> None:
    text = DOC.read_text()
    body = "\n".join([f"`{command}`", "", *lines, "", "`*`: beyond 2 standard errors of AnimateDiff's mean."])
    new = re.sub(r"<!-- zoo:begin -->.*<!-- zoo:end -->", f"<!-- zoo:begin -->\n{body}\n<!-- zoo:end -->",
                 text, flags=re.S)
    DOC.write_text(new)


def main(argv: list[str] | None = None) -> int:
    from zeroshot.models import load
    from zeroshot.recipe import METHODS, AnimateDiff
    from zeroshot.shapes.world import distinct_captions
    from zeroshot.trained.train_motion import EMBEDDED_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--designs", default="all", help="comma-separated designs (default: all)")
    parser.add_argument("--weights-dir", default=str(ROOT / "out" / "zoo"))
    parser.add_argument("--train-seconds", type=float, default=0.0, help="train each design this long (resumable)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="the schedule's length (LR rule)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--lora", default=None, help="also sample the personalised model with each module")
    parser.add_argument("--quick", action="store_true", help="parameters and timings only (no quality)")
    parser.add_argument("--sheet", default=None, help="contact sheet PNG (one row per design)")
    parser.add_argument("--no-doc", action="store_true", help="print the table, leave docs/zoo.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    designs = zoo.DESIGNS if args.designs == "all" else tuple(args.designs.split(","))
    for d in designs:
        zoo.check_design(d)

    weights = Path(args.weights_dir)
    components = load_components(EMBEDDED_MODEL, "cpu")
    model = load("shapes")  # the v1 model the designs are trained on (train_motion.EMBEDDED_MODEL)
    prompts = distinct_captions(args.prompts, 12345)  # captions the training stream does not draw
    base = {"num_frames": args.frames}
    variant = None
    if args.lora:
        from zeroshot.trained.lora import personalised_model

        variant = personalised_model(model, args.lora)
    rows: dict[str, dict] = {}
    sheet = []
    for design in designs:
        path = weights / f"shapes_{design}.safetensors"
        config = TrainConfig(design=design, out=str(path), checkpoint=str(weights / f"{design}.pt"), steps=args.steps)
        if args.train_seconds > 0:
            train(config, components=components, time_limit_s=args.train_seconds)
        row = {"params": sum(p.numel() for p in zoo.trainable_parameters(build_model(components["unet"], config)))}
        row["step_s"] = step_time(design, components, config)
        timing = path
        if not path.is_file():  # the sampling time does not depend on the weights: time an untrained module
            timing = zoo.save(build_model(components["unet"], replace(config, out="")), weights / f"untrained_{design}.safetensors")
        timed = replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=str(timing)), **base)
        row["sample_s"] = sampling_time(model, timed, prompts[0])
        if path.is_file():
            recipe = replace(timed, animatediff=AnimateDiff(adapter=str(path)))
            if not args.quick:
                videos = generated_videos(model, prompts, recipe, args.seeds)
                row.update(summarise(videos))
                sheet.append((f"{design}: {videos[0][0]}", videos[0][1]))
                if variant is not None:
                    lora = summarise(generated_videos(variant, prompts, recipe, args.seeds))
                    row.update({f"lora_{k}": v for k, v in lora.items()})
        rows[design] = row
        logger.info("%s: %s", design, {k: round(v, 4) for k, v in row.items()})
    columns = () if args.quick else COLUMNS + (tuple(f"lora_{k}" for k in ("consistency", "alignment")) if args.lora else ())
    lines = table(rows, columns)
    print("\n".join(lines))
    if not args.no_doc:
        write_doc(lines, "python bench/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.sheet and sheet:
        contact_sheet(sheet, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
