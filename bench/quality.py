"""Quality table of every method and ablation on the embedded shapes model.

Renders N prompts x K seeds of the shapes world with every method registered in
`zeroshot.recipe.METHODS` at run time plus ablations built as recipes, measures each
video with `zeroshot.metrics` and `zeroshot.shapes.metrics`, and writes

- docs/results.md: the table (between the `quality:begin`/`quality:end` markers, so
  hand-written notes around it survive a re-run), with the command and settings;
- docs/results_chart.png: bars of the main metrics per variant (drawn with cv2);
- docs/results_compare.png: one prompt and seed, one row per variant;
- docs/results_sheet_<variant>.png: a contact sheet (frames of a few videos) per variant.

Every variant is scored against the motion the t2v-zero recipe requests on this model
(`motion_err`, `along_px`), so variants without the motion field show what "no motion"
measures. Run single-threaded:

    OMP_NUM_THREADS=1 python bench/quality.py --prompts 6 --seeds 2 --frames 8

`--world v2` measures the v2 model (`shapes-v2`) on patterned-background captions and adds
the background's own columns (`zeroshot.shapes.metrics.background_metrics`: the pattern
kept across frames after compensating the camera motion the variant asks for, and how far
the background moves), into docs/results_v2.md and `results_v2_*.png`:

    OMP_NUM_THREADS=1 python bench/quality.py --world v2 --prompts 12 --seeds 2 --frames 8
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zeroshot.metrics import mean_and_sem  # noqa: E402
from zeroshot.shapes.world import distinct_captions  # noqa: E402
from zeroshot.recipe import (  # noqa: E402
    METHODS,
    CrossFrame,
    FreeInit,
    Motion,
    Noise,
    Recipe,
    RecipeError,
    Smoothing,
    apply_override,
    parse_override,
)

log = logging.getLogger("bench.quality")

BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"

# (key, header, format, higher is better?) of the table, in order.
COLUMNS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("alignment", "align", "{:.2f}", True),
    ("consistency", "consist", "{:.2f}", True),
    ("size_change", "size_chg", "{:.3f}", False),
    ("detected_fraction", "detected", "{:.2f}", True),
    ("speed_px", "speed_px", "{:.2f}", None),
    ("along_px", "along_px", "{:.2f}", None),
    ("motion_error", "motion_err", "{:.2f}", False),
    ("background_change", "bg_change", "{:.4f}", False),
    ("warp_error", "warp_err", "{:.4f}", False),
    ("flow_magnitude", "flow_px", "{:.2f}", None),
    ("flicker", "flicker", "{:.4f}", False),
    ("ssim", "ssim", "{:.3f}", True),
    ("seconds", "s/video", "{:.1f}", None),
)
#: World v2 adds the background's columns (NaN on plain backgrounds).
COLUMNS_V2: tuple[tuple[str, str, str, bool | None], ...] = (
    ("pattern_accuracy", "pattern", "{:.2f}", True),
    ("background_correlation", "bg_corr", "{:.2f}", True),
    ("background_identity", "bg_ident", "{:.2f}", True),
    ("background_speed_px", "bg_px", "{:.2f}", None),
    ("background_motion_error", "bg_err", "{:.2f}", False),
)
CHART_V2 = ("alignment", "size_change", "along_px", "motion_error", "background_correlation", "background_identity",
            "background_motion_error", "flicker")
CHART = ("alignment", "consistency", "size_change", "along_px", "motion_error", "background_change", "warp_error", "flicker")


def variants(num_frames: int, names: list[str] | None = None) -> dict[str, Recipe]:
    """Every registered method plus its ablations (README "Methods"), as recipes."""
    from zeroshot.noise import PRIORS

    # the methods that take inputs of their own (a control or input video: bench/control.py) or
    # a video model (`video`) are not text-to-video on an image model
    takes_inputs = {name for name, r in METHODS.items() if r.controlnet or r.edit or r.pix2pix or name == "video"}
    out: dict[str, Recipe] = {name: recipe for name, recipe in METHODS.items() if name not in takes_inputs}
    ablations: dict[str, Recipe] = {}
    t2v = METHODS["t2v-zero"]
    ablations["t2v-zero -cross_frame"] = replace(t2v, cross_frame=None)
    ablations["t2v-zero -motion"] = replace(t2v, motion=None)
    # the paper's "without motion dynamics": every frame starts from frame 0's x_T' unwarped
    ablations["t2v-zero translate=0"] = replace(t2v, motion=Motion(translate=(0.0, 0.0)))
    for prior in PRIORS:
        if prior == "iid":
            continue
        noise = Noise(prior=prior)
        if prior == "freenoise":  # a window shorter than the clip, or it is i.i.d. noise
            window = max(2, num_frames // 2)
            noise = Noise(prior=prior, window=window, stride=max(1, window // 2))
        # flow-warped noise follows a motion request: the model's default one, without T2V-Zero's warp
        motion = Motion(dynamics=False) if prior == "flow-warped" else None
        ablations[f"noise={prior}"] = Recipe(method="t2i", noise=noise, motion=motion)
        ablations[f"noise={prior} +cross_frame"] = Recipe(method="t2i", noise=noise, cross_frame=CrossFrame(), motion=motion)
    ablations["t2v-zero +freeinit"] = replace(t2v, freeinit=FreeInit())
    ablations["t2v-zero +smoothing"] = replace(t2v, smoothing=Smoothing())
    # an ablation equal to a registered method (up to its name) is that method's row
    registered = {replace(recipe, method="") for recipe in out.values()}
    out.update({n: r for n, r in ablations.items() if replace(r, method="") not in registered})
    out = {name: replace(recipe, num_frames=num_frames) for name, recipe in out.items()}
    if names:
        unknown = [n for n in names if n not in out]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; valid: {', '.join(out)}")
        out = {n: out[n] for n in names}
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------
# drawing (no matplotlib: numpy + cv2)


def _text(image: np.ndarray, text: str, xy: tuple[int, int], *, scale: float = 0.35, color=(20, 20, 20)) -> None:
    import cv2

    cv2.putText(image, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _to_uint8_rows(frames) -> np.ndarray:
    """(f, 3, H, W) float [0, 1] -> one (H, f*W, 3) uint8 strip."""
    video = np.asarray(frames, dtype=np.float32)
    strip = np.concatenate(list(video.transpose(0, 2, 3, 1)), axis=1)
    return (np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(rows: list[tuple[str, np.ndarray]], path: Path, *, min_width: int = 384) -> None:
    """PNG grid: each row a labelled strip of a video's frames, enlarged (nearest) to
    at least `min_width` px by an integer factor."""
    import cv2

    label_h = 14
    strips = []
    for label, frames in rows:
        strip = _to_uint8_rows(frames)
        scale = max(1, math.ceil(min_width / strip.shape[1]))
        if scale > 1:
            strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        band = np.full((label_h, strip.shape[1], 3), 255, np.uint8)
        _text(band, label, (3, label_h - 4))
        strips.append(np.concatenate([band, strip]))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    sheet = np.concatenate(strips)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def bar_chart(summary: dict[str, dict[str, float]], keys: tuple[str, ...], path: Path, columns=COLUMNS) -> None:
    """PNG of horizontal bars, one panel per metric, one bar per variant."""
    import cv2

    names = list(summary)
    headers = {key: (header, fmt, better) for key, header, fmt, better in columns}
    label_w, bar_w, value_w, row_h = 170, 180, 56, 13
    panel_w = label_w + bar_w + value_w
    panel_h = 20 + row_h * len(names) + 6
    cols = 2
    rows = math.ceil(len(keys) / cols)
    canvas = np.full((rows * panel_h, cols * panel_w, 3), 255, np.uint8)
    for index, key in enumerate(keys):
        x0, y0 = (index % cols) * panel_w, (index // cols) * panel_h
        header, fmt, better = headers[key]
        hint = {True: "higher is better", False: "lower is better", None: ""}[better]
        _text(canvas, f"{header}  {hint}", (x0 + 4, y0 + 13), scale=0.4)
        values = [summary[n].get(key, float("nan")) for n in names]
        finite = [abs(v) for v in values if np.isfinite(v)]
        top = max(finite) if finite and max(finite) > 0 else 1.0
        has_negative = any(np.isfinite(v) and v < 0 for v in values)
        zero_x = x0 + label_w + (bar_w // 2 if has_negative else 0)
        span = bar_w // 2 if has_negative else bar_w - 4
        for row, (name, value) in enumerate(zip(names, values)):
            y = y0 + 20 + row * row_h
            _text(canvas, name[:30], (x0 + 4, y + 10), scale=0.32)
            if np.isfinite(value):
                length = int(round(span * abs(value) / top))
                left, right = (zero_x - length, zero_x) if value < 0 else (zero_x, zero_x + length)
                color = (70, 110, 200) if "t2v-zero" == name else (150, 150, 150)
                cv2.rectangle(canvas, (left, y + 2), (max(right, left + 1), y + row_h - 2), color, -1)
                _text(canvas, fmt.format(value), (x0 + label_w + bar_w + 2, y + 10), scale=0.32)
            else:
                _text(canvas, "-", (x0 + label_w + bar_w + 2, y + 10), scale=0.32)
        cv2.line(canvas, (zero_x, y0 + 18), (zero_x, y0 + panel_h - 4), (0, 0, 0), 1)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


# ---------------------------------------------------------------------------------------
# running


def camera_step(recipe: Recipe, height: int, width: int) -> tuple[float, float]:
    """The background displacement (px/frame) a resolved recipe asks for
    (`shapes.metrics.requested_camera`: T2V-Zero's global translation, else none)."""
    from zeroshot.shapes.metrics import requested_camera

    return requested_camera(recipe.motion, recipe.num_frames, height, width)


def evaluate_variant(model, recipe: Recipe, prompts: list[str], seeds: list[int], reference_motion, *, world: str = "v1"):
    """Rows of metrics (one per prompt x seed) and the videos, for one recipe. World v2 adds
    the background's metrics, against the camera motion the variant's own recipe asks for."""
    from zeroshot.generate import generate
    from zeroshot.metrics import video_metrics
    from zeroshot.shapes.metrics import background_metrics, shapes_metrics

    rows, videos = [], []
    for prompt in prompts:
        for seed in seeds:
            start = time.perf_counter()
            result = generate(model, prompt, recipe, seed=seed, progress=False)
            seconds = time.perf_counter() - start
            frames = result.frames[0].numpy()  # (f, 3, H, W)
            row = {"prompt": prompt, "seed": seed, "seconds": seconds}
            row.update(video_metrics(frames))
            row.update(shapes_metrics(frames, prompt, motion=reference_motion))
            if world == "v2":
                row.update(background_metrics(frames, prompt, camera_step(result.recipe, *frames.shape[-2:])))
            rows.append(row)
            videos.append((f"{prompt}  seed {seed}", frames, result.recipe))
    return rows, videos


def summarise(rows: list[dict], columns=COLUMNS) -> dict[str, float]:
    """Mean of every numeric metric over rows (NaN-aware), plus the standard errors."""
    out: dict[str, float] = {"videos": float(len(rows))}
    for key, *_ in columns:
        out[key], out[f"{key}_sem"] = mean_and_sem([row.get(key, np.nan) for row in rows])
    return out


def _cell(value: float, fmt: str) -> str:
    return "-" if not np.isfinite(value) else fmt.format(value)


def markdown_table(summary: dict[str, dict[str, float]], columns=COLUMNS) -> str:
    header = "| variant | " + " | ".join(h for _, h, _, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [header, rule]
    for name, values in summary.items():
        cells = [_cell(values.get(key, float("nan")), fmt) for key, _, fmt, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The columns the world-v2 table repeats with their standard errors.
SEM_COLUMNS_V2 = ("alignment", "consistency", "size_change", "along_px", "background_correlation",
                  "background_identity", "background_motion_error")


def sem_table(summary: dict[str, dict[str, float]], keys: tuple[str, ...], columns) -> str:
    """Mean ± standard error of a few columns per variant."""
    formats = {key: (header, fmt) for key, header, fmt, _ in columns}
    lines = ["| variant | " + " | ".join(formats[k][0] for k in keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, values in summary.items():
        cells = []
        for key in keys:
            fmt = formats[key][1]
            sem = values.get(f"{key}_sem", float("nan"))
            cells.append(_cell(values.get(key, float("nan")), fmt) + ("" if not np.isfinite(sem) else " ± " + fmt.format(sem)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _compare(summary: dict[str, dict[str, float]], a: str, b: str, key: str) -> tuple[float, float]:
    """(difference a - b of a metric's means, its standard error)."""
    diff = summary[a][key] - summary[b][key]
    se = math.sqrt(summary[a].get(f"{key}_sem", np.nan) ** 2 + summary[b].get(f"{key}_sem", np.nan) ** 2)
    return diff, se


def _verdict(diff: float, se: float, *, want_positive: bool = True) -> str:
    """Whether a difference has the expected sign, beyond two standard errors."""
    signed = diff if want_positive else -diff
    if not np.isfinite(signed):
        return "cannot be judged"
    if not np.isfinite(se) or se == 0:
        return "holds" if signed > 0 else "does NOT hold"
    if signed > 2 * se:
        return "holds (beyond 2 standard errors)"
    if signed > 0:
        return "points the right way but within 2 standard errors"
    return "does NOT hold"


def claim_checks(summary: dict[str, dict[str, float]], requested_speed: float) -> list[str]:
    """The paper's expected outcomes, checked against the measured means (text lines)."""
    lines = []

    def pm(name: str, key: str, fmt: str = "{:.2f}") -> str:
        value, sem = summary[name][key], summary[name].get(f"{key}_sem", np.nan)
        return fmt.format(value) + ("" if not np.isfinite(sem) else " ± " + fmt.format(sem))

    def ceiling(*names: str) -> bool:
        return all(summary[n]["consistency"] >= 0.99 for n in names)

    at_ceiling = (
        "cannot be judged: both at the ceiling (in the shapes world the prompt alone fixes shape and "
        "colours, so per-frame sampling keeps them too; size_chg and motion_err show the drift)"
    )
    if "t2v-zero" in summary and "t2i" in summary:
        diff, se = _compare(summary, "t2v-zero", "t2i", "consistency")
        verdict = at_ceiling if ceiling("t2v-zero", "t2i") else _verdict(diff, se)
        lines.append(
            f"- Identity consistency well above per-frame t2i: t2v-zero {pm('t2v-zero', 'consistency')} "
            f"vs t2i {pm('t2i', 'consistency')}: {verdict}."
        )
        diff, se = _compare(summary, "t2v-zero", "t2i", "size_change")
        lines.append(
            f"- Subject size steadier than per-frame t2i: size change t2v-zero "
            f"{pm('t2v-zero', 'size_change', '{:.3f}')} vs t2i {pm('t2i', 'size_change', '{:.3f}')}: "
            f"{_verdict(diff, se, want_positive=False)}."
        )
    if "t2v-zero" in summary and "t2v-zero -cross_frame" in summary:
        diff, se = _compare(summary, "t2v-zero", "t2v-zero -cross_frame", "consistency")
        verdict = at_ceiling if ceiling("t2v-zero", "t2v-zero -cross_frame") else _verdict(diff, se)
        lines.append(
            f"- Without cross-frame attention the identity drifts: consistency "
            f"{pm('t2v-zero -cross_frame', 'consistency')} vs {pm('t2v-zero', 'consistency')} with it: "
            f"{verdict}."
        )
        diff, se = _compare(summary, "t2v-zero", "t2v-zero -cross_frame", "size_change")
        lines.append(
            f"- ... measured by size change instead: {pm('t2v-zero -cross_frame', 'size_change', '{:.3f}')} "
            f"without vs {pm('t2v-zero', 'size_change', '{:.3f}')} with it: {_verdict(diff, se, want_positive=False)}."
        )
    if "t2v-zero" in summary:
        along, se = summary["t2v-zero"]["along_px"], summary["t2v-zero"].get("along_px_sem", np.nan)
        lines.append(
            f"- Motion as requested ({requested_speed:.2f} px/frame): t2v-zero moves "
            f"{pm('t2v-zero', 'along_px')} px/frame along it (robust speed per video, mean over videos); "
            f"motion present: {_verdict(along, se)}."
        )
    for ablation in ("t2v-zero translate=0", "t2v-zero -motion"):
        if "t2v-zero" in summary and ablation in summary:
            diff, se = _compare(summary, "t2v-zero", ablation, "along_px")
            lines.append(
                f"- Without the motion field frames barely move (`{ablation}`): along the requested "
                f"direction {pm(ablation, 'along_px')} px/frame (all steps: {pm(ablation, 'speed_px')} px/frame) "
                f"vs {pm('t2v-zero', 'along_px')} with it: {_verdict(diff, se)}."
            )
    moving = {n: v["along_px"] for n, v in summary.items() if np.isfinite(v.get("along_px", np.nan))}
    with_field = [v for n, v in moving.items() if summary[n].get("_has_motion")]
    without = [v for n, v in moving.items() if not summary[n].get("_has_motion")]
    if with_field and without:
        lines.append(
            f"- Along the requested direction, variants with the motion field: {_range(with_field)} px/frame; "
            f"without: {_range(without)} px/frame."
        )
    return lines


def background_claims(summary: dict[str, dict[str, float]], camera_px: float) -> list[str]:
    """World v2: the paper's claims about the scene, on the background's own columns."""
    lines = []

    def pm(name: str, key: str) -> str:
        value, sem = summary[name][key], summary[name].get(f"{key}_sem", np.nan)
        return f"{value:.2f}" + ("" if not np.isfinite(sem) else f" ± {sem:.2f}")

    def claim(text: str, a: str, b: str, key: str, *, want_positive: bool = True) -> None:
        if a in summary and b in summary:
            diff, se = _compare(summary, a, b, key)
            lines.append(f"- {text}: `{a}` {pm(a, key)} vs `{b}` {pm(b, key)}: {_verdict(diff, se, want_positive=want_positive)}.")

    claim("The background (pattern orientation and phase, camera motion compensated) is kept, unlike "
          "per-frame text-to-image; bg_corr", "t2v-zero", "t2i", "background_correlation")
    claim("... share of frames that keep it; bg_ident", "t2v-zero", "t2i", "background_identity")
    claim("Cross-frame attention keeps the scene; bg_corr", "t2v-zero", "t2v-zero -cross_frame", "background_correlation")
    claim("Background smoothing steadies the background further; bg_corr", "t2v-zero +smoothing", "t2v-zero",
          "background_correlation")
    claim("... and its motion is closer to the request; bg_err", "t2v-zero +smoothing", "t2v-zero",
          "background_motion_error", want_positive=False)
    claim("FreeInit keeps the background; bg_corr", "t2v-zero +freeinit", "t2v-zero", "background_correlation")
    claim("A trained motion module keeps the background too; bg_corr", "animatediff", "t2i", "background_correlation")
    for name in summary:
        if name in ("pyoco-mixed", "pyoco-progressive", "videofusion") or (
                name.startswith("noise=") and not name.endswith("+cross_frame")):
            claim(f"Noise prior `{name.removeprefix('noise=')}` alone keeps more of the background than i.i.d. "
                  "noise; bg_corr", name, "t2i", "background_correlation")
        if name.startswith("noise=") and name.endswith("+cross_frame") and name.split(" ")[0] in summary:
            claim("... and with cross-frame attention more than without; bg_corr", name, name.split(" ")[0],
                  "background_correlation")
    if "t2v-zero" in summary:
        lines.append(
            f"- The background moves with the motion field ({camera_px:.2f} px/frame asked): t2v-zero "
            f"{pm('t2v-zero', 'background_speed_px')} px/frame measured, error {pm('t2v-zero', 'background_motion_error')} px/frame."
        )
    return lines


def _range(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "-"
    return f"{min(values):.2f}" if len(values) == 1 else f"{min(values):.2f} .. {max(values):.2f}"


def write_block(doc: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Put `block` between the markers `begin`/`end` of `doc` (created with a title if absent)."""
    text = doc.read_text() if doc.is_file() else "# Quality of every method on the shapes world\n\n"
    inner = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + inner + tail
    else:
        text = text.rstrip("\n") + "\n\n" + inner + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=6, help="number of world captions (default 6)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--size", type=int, default=None, help="height = width in px (default: the model's)")
    parser.add_argument("--model", default=None, help="model folder (default: the embedded model of the world)")
    parser.add_argument("--world", choices=("v1", "v2"), default="v1",
                        help="v1: plain backgrounds into results.md; v2: patterned backgrounds (model shapes-v2) "
                             "with the background's columns, into results_v2.md")
    parser.add_argument("--variants", default=None, help="comma-separated subset of variant names")
    parser.add_argument("--prompt-seed", type=int, default=1234, help="seed of the prompt draw")
    parser.add_argument("--sheet-rows", type=int, default=4, help="videos per contact sheet")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder of results.md and the PNGs")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="recipe override for every variant that has the part (e.g. motion.t0=12)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from zeroshot.generate import prepare_recipe
    from zeroshot.models import load

    torch.set_num_threads(1)
    v2 = args.world == "v2"
    model = load(args.model or ("shapes-v2" if v2 else "shapes"))
    columns = COLUMNS + COLUMNS_V2 if v2 else COLUMNS
    prefix = "results_v2" if v2 else "results"
    chosen = variants(args.frames, args.variants.split(",") if args.variants else None)
    overrides = {}
    if args.steps is not None:
        overrides["num_inference_steps"] = args.steps
    if args.size is not None:
        overrides["height"] = overrides["width"] = args.size
    chosen = {name: replace(recipe, **overrides) for name, recipe in chosen.items()}
    for text in args.set:
        key, value = parse_override(text)
        part = key.split(".")[0]
        chosen = {
            name: apply_override(recipe, key, value) if "." not in key or getattr(recipe, part) is not None else recipe
            for name, recipe in chosen.items()
        }
    reference = prepare_recipe(model, chosen.get("t2v-zero", replace(METHODS["t2v-zero"], num_frames=args.frames, **overrides)))
    prompts = distinct_captions(args.prompts, args.prompt_seed, world=args.world)
    seeds = list(range(args.seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summary: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    first_videos: dict[str, list] = {}
    started = time.perf_counter()
    for name, recipe in chosen.items():
        log.info("%s ...", name)
        try:
            rows, videos = evaluate_variant(model, recipe, prompts, seeds, reference.motion, world=args.world)
        except (RecipeError, ValueError, RuntimeError, OSError, ImportError, NotImplementedError) as exc:
            failed[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.info("  failed: %s", failed[name])
            continue
        summary[name] = summarise(rows, columns)
        summary[name]["_has_motion"] = videos[0][2].motion is not None
        first_videos[name] = videos
        log.info("  consistency %.2f  along %.2f px  %.1f s/video", summary[name]["consistency"], summary[name]["along_px"], summary[name]["seconds"])
    total = time.perf_counter() - started

    # variants whose videos are identical: a part the pipeline ignores, or equal recipes
    identical = identical_groups({name: [v[1] for v in videos] for name, videos in first_videos.items()})

    bar_chart(summary, CHART_V2 if v2 else CHART, out / f"{prefix}_chart.png", columns)
    sheets = []
    for name, videos in first_videos.items():
        path = out / f"{prefix}_sheet_{slug(name)}.png"
        contact_sheet([(label, frames) for label, frames, _ in videos[: args.sheet_rows]], path)
        sheets.append((name, path.name))
    compare = [(name, videos[0][1]) for name, videos in first_videos.items()]
    if compare:
        contact_sheet(compare, out / f"{prefix}_compare.png")

    command = "OMP_NUM_THREADS=1 python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    m = reference.motion
    lines = [
        f"Produced by `{command.strip()}` on model `{model.model_id}` "
        f"(torch {torch.__version__}, {torch.get_num_threads()} CPU thread, {total / 60:.1f} min in all).",
        "",
        f"{len(prompts)} prompts x {len(seeds)} seeds = {len(prompts) * len(seeds)} videos per variant, "
        f"{args.frames} frames of {reference.height}x{reference.width} px, "
        f"{reference.num_inference_steps} steps, guidance {reference.guidance_scale}. "
        f"Reference motion (t2v-zero on this model): translate {tuple(m.translate)} px/frame, "
        f"zoom {m.zoom}, t0={m.t0}, t1={m.t1}. Means over videos; the chart and `_sem` "
        "below use the standard error of the mean.",
        "",
        markdown_table(summary, columns),
        "",
        *(["The same videos, mean ± standard error of the main columns:", "",
           sem_table(summary, SEM_COLUMNS_V2, columns), ""] if v2 else []),
        "Columns: align = share of frames whose detected shape, fg and bg match the prompt; "
        "consist = share of frames 1..f-1 equal (shape, colours) to frame 0; size_chg = mean "
        "relative area change against frame 0; detected = share of frames with a shape; "
        "speed_px = mean detected centroid step (px/frame); along_px = robust (Theil-Sen) speed along the "
        "requested motion; motion_err = mean distance between detected and requested steps "
        "(px/frame); bg_change = mean absolute change of background pixels between frames; "
        "warp_err / flow_px = DIS optical-flow warping error and mean flow; flicker = mean "
        "change of frame luminance; ssim = consecutive-frame SSIM; s/video = render time per "
        "video in this run." + (
            " World v2 (patterned backgrounds; `zeroshot.shapes.metrics.background_metrics`): pattern = share "
            "of frames whose detected pattern kind is the caption's; bg_corr = mean correlation of each "
            "frame's background (shade coverage) with frame 0's moved by the camera motion the variant asks "
            "for (its motion field's step, else none): 1 = orientation and phase kept, ~0 = redrawn; "
            "bg_ident = share of frames 1..f-1 with bg_corr >= 0.5 and frame 0's pattern kind; bg_px = "
            "measured background displacement per frame (across stripes on striped ones); bg_err = its "
            "distance to the request (px/frame)." if v2 else ""),
        "",
        "Claims of the paper, checked on these numbers:",
        "",
        *claim_checks(summary, float(np.hypot(*m.translate))),
        *(background_claims(summary, float(np.hypot(*camera_step(reference, reference.height, reference.width)))) if v2 else []),
    ]
    if identical:
        lines += ["", "Variants whose videos are bit-identical (same draws, or a part `generate()` does not apply):", ""]
        lines += [f"- {' = '.join(group)}" for group in identical]
    if failed:
        lines += ["", "Variants that could not run:", ""] + [f"- {n}: {msg}" for n, msg in failed.items()]
    lines += ["", "Recipes (every other field at its default):", ""]
    lines += [f"- `{name}`: {describe(recipe)}" for name, recipe in chosen.items()]
    lines += ["", f"![metrics per variant]({prefix}_chart.png)", "", "One prompt and seed, every variant (rows):", ""]
    lines += [f"![every variant]({prefix}_compare.png)", "", "Contact sheets per variant:", ""]
    lines += [f"- [{name}]({file})" for name, file in sheets]
    write_block(out / f"{prefix}.md", "\n".join(lines))
    log.info("wrote %s", out / f"{prefix}.md")
    return 0


def identical_groups(videos: dict[str, list[np.ndarray]]) -> list[list[str]]:
    """Groups (size >= 2) of variants whose videos are all exactly equal."""
    groups: list[list[str]] = []
    for name, frames in videos.items():
        for group in groups:
            other = videos[group[0]]
            if len(other) == len(frames) and all(np.array_equal(a, b) for a, b in zip(other, frames)):
                group.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def describe(recipe: Recipe) -> str:
    """A short text of a recipe's method, noise prior and the optional parts that are on."""
    noise = recipe.noise
    text = f"method={recipe.method}, noise={noise.prior}"
    if noise.prior == "freenoise":
        text += f"(window={noise.window}, stride={noise.stride})"
    parts = [name for name in ("cross_frame", "motion", "smoothing", "freeinit", "animatediff") if getattr(recipe, name) is not None]
    return text + (", " + ", ".join(parts) if parts else "")


if __name__ == "__main__":
    raise SystemExit(main())
