"""Video output and run records.

A video is written as H.264 mp4, as a gif, or as a folder of numbered PNG frames; the
path's extension decides. Every file is written under a temporary name in the same
folder and renamed into place (`os.replace`), so an interrupted run never leaves a half
file under the final name. Every video gets a record, `<stem>.json` beside it, with the
prompt, seed, resolved recipe, model id and library versions.

Decoded video is `(f, 3, H, W)` float in [0, 1] here as everywhere in zeroshot.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeroshot.recipe import Recipe, recipe_hash, recipe_to_dict

logger = logging.getLogger(__name__)

VIDEO_FORMATS = ("mp4", "gif", "png")
MP4_CRF = 18  # x264 constant rate factor: visually lossless for these small clips
_TEMP_MARK = ".zstmp"  # every temporary name contains this
_TEMP_RE = re.compile(r"^\.(?P<name>.+)~(?P<host>[A-Za-z0-9_-]*)~(?P<pid>\d+)~[0-9a-f]+\.zstmp")


# ---------------------------------------------------------------------------------------
# paths


def video_format(path: str | os.PathLike) -> str:
    """The format a path asks for: "mp4", "gif" or "png" (a folder of frames).

    `clip.mp4` and `clip.gif` are files; `clip.png` and `clip` (no suffix) are the folder
    `clip/` holding `00000.png`, `00001.png`, ...
    """
    suffix = Path(path).suffix.lower()
    if suffix == "":
        return "png"
    fmt = suffix[1:]
    if fmt not in VIDEO_FORMATS:
        raise ValueError(
            f"output {str(path)!r}: unsupported extension {suffix!r}; "
            "valid: .mp4, .gif, .png or a folder name without suffix"
        )
    return fmt


def video_target(path: str | os.PathLike) -> Path:
    """The file or folder a video path is written to (PNG frames: the folder)."""
    path = Path(path)
    if video_format(path) == "png" and path.suffix:
        return path.with_suffix("")
    return path


def check_output_path(path: str | os.PathLike) -> Path:
    """Check, before any model work, that a video can be written at `path`.

    Raises ValueError (one line) for an unsupported extension, a path whose folder cannot
    be created or written, or a target of the wrong kind (a folder where a file goes).
    Creates nothing. Returns the path as a `Path`.
    """
    path = Path(path)
    fmt = video_format(path)
    target = video_target(path)
    if fmt == "png":
        if target.exists() and not target.is_dir():
            raise ValueError(f"output {str(path)!r}: {str(target)!r} exists and is not a folder")
    elif target.is_dir():
        raise ValueError(f"output {str(path)!r}: is a folder; give a file name ending in .{fmt}")
    parent = target.absolute().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output {str(path)!r}: {str(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {str(path)!r}: folder {str(existing)!r} is not writable")
    return path


def slugify(text: str, *, max_chars: int = 60) -> str:
    """Lowercase `text` to [a-z0-9-], runs of other characters become one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_chars].rstrip("-") or "video"


def output_stem(prompt: str, seed: int, recipe: Recipe, *, model_id: str | None = None) -> str:
    """The file stem of a render: "<prompt-slug>-s<seed>-<key>".

    `key` is 10 hex digits of a hash over the exact prompt, the recipe (as
    `recipe_hash` sees it) and `model_id` when given, so two prompts that share a slug
    (case, punctuation, a long common prefix) or two models never share a name.
    """
    blob = json.dumps(
        {"prompt": prompt, "recipe": recipe_to_dict(recipe), "model": model_id},
        sort_keys=True,
        separators=(",", ":"),
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{slugify(prompt)}-s{int(seed)}-{key}"


def video_paths(path: str | os.PathLike, num_videos: int) -> list[Path]:
    """Paths for `num_videos` videos asked for at `path`: itself, or `<stem>-v<i><suffix>`."""
    path = Path(path)
    if num_videos == 1:
        return [path]
    return [path.with_name(f"{path.stem}-v{i}{path.suffix}") for i in range(num_videos)]


def record_path(video_path: str | os.PathLike) -> Path:
    """The record of a video: `<stem>.json` beside it."""
    return video_target(Path(video_path)).with_suffix(".json")


# ---------------------------------------------------------------------------------------
# atomic writing


def _temp_path(target: Path) -> Path:
    """A temporary name beside `target` that keeps its suffix (ffmpeg reads it)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "", socket.gethostname())[:32]
    token = secrets.token_hex(4)
    return target.with_name(f".{target.stem}~{host}~{os.getpid()}~{token}{_TEMP_MARK}{target.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place; an old folder is swapped out, then removed."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = _temp_path(target)
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temporary files left in `directory` by killed processes of this host.

    Only names this module made, from this host, whose process is gone, are removed, so
    other live writers (also on other machines sharing the folder) are left alone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host = re.sub(r"[^A-Za-z0-9_-]", "", socket.gethostname())[:32]
    removed = []
    for entry in directory.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != host or _pid_alive(int(m["pid"])):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------
# video writing and reading


def to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(f, 3, H, W) float in [0, 1] -> (f, H, W, 3) uint8, rounded."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (f, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] < 1:
        raise ValueError("frames must hold at least one frame")
    if frames.dtype == torch.uint8:
        out = frames
    else:
        out = (frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(out.permute(0, 2, 3, 1).cpu().numpy())  # f H W 3


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: the last row/column of odd-sized frames `(f, H, W, 3)` repeated."""
    f, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def _mp4_encoder(path: Path, height: int, width: int, fps: float):
    """A started ffmpeg encoder (H.264, yuv420p, CRF `MP4_CRF`) of `height` x `width` frames
    at `path`: `send` it uint8 frames `(H', W', 3)` of the even size, `close` it to finish the
    file. `write_video` and `VideoStream` both encode through it, so their files are alike."""
    import imageio_ffmpeg

    size = (width + width % 2, height + height % 2)
    if size != (width, height):
        logger.info("padding %dx%d frames to %dx%d for yuv420p", width, height, *size)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        size,
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart"],
    )
    writer.send(None)
    return writer


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    writer = _mp4_encoder(path, frames.shape[1], frames.shape[2], fps)
    for frame in _even(frames):
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
    )


def _write_pngs(frames: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")


def write_video(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, *, fps: float = 8) -> Path:
    """Write `(f, 3, H, W)` frames in [0, 1] to `path` atomically; returns what was written.

    `.mp4`: H.264, yuv420p (odd sizes get their last row/column repeated); `.gif`;
    `.png` or no suffix: a folder of numbered PNG frames (`clip.png` -> `clip/`).
    The file (or folder) appears under its final name only once complete.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = check_output_path(path)
    fmt = video_format(path)
    data = to_uint8(frames)
    target = video_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target)
    try:
        if fmt == "mp4":
            _write_mp4(data, tmp, fps)
        elif fmt == "gif":
            _write_gif(data, tmp, fps)
        else:
            _write_pngs(data, tmp)
        if fmt == "png":
            for frame_file in tmp.iterdir():
                _fsync(frame_file)
            _replace_dir(tmp, target)
        else:
            _fsync(tmp)
            os.replace(tmp, target)
    finally:
        _remove(tmp)
    return target


class VideoStream:
    """A video written as its frames come: `append` chunks of `(k, 3, H, W)` frames in [0, 1]
    (or uint8), then `close`. Nothing reaches the final name before `close`: frames go to a
    temporary name beside it (mp4: straight into the encoder; png: one file per frame),
    renamed into place when complete; `abort`, or leaving a `with` block on an error, removes
    the temporary. Only one chunk is held at a time, except for gif, whose encoder (PIL)
    needs every frame: it keeps the uint8 frames until `close`.

    `write_video(frames, path)` writes the same file as one `append` of all the frames.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float = 8):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = check_output_path(path)
        self.fps = fps
        self.format = video_format(self.path)
        self.target = video_target(self.path)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temp_path(self.target)
        self.num_frames = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the frames
        self._encoder = None
        self._gif: list[np.ndarray] = []
        self._done = False

    def append(self, frames: torch.Tensor | np.ndarray) -> None:
        """Add frames `(k, 3, H, W)` at the end of the video."""
        if self._done:
            raise ValueError(f"{str(self.path)!r}: the stream is closed")
        data = to_uint8(frames)  # k H W 3
        size = data.shape[1:3]
        if self.size is None:
            self.size = size
            if self.format == "mp4":
                self._encoder = _mp4_encoder(self.tmp, *size, self.fps)
            elif self.format == "png":
                self.tmp.mkdir()
        elif size != self.size:
            raise ValueError(f"{str(self.path)!r}: frames of {size[0]}x{size[1]} after {self.size[0]}x{self.size[1]}")
        if self.format == "mp4":
            for frame in _even(data):
                self._encoder.send(np.ascontiguousarray(frame))
        elif self.format == "gif":
            self._gif.extend(data)
        else:
            from PIL import Image

            for i, frame in enumerate(data, start=self.num_frames):
                Image.fromarray(frame).save(self.tmp / f"{i:05d}.png")
        self.num_frames += len(data)

    def close(self) -> Path:
        """Finish the file and move it to its final name; returns what was written."""
        if self._done:
            raise ValueError(f"{str(self.path)!r}: the stream is closed")
        try:
            if self.num_frames == 0:
                raise ValueError(f"{str(self.path)!r}: no frames were written")
            if self.format == "mp4":
                encoder, self._encoder = self._encoder, None
                encoder.close()
                _fsync(self.tmp)
                os.replace(self.tmp, self.target)
            elif self.format == "gif":
                _write_gif(np.stack(self._gif), self.tmp, self.fps)
                _fsync(self.tmp)
                os.replace(self.tmp, self.target)
            else:
                for frame_file in self.tmp.iterdir():
                    _fsync(frame_file)
                _replace_dir(self.tmp, self.target)
        finally:
            self.abort()
        return self.target

    def abort(self) -> None:
        """Stop writing and remove the temporary (the final name is left as it was)."""
        self._done = True
        self._gif = []
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            try:
                encoder.close()
            except (OSError, RuntimeError, ValueError) as exc:  # the temporary goes anyway
                logger.debug("closing the encoder of an aborted stream: %s", exc)
        _remove(self.tmp)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._done:
            self.close()
        else:
            self.abort()


def read_video_files(path: str | os.PathLike) -> dict[str, bytes]:
    """The encoded bytes of a written video, to send elsewhere: `{"": bytes}` for a file
    (mp4, gif), `{frame name: bytes}` for a PNG folder. `write_video_files` writes them back."""
    target = video_target(Path(path))
    if not target.is_dir():
        return {"": target.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted(target.iterdir()) if p.suffix.lower() == ".png" and p.stem.isdigit()}


def write_video_files(files: dict[str, bytes], path: str | os.PathLike) -> Path:
    """Write a video's encoded bytes (`read_video_files`) to `path` atomically; returns what
    was written (a PNG folder appears whole, as `write_video`'s does)."""
    path = check_output_path(path)
    target = video_target(path)
    if video_format(path) != "png":
        if set(files) != {""}:
            raise ValueError(f"{str(path)!r}: expected one file's bytes, got {len(files)} files")
        return write_bytes_atomic(target, files[""])
    if not files or any(not re.fullmatch(r"\d+\.png", name) for name in files):
        raise ValueError(f"{str(path)!r}: expected numbered PNG frames, got {sorted(files)[:3]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target)
    try:
        tmp.mkdir()
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _replace_dir(tmp, target)
    finally:
        _remove(tmp)
    return target


def _read_mp4(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)


def _read_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)])


def _read_pngs(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.stem.isdigit())
    if not files:
        raise ValueError(f"{str(folder)!r}: no numbered PNG frames")
    frames = []
    for p in files:
        with Image.open(p) as im:
            frames.append(np.asarray(im.convert("RGB")))
    return np.stack(frames)


def read_video(path: str | os.PathLike) -> torch.Tensor:
    """Read an mp4, a gif or a folder of numbered PNGs as `(f, 3, H, W)` float in [0, 1]."""
    path = Path(path)
    fmt = video_format(path)
    target = video_target(path)
    if not target.exists():
        raise FileNotFoundError(f"no video at {str(target)!r}")
    if fmt == "mp4":
        data = _read_mp4(target)
    elif fmt == "gif":
        data = _read_gif(target)
    else:
        data = _read_pngs(target)
    return torch.from_numpy(data.copy()).permute(0, 3, 1, 2).float() / 255.0  # f 3 H W


def video_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a video file, or of a PNG folder's numbered frames in order (hex)."""
    target = video_target(Path(path))
    files = [target]
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.suffix.lower() == ".png" and p.stem.isdigit())
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def video_is_valid(path: str | os.PathLike, num_frames: int, *, size: tuple[int, int] | None = None) -> bool:
    """Whether `path` opens, decodes and holds `num_frames` frames (of `size` = (H, W))."""
    try:
        frames = read_video(path)
    except (OSError, ValueError, RuntimeError, StopIteration) as exc:
        logger.debug("invalid video %s: %s", path, exc)
        return False
    if frames.shape[0] != num_frames:
        return False
    if size is not None:
        h, w = size
        got_h, got_w = frames.shape[2], frames.shape[3]
        if video_format(path) == "mp4":  # odd sizes are padded by one for yuv420p
            h, w = h + h % 2, w + w % 2
        return (got_h, got_w) == (h, w)
    return True


# ---------------------------------------------------------------------------------------
# records


def library_versions() -> dict[str, str | None]:
    """Versions of zeroshot and the libraries that decide its output."""
    import platform

    import zeroshot

    out: dict[str, str | None] = {"zeroshot": zeroshot.__version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def make_record(
    result: Any, *, index: int = 0, extra: dict | None = None, size: tuple[int, int, int] | None = None
) -> dict:
    """The run record of video `index` of a `VideoResult` (plain JSON data).

    Holds prompt, negative prompt, seed, the resolved recipe and its hash, model id,
    library versions, frame count and size, and the creation time (UTC). `extra` keys
    are added at the top level (they may not replace these). `size`: the video's
    (frames, height, width) when the result holds no frames (decoded as they were written).
    """
    frames = result.frames
    if frames is None:
        if size is None:
            raise ValueError("make_record: the result holds no frames; give size=(frames, height, width)")
        frames = torch.empty(result.latents.shape[0], size[0], 3, size[1], size[2], device="meta")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    num_videos = frames.shape[0]
    if not 0 <= index < num_videos:
        raise ValueError(f"index must be in [0, {num_videos - 1}], got {index}")
    recipe = result.recipe
    record: dict[str, Any] = {
        "prompt": result.prompt,
        "negative_prompt": recipe.negative_prompt,
        "seed": result.seed,
        "video_index": index,
        "num_videos": num_videos,
        "model_id": result.model_id,
        "recipe": recipe_to_dict(recipe),
        "recipe_hash": recipe_hash(recipe),
        "num_frames": int(frames.shape[1]),
        "height": int(frames.shape[3]),
        "width": int(frames.shape[4]),
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        if key in record:
            raise ValueError(f"extra record key {key!r} would replace a standard field")
        record[key] = value
    return record


def write_record(path: str | os.PathLike, record: dict) -> Path:
    """Write a record as indented JSON, atomically."""
    text = json.dumps(record, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to a record")


def read_record(path: str | os.PathLike) -> dict:
    """Read a record written by `write_record`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_result(
    result: Any, path: str | os.PathLike, *, fps: float = 8, extra: dict | None = None, chunks=None
) -> list[Path]:
    """Write every video of a `VideoResult` and its record; returns the video paths.

    One video goes to `path`; several go to `<stem>-v<i><suffix>`. Each record is
    `<stem>.json` beside its video, written after the video, so a record means a
    complete video.

    `chunks`: the frames as they are decoded, an iterable of `(n, k, 3, H, W)` chunks
    (`zeroshot.generate.decode_chunks`), streamed into the files (`VideoStream`) instead
    of `result.frames`, so the decoded video is never held whole. An error while
    streaming leaves no file (and no temporary) behind.
    """
    num_videos = result.latents.shape[0] if result.frames is None else (
        1 if result.frames.ndim == 4 else result.frames.shape[0]
    )
    if chunks is None:
        frames = result.frames if result.frames.ndim == 5 else result.frames.unsqueeze(0)
        chunks = [frames]
    paths = video_paths(path, num_videos)
    for p in paths:
        check_output_path(p)
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(VideoStream(p, fps=fps)) for p in paths]
        for chunk in chunks:
            if chunk.shape[0] != num_videos:
                raise ValueError(f"a chunk of {chunk.shape[0]} videos for {num_videos}")
            for stream, frames in zip(streams, chunk):
                stream.append(frames)
        videos = [stream.close() for stream in streams]
    written = []
    for i, (p, video) in enumerate(zip(paths, videos)):
        stream = streams[i]
        fields = {"video": video.name, "video_sha256": video_digest(video), "fps": fps}
        record = make_record(result, index=i, extra={**fields, **(extra or {})}, size=(stream.num_frames, *stream.size))
        write_record(record_path(p), record)
        written.append(video)
    return written


def append_line(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to `path` with a single `write` (O_APPEND), fsynced.

    A line cut short by a crash is completed by a newline before the next one, so a
    reader that skips unparsable lines sees every whole line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, separators=(",", ":"), default=_json_default) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: str | os.PathLike) -> list[dict]:
    """The whole JSON lines of a file written by `append_line` (missing file: [])."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


__all__ = [
    "VIDEO_FORMATS",
    "VideoStream",
    "append_line",
    "check_output_path",
    "clean_stale_temps",
    "library_versions",
    "make_record",
    "output_stem",
    "read_lines",
    "read_record",
    "read_video",
    "read_video_files",
    "record_path",
    "save_result",
    "slugify",
    "video_digest",
    "video_format",
    "video_is_valid",
    "video_target",
    "video_paths",
    "write_bytes_atomic",
    "write_record",
    "write_video",
    "write_video_files",
]
