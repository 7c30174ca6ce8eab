"""The zoo's temporal designs side by side on the shapes world (writes docs/zoo.md's table).

For every design (`zeroshot.trained.zoo.DESIGNS`) on the embedded shapes model:

- trains it with `zeroshot.trained.train_motion` (same clips, steps, batch, seed and LR
  rule for all) for `--train-seconds`, resumable, into `--weights-dir`, or loads the file
  already there (`/work/ckpt/zoo/train_all.sh`-style loops train by steps instead);
- measures trainable parameters, the training step time (forward + backward + AdamW on
  one batch, after a warm-up step) and the sampling time of one video;
- unless `--quick`, renders `--prompts` held-out captions x `--seeds` seeds and measures
  them with `zeroshot.shapes.metrics` (means ± standard errors over videos, as
  `zeroshot.trained.evaluate`), and with `--lora` again on the personalised model with the
  same module (AnimateDiff's transfer claim, without retraining; the LoRA's style score too);
  `--motion-free S` adds rows sampled with GenTron's motion-free guidance;
- a first row measures the training clips themselves (the speed and heading the modules
  learn from);
- keeps every measured row in `--results` (JSON beside the weights) and reuses it while the
  weights file and the evaluation settings are unchanged, so the quality pass (slow, may share
  the CPU: `--no-timings`) and the timing pass (`--quick`, on an idle machine) run apart;
- writes the table between the `zoo:begin`/`zoo:end` markers of docs/zoo.md, marking
  with `*` every mean further than 2 standard errors from AnimateDiff's, and with
  `--sheet` a contact sheet (one row per design).

    OMP_NUM_THREADS=1 python bench/zoo.py --weights-dir W --no-timings --prompts 8 --seeds 2 --lora L
    OMP_NUM_THREADS=1 python bench/zoo.py --weights-dir W --quick        # idle machine: timings
    OMP_NUM_THREADS=1 python bench/zoo.py --quick --designs vdm,lavie

`--world v2`: the designs trained on world v2 (the v2 model; files `shapes_v2_<design>.safetensors`),
measured on held-out patterned v2 captions with the background columns too (`background_metrics`:
the background kept, a still one asked); its table goes between the `zoo-v2:` markers.
    OMP_NUM_THREADS=1 python bench/zoo.py --world v2 --weights-dir W --no-timings --prompts 8 --seeds 2
"""

from __future__ import annotations

import argparse
import json
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zeroshot.trained import zoo  # noqa: E402
from zeroshot.trained.evaluate import BACKGROUND_COLUMNS, COLUMNS, contact_sheet, generated_videos, summarise  # noqa: E402
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
    data = ShapesVideos(config.seed, config.batch_size, config.frames, size, config.batch_size, world=config.world)
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


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def table(rows: dict[str, dict], columns: tuple[str, ...]) -> list[str]:
    head = ("design", "trainable", "step s", "sample s", *columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = rows.get("animatediff", {})
    for name, row in rows.items():
        cells = [name, _cell(row, "params", ","), _cell(row, "step_s", ".2f"), _cell(row, "sample_s", ".1f")]
        for k in columns:
            if k not in row:
                cells.append("–")
                continue
            mark = "*" if name != "animatediff" and row.get("design") and k in ref and beyond_two_se(row, ref, k) else ""
            cells.append(f"{row[k]:.3f} ± {row[k + '_sem']:.3f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_doc(lines: list[str], command: str, marker: str = "zoo") -> None:
    text = DOC.read_text()
    body = "\n".join([f"`{command}`", "", *lines, "", "`*`: beyond 2 standard errors of AnimateDiff's mean."])
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if begin not in text:
        raise SystemExit(f"docs/zoo.md has no {begin} ... {end} markers for this table")
    new = re.sub(f"{re.escape(begin)}.*{re.escape(end)}", lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)
    DOC.write_text(new)


def weights_stamp(path: Path) -> str:
    """Identifies one weights file's contents cheaply (size and modification time)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class Results:
    """Per-row results kept in a JSON file beside the weights, so a run resumes and the quality
    pass (slow, can share the CPU) and the timing pass (needs an idle machine) run apart.

    A cached quality row is reused only when its weights file and evaluation settings match.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def quality(self, label: str, key: dict) -> dict | None:
        row = self.rows.get(label, {})
        return row.get("quality") if row.get("quality_key") == key else None

    def update(self, label: str, **fields) -> dict:
        self.rows.setdefault(label, {}).update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rows, indent=1))
        tmp.replace(self.path)
        return self.rows[label]


def measure_quality(model, variant, prompts: list[str], recipe, seeds: int, style: str | None,
                    background: bool = False) -> tuple[dict, np.ndarray]:
    """Shapes-world metrics of `recipe` on `prompts` x `seeds` (and `lora_*` on the personalised
    `variant`, with the LoRA's style score; the background's with `background`), and the
    first video for the contact sheet."""
    videos = generated_videos(model, prompts, recipe, seeds)
    row = summarise(videos, background=background)
    if variant is not None:
        lora = summarise(generated_videos(variant, prompts, recipe, seeds), style)
        row.update({f"lora_{k}": v for k, v in lora.items()})
    return row, videos[0][1]


def main(argv: list[str] | None = None) -> int:
    from zeroshot.models import load
    from zeroshot.recipe import METHODS, AnimateDiff
    from zeroshot.shapes.world import distinct_captions
    from zeroshot.trained.evaluate import world_videos
    from zeroshot.trained.train_motion import EMBEDDED_MODEL, EMBEDDED_MODEL_V2

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--designs", default="all", help="comma-separated designs (default: all)")
    parser.add_argument("--weights-dir", default=str(ROOT / "out" / "zoo"))
    parser.add_argument("--results", default=None, help="JSON of measured rows, reused when settings match (default: WEIGHTS_DIR/zoo_results.json)")
    parser.add_argument("--train-seconds", type=float, default=0.0, help="train each design this long (resumable)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="the schedule's length (LR rule)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--lora", default=None, help="also sample the personalised model with each module")
    parser.add_argument("--motion-free", type=float, default=None, metavar="S",
                        help="also rows with GenTron's motion-free guidance at scale S (animatediff.motion_free_scale)")
    parser.add_argument("--motion-free-designs", default="animatediff", help="designs that get a motion-free row")
    parser.add_argument("--quick", action="store_true", help="parameters and timings only (cached quality rows still shown)")
    parser.add_argument("--no-timings", action="store_true", help="quality only; keep the cached timings (CPU shared)")
    parser.add_argument("--sheet", default=None, help="contact sheet PNG (one row per design)")
    parser.add_argument("--no-doc", action="store_true", help="print the table, leave docs/zoo.md alone")
    parser.add_argument("--world", choices=("v1", "v2"), default="v1",
                        help="v2: designs trained on world v2, held-out patterned captions, background columns")
    args = parser.parse_args(argv)
    v2 = args.world == "v2"
    if v2 and args.lora:
        parser.error("--lora: the shipped personalised LoRA fits the v1 model; leave it out with --world v2")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    designs = zoo.DESIGNS if args.designs == "all" else tuple(args.designs.split(","))
    for d in designs:
        zoo.check_design(d)
    free_designs = set(args.motion_free_designs.split(",")) if args.motion_free is not None else set()

    weights = Path(args.weights_dir)
    results = Results(Path(args.results) if args.results else weights / "zoo_results.json")
    components = load_components(EMBEDDED_MODEL_V2 if v2 else EMBEDDED_MODEL, "cpu")
    model = load("shapes-v2" if v2 else "shapes")  # the model the designs are trained on (train_motion's default)
    if v2:  # world v2's held-out patterned captions (as bench/drag_check.py)
        from drag_check import captions

        prompts = captions(args.prompts)
    else:
        prompts = distinct_captions(args.prompts, 12345)
    base = {"num_frames": args.frames}
    variant = style = None
    if args.lora:
        from zeroshot.trained.lora import load_lora, personalised_model

        variant = personalised_model(model, args.lora)
        style = load_lora(args.lora)[1].get("style")
    key = {"prompts": prompts, "seeds": args.seeds, "frames": args.frames, "lora": Path(args.lora).name if args.lora else None,
           **({"world": "v2"} if v2 else {})}
    rows: dict[str, dict] = {}
    sheet = []
    if not args.quick:  # the training clips themselves: the speed and heading the modules learn from
        world = world_videos(prompts, args.frames, args.seeds, size=int(model.defaults.get("height", 64)))
        rows["world clips (training data)"] = summarise(world, background=v2)
        sheet.append(("world clips (training data)", world[0][1]))
    for design in designs:
        path = weights / f"shapes_{'v2_' if v2 else ''}{design}.safetensors"
        config = TrainConfig(design=design, out=str(path), checkpoint=str(weights / f"{design}.pt"), steps=args.steps,
                             world=args.world)
        if args.train_seconds > 0:
            train(config, components=components, time_limit_s=args.train_seconds)
        timed = replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=str(path)), **base)
        labels = [(design, timed)]
        if design in free_designs:
            free = replace(timed, animatediff=replace(timed.animatediff, motion_free_scale=args.motion_free))
            labels.append((f"{design} + motion-free {args.motion_free:g}", free))
        params = sum(p.numel() for p in zoo.trainable_parameters(build_model(components["unet"], config)))
        for label, recipe in labels:
            row = results.update(label, design=design, params=params)
            if not args.no_timings:
                timing = recipe
                if not path.is_file():  # the sampling time does not depend on the weights: time an untrained module
                    untrained = zoo.save(build_model(components["unet"], replace(config, out="")), weights / f"untrained_{design}.safetensors")
                    timing = replace(recipe, animatediff=replace(recipe.animatediff, adapter=str(untrained)))
                row = results.update(label, step_s=step_time(design, components, config) if label == design else None,
                                     sample_s=sampling_time(model, timing, prompts[0]))
            quality = None
            if path.is_file():
                wanted = {**key, "weights": weights_stamp(path)}
                quality = results.quality(label, wanted)
                video_file = weights / f"sheet_{label.replace(' ', '_')}.npy"
                if not args.quick and (quality is None or not video_file.is_file()):
                    quality, first = measure_quality(model, variant, prompts, recipe, args.seeds, style, background=v2)
                    np.save(video_file, first)
                    results.update(label, quality=quality, quality_key=wanted)
                if quality is not None and video_file.is_file():
                    sheet.append((f"{label}: {prompts[0]}", np.load(video_file)))
            rows[label] = {**{k: v for k, v in row.items() if k not in ("quality", "quality_key")}, **(quality or {})}
            logger.info("%s: %s", label, {k: round(v, 4) for k, v in rows[label].items() if isinstance(v, (int, float))})
    columns = COLUMNS + (BACKGROUND_COLUMNS if v2 else ())
    if args.lora:
        columns += tuple(f"lora_{k}" for k in ("consistency", "alignment")) + ((f"lora_{style}",) if style else ())
    columns = tuple(c for c in columns if any(c in r for r in rows.values()))
    lines = table(rows, columns)
    print("\n".join(lines))
    if not args.no_doc:
        write_doc(lines, "python bench/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  marker="zoo-v2" if v2 else "zoo")
    if args.sheet and sheet:
        contact_sheet(sheet, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
