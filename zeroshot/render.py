"""Batch renders from preset files: resumable, fault-tolerant, optionally on Ray.

A preset is a TOML file whose top-level keys are `Recipe` fields (`method` picks the
base recipe from `METHODS` first; parts are tables, `part = false` switches one off) plus
optional `[[jobs]]`:

    method = "t2v-zero"
    num_frames = 8
    [motion]
    translate = [4.0, 0.0]

    [[jobs]]
    prompts = ["a red circle on a blue background"]
    seeds = [0, 1]
    recipe = { guidance_scale = 3.0 }   # per-job overrides (a `method` here re-bases)

`render()` writes `<out>/<stem>.mp4` + `<stem>.json` per job, stems from
`zeroshot.io.output_stem` (prompt slug, seed, hash of prompt, recipe and model), and one
line per finished job in `<out>/manifest.jsonl`. A job whose video and record exist and
are valid is skipped, so an interrupted render resumes where it stopped. Workers decode
each video in chunks straight into its encoder (a temporary folder of their own, so the
decoded video is never held whole) and send back only the encoded file and its record; the
driver writes every file in the output folder, so Ray workers on other machines need no
shared folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from zeroshot import io
from zeroshot.models import ModelSpec
from zeroshot.recipe import (
    METHODS,
    Recipe,
    RecipeError,
    apply_override,
    get_method,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    validate,
)

logger = logging.getLogger(__name__)

JOB_KEYS = ("prompt", "prompts", "seed", "seeds", "recipe")
EXECUTORS = ("local", "ray")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Job:
    """One video to render: prompt, seed and the (unresolved) recipe."""

    prompt: str
    seed: int
    recipe: Recipe


# ---------------------------------------------------------------------------------------
# presets


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RecipeError(f"{path}: preset file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None


def _base_recipe(data: dict, where: str, base: Recipe | None = None, *, extra_keys: tuple[str, ...] = ()) -> Recipe:
    """The recipe of a table: `method` picks the base from METHODS, the rest overrides."""
    valid = [f.name for f in fields(Recipe)] + list(extra_keys)
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    method = data.get("method")
    if method is not None:
        if not isinstance(method, str):
            raise RecipeError(f"{where}.method: expected a string, got {method!r}")
        if method not in METHODS:
            raise RecipeError(f"{where}.method: unknown method {method!r}; valid: {', '.join(sorted(METHODS))}")
        base = METHODS[method]
    return recipe_from_dict(data, where=where, base=base)


def preset_recipe(path: str | os.PathLike) -> Recipe:
    """The recipe at the top level of a preset file (its `[[jobs]]` are ignored)."""
    path = Path(path)
    data = _read_toml(path)
    data.pop("jobs", None)
    recipe = _base_recipe(data, str(path), extra_keys=("jobs",))
    _validate(recipe, str(path))
    return recipe


def _validate(recipe: Recipe, where: str) -> None:
    try:
        validate(recipe)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def _as_list(value: Any, single: str, many: str, where: str, kind: type) -> list:
    if isinstance(value, list):
        items = value
    else:
        items = [value]
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool):
            name = "a string" if kind is str else "an integer"
            raise RecipeError(f"{where}: {single}/{many} must be {name} or a list of them, got {item!r}")
    if not items:
        raise RecipeError(f"{where}: {many} is empty")
    return items


def load_preset(path: str | os.PathLike) -> list[Job]:
    """Read a preset file into jobs (prompts x seeds per `[[jobs]]` table, in file order).

    A preset without `[[jobs]]` has no jobs (use it with `render --prompt`). Every problem
    raises RecipeError with one line naming the file, the key and what is valid.
    """
    path = Path(path)
    data = _read_toml(path)
    job_tables = data.pop("jobs", [])
    top = _base_recipe(data, str(path), extra_keys=("jobs",))
    _validate(top, str(path))
    if not isinstance(job_tables, list) or not all(isinstance(t, dict) for t in job_tables):
        raise RecipeError(f"{path}: jobs must be an array of tables ([[jobs]])")
    jobs = []
    for i, table in enumerate(job_tables):
        where = f"{path}: jobs[{i}]"
        unknown = [k for k in table if k not in JOB_KEYS]
        if unknown:
            raise RecipeError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(JOB_KEYS)}")
        for single, many in (("prompt", "prompts"), ("seed", "seeds")):
            if single in table and many in table:
                raise RecipeError(f"{where}: give {single} or {many}, not both")
        if "prompt" not in table and "prompts" not in table:
            raise RecipeError(f"{where}: missing prompt (or prompts)")
        prompts = _as_list(table.get("prompt", table.get("prompts")), "prompt", "prompts", where, str)
        seeds = _as_list(table.get("seed", table.get("seeds", 0)), "seed", "seeds", where, int)
        recipe = top
        overrides = table.get("recipe", {})
        if not isinstance(overrides, dict):
            raise RecipeError(f"{where}.recipe: expected a table of recipe fields, got {overrides!r}")
        if overrides:
            if "method" in overrides:  # re-base on the job's method, then the preset's fields
                recipe = _base_recipe({**data, "method": overrides["method"]}, str(path))
            recipe = recipe_from_dict(overrides, where=f"{where}.recipe", base=recipe)
            _validate(recipe, f"{where}.recipe")
        jobs.extend(Job(prompt, int(seed), recipe) for prompt in prompts for seed in seeds)
    return jobs


def show_method(name: str) -> str:
    """A method's recipe as preset TOML (`zeroshot show METHOD`); `load_preset` reads it back."""
    import tomli_w

    recipe = get_method(name)
    body = tomli_w.dumps(recipe_to_dict(recipe, drop_none=True))
    header = (
        f"# zeroshot preset: the {name} recipe. Fields left out (num_frames, height, width,\n"
        "# num_inference_steps, guidance_scale, motion.translate/t0/t1/mode) take the model's\n"
        "# recommended values. Add jobs to render it in a batch:\n"
        "#   [[jobs]]\n"
        '#   prompts = ["a red circle on a blue background"]\n'
        "#   seeds = [0, 1]\n\n"
    )
    return header + body


def apply_overrides(jobs: list[Job], overrides: list[str]) -> list[Job]:
    """Apply `key=value` overrides (`--set`) to every job's recipe."""
    pairs = [parse_override(text) for text in overrides]
    out = []
    for job in jobs:
        recipe = job.recipe
        for key, value in pairs:
            recipe = apply_override(recipe, key, value)
        validate(recipe)
        out.append(Job(job.prompt, job.seed, recipe))
    return out


def check_jobs(jobs: list[Job], model_path: str | None) -> None:
    """Resolve every job against the model's JSON files (no weights): bad jobs fail up front."""
    from zeroshot.generate import prepare_recipe
    from zeroshot.models import peek

    card = peek(model_path)
    for job in jobs:
        try:
            prepare_recipe(card, job.recipe, job.prompt)
        except RecipeError as exc:
            raise RecipeError(f"job {job.prompt!r} (seed {job.seed}): {exc}") from None


# ---------------------------------------------------------------------------------------
# the work a worker does


def as_spec(model: ModelSpec | str | None) -> ModelSpec:
    """A `ModelSpec` from a spec, a model path, or None (the embedded model)."""
    return model if isinstance(model, ModelSpec) else ModelSpec(model)


def load_model(spec: ModelSpec, device: str | None = None):
    """Load the model once per worker (on `device`, default the spec's, else the GPU when there is one)."""
    return spec.load(device)


def render_job(model, job: Job, *, fps: float = 8, fmt: str = "mp4") -> dict:
    """Generate one job's video, decoded chunk by chunk (`generate.decode_chunks`) into its
    encoder in a temporary folder of this process, so the decoded video is never held whole.

    Returns `{"files": ..., "record": ...}`: the encoded video's bytes (`io.read_video_files`)
    and its record (`io.make_record`, with `video_sha256` and `fps`), for the driver to write.
    """
    import tempfile

    from zeroshot.generate import decode_chunks, generate

    result = generate(model, job.prompt, job.recipe, seed=job.seed, progress=False, decode=False)
    if result.latents.shape[0] != 1:
        raise ValueError(f"a render job makes one video, got {result.latents.shape[0]}")
    with tempfile.TemporaryDirectory(prefix="zeroshot-render-") as folder:
        chunks = decode_chunks(model, result.latents, result.recipe)
        (video,) = io.save_result(result, Path(folder) / f"video.{fmt}", fps=fps, chunks=chunks)
        return {"files": io.read_video_files(video), "record": io.read_record(io.record_path(video))}


class Worker:
    """Holds a model; renders jobs with it (the Ray actor and pool-process body)."""

    def __init__(self, spec: ModelSpec, device: str | None = None):
        self.model = load_model(spec, device)

    def run(self, job: Job, fps: float = 8, fmt: str = "mp4") -> dict:
        return render_job(self.model, job, fps=fps, fmt=fmt)


_PROCESS_WORKER: Worker | None = None


def _process_init(spec: ModelSpec, devices) -> None:
    global _PROCESS_WORKER
    torch.set_num_threads(1)
    device = devices.get() if devices is not None else None
    _PROCESS_WORKER = Worker(spec, device)


def _process_run(job: Job, fps: float, fmt: str) -> dict:
    return _PROCESS_WORKER.run(job, fps, fmt)


# ---------------------------------------------------------------------------------------
# executors: submit(job, fps, fmt) -> Future, release(future), close()


class _InProcess:
    """Renders in this process, one job at a time."""

    capacity = 1

    def __init__(self, spec: ModelSpec):
        self.worker = Worker(spec)

    def submit(self, job: Job, fps: float, fmt: str) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(self.worker.run(job, fps, fmt))
        except Exception as exc:  # reported per job by the driver
            fut.set_exception(exc)
        return fut

    def release(self, fut: cf.Future) -> None:
        pass

    def close(self) -> None:
        pass


class _Processes:
    """`workers` local processes, each holding the model (a GPU each, round-robin).

    If a process dies (a crash, the OOM killer), the pool is broken: its jobs fail this
    attempt, and a fresh pool is started for the next ones.
    """

    def __init__(self, spec: ModelSpec, workers: int):
        self.capacity = workers
        self.spec = spec
        self.owner: dict[cf.Future, cf.ProcessPoolExecutor] = {}
        self.pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        devices = None
        if self.spec.device is None and torch.cuda.is_available():
            devices = ctx.Queue()
            for i in range(self.capacity):
                devices.put(f"cuda:{i % torch.cuda.device_count()}")
        return cf.ProcessPoolExecutor(
            max_workers=self.capacity, mp_context=ctx, initializer=_process_init, initargs=(self.spec, devices),
        )

    def submit(self, job: Job, fps: float, fmt: str) -> cf.Future:
        try:
            fut = self.pool.submit(_process_run, job, fps, fmt)
        except BrokenProcessPool as exc:
            fut = cf.Future()
            fut.set_exception(exc)
        self.owner[fut] = self.pool
        return fut

    def release(self, fut: cf.Future) -> None:
        pool = self.owner.pop(fut)
        if isinstance(fut.exception(), BrokenProcessPool) and pool is self.pool:
            logger.warning("a worker process died; starting new ones")
            pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Ray:
    """One model-holding Ray actor per worker, a GPU each where the cluster has GPUs."""

    def __init__(self, spec: ModelSpec, workers: int, address: str | None):
        try:
            import ray
        except ModuleNotFoundError:
            raise ValueError("--executor ray needs Ray: pip install 'zeroshot[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.actor_cls = ray.remote(num_cpus=1, num_gpus=gpus)(Worker)
        self.args = (spec,)
        self.idle = deque(self.actor_cls.remote(*self.args) for _ in range(workers))
        self.capacity = workers
        self.busy: dict[cf.Future, Any] = {}

    def submit(self, job: Job, fps: float, fmt: str) -> cf.Future:
        actor = self.idle.popleft()
        fut = actor.run.remote(job, fps, fmt).future()
        self.busy[fut] = actor
        return fut

    def release(self, fut: cf.Future) -> None:
        actor = self.busy.pop(fut)
        exc = fut.exception()
        if exc is not None and isinstance(exc, self.ray.exceptions.RayActorError):
            logger.warning("a Ray worker died; starting a new one")
            actor = self.actor_cls.remote(*self.args)
        self.idle.append(actor)

    def close(self) -> None:
        for actor in list(self.idle) + list(self.busy.values()):
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()


# ---------------------------------------------------------------------------------------
# the driver


@dataclass
class RenderReport:
    """What a render did. `failed` maps a stem to the last error (one line)."""

    out_dir: Path
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (
            f"{len(self.rendered)} rendered, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed -> {self.out_dir}"
        )
        if self.failed:
            text += "".join(f"\n  failed {stem}: {err}" for stem, err in self.failed.items())
        return text


def job_stem(job: Job, model: ModelSpec | str | None) -> str:
    """The output stem of a job (see `zeroshot.io.output_stem`; the model part is `ModelSpec.render_id`)."""
    return io.output_stem(job.prompt, job.seed, job.recipe, model_id=as_spec(model).render_id)


def _is_done(job: Job, stem: str, video: Path) -> bool:
    """Whether a job's video and record exist and match it.

    The record (written after its video) must name the job's stem, prompt, seed and frame
    count, and the video's SHA-256 must be the one it records: any change to the file
    after it was written makes the job render again. Records without a digest fall back
    to decoding the video and counting its frames.
    """
    record_file = io.record_path(video)
    if not record_file.is_file() or not io.video_target(video).exists():
        return False
    try:
        record = io.read_record(record_file)
    except (OSError, ValueError):
        return False
    expected = {"stem": stem, "prompt": job.prompt, "seed": job.seed, "num_frames": job.recipe.num_frames}
    if any(record.get(key) != value for key, value in expected.items()):
        return False
    if "video_sha256" in record:
        return record["video_sha256"] == io.video_digest(video)
    return io.video_is_valid(video, job.recipe.num_frames)


def _manifest_line(stem: str, video: Path, record: dict, **extra) -> dict:
    return {
        "stem": stem,
        "status": "done",
        "video": video.name,
        "record": io.record_path(video).name,
        "prompt": record.get("prompt"),
        "seed": record.get("seed"),
        "recipe_hash": record.get("recipe_hash"),
        "model_id": record.get("model_id"),
        **extra,
    }


def _error_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def render(
    jobs: list[Job],
    out_dir: str | os.PathLike,
    *,
    model: ModelSpec | str | None = None,
    workers: int = 1,
    executor: str = "local",
    retries: int = 0,
    address: str | None = None,
    progress: bool = True,
    fps: float = 8,
    fmt: str = "mp4",
) -> RenderReport:
    """Render `jobs` into `out_dir`; skip jobs already done; retry failures `retries` times.

    The model is loaded once per worker, and only if some job is left to render. Workers
    stream each video's decoded chunks into its encoder and return the encoded file (never
    the decoded frames); this process writes each video, then its record, then its manifest
    line, each atomically, so a killed render resumes cleanly. `executor="ray"` runs one
    actor per worker on the Ray cluster at `address` (default: a local instance, or the
    one already initialised in this process).
    """
    spec = as_spec(model)
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if fmt not in io.VIDEO_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(io.VIDEO_FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    io.check_output_path(out_dir / f"probe.{fmt}")
    out_dir.mkdir(parents=True, exist_ok=True)
    io.clean_stale_temps(out_dir)
    manifest = out_dir / MANIFEST
    logged = {line.get("stem") for line in io.read_lines(manifest) if line.get("status") == "done"}
    report = RenderReport(out_dir=out_dir)

    todo: dict[str, Job] = {}
    seen: set[str] = set()
    for job in jobs:
        stem = job_stem(job, spec)
        if stem in seen:
            report.duplicates += 1
            continue
        seen.add(stem)
        video = out_dir / f"{stem}.{fmt}"
        if _is_done(job, stem, video):
            report.skipped.append(stem)
            if stem not in logged:  # finished, but killed before its manifest line
                io.append_line(manifest, _manifest_line(stem, video, io.read_record(io.record_path(video))))
        else:
            todo[stem] = job
    if report.duplicates:
        logger.info("%d duplicate jobs rendered once", report.duplicates)

    if not todo:
        return report
    workers = min(workers, len(todo))
    if executor == "ray":
        pool: Any = _Ray(spec, workers, address)
    elif workers > 1:
        pool = _Processes(spec, workers)
    else:
        pool = _InProcess(spec)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo) + len(report.skipped), initial=len(report.skipped), unit="job", disable=not progress)
    queue = deque((stem, 0) for stem in todo)
    running: dict[cf.Future, tuple[str, int, float]] = {}
    try:
        while queue or running:
            while queue and len(running) < pool.capacity:
                stem, attempt = queue.popleft()
                running[pool.submit(todo[stem], fps, fmt)] = (stem, attempt, time.monotonic())
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                stem, attempt, start = running.pop(fut)
                pool.release(fut)
                try:
                    seconds = round(time.monotonic() - start, 3)
                    _write_outputs(fut.result(), out_dir / f"{stem}.{fmt}", stem, fps, manifest,
                                   attempts=attempt + 1, seconds=seconds)
                except Exception as exc:  # a failing job must not stop the others
                    error = _error_line(exc)
                    if attempt < retries:
                        logger.warning("job %s failed (attempt %d of %d): %s", stem, attempt + 1, retries + 1, error)
                        queue.append((stem, attempt + 1))
                        continue
                    logger.error("job %s failed after %d attempts: %s", stem, attempt + 1, error)
                    report.failed[stem] = error
                    job = todo[stem]
                    io.append_line(manifest, {"stem": stem, "status": "failed", "prompt": job.prompt,
                                              "seed": job.seed, "attempts": attempt + 1, "error": error})
                else:
                    report.rendered.append(stem)
                bar.update(1)
    finally:
        pool.close()
        bar.close()
    return report


def _write_outputs(payload: dict, video: Path, stem: str, fps: float, manifest: Path, **extra) -> None:
    """Video, then record, then manifest line: a record means a whole video."""
    written = io.write_video_files(payload["files"], video)
    record = {**payload["record"], "stem": stem, "video": written.name, "video_sha256": io.video_digest(written),
              "fps": fps}
    io.write_record(io.record_path(video), record)
    io.append_line(manifest, _manifest_line(stem, written, record, **extra))


__all__ = [
    "EXECUTORS",
    "Job",
    "RenderReport",
    "apply_overrides",
    "check_jobs",
    "job_stem",
    "load_preset",
    "preset_recipe",
    "render",
    "show_method",
]
