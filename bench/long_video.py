"""Memory and time against video length: T2V-Zero with and without chunked frames.

Each configuration runs in a fresh child process (one thread) and reports its peak
resident memory (ru_maxrss) and wall time of one `generate()` call and of writing the mp4
as `zeroshot generate` does (frames decoded as they are written, `generate.decode_chunks`
into `io.save_result(chunks=...)`; `--no-write`: `generate()` decoding the whole video, no
file); ratios are against the first frame count of the same configuration. Models: the
embedded shapes model (its own defaults: 64 px, 25 steps) and the random `mid`-size
SD-topology UNet (128 px, 10 steps, guidance 7.5).

    python bench/long_video.py [--frames 16 64 256] [--chunk 8] [--models embedded mid] [--chunked-only] [--no-write]
    python bench/long_video.py --device cuda --no-write            # CUDA peak memory on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def child(model_name: str, frames: int, chunk: int, write: bool, device: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from zeroshot import models
    from zeroshot.generate import generate
    from zeroshot.recipe import Chunks, get_method

    recipe = replace(get_method("t2v-zero"), num_frames=frames)
    if model_name == "embedded":
        model, prompt = models.load("shapes", device=device), "a red circle on a blue background"
    else:
        from zeroshot.testing import build_sd_folder

        model = models.load(str(build_sd_folder(tempfile.mkdtemp(), "mid", seed=0)), device=device)
        prompt = "a red cat running in the forest"
        recipe = replace(recipe, height=128, width=128, num_inference_steps=10, guidance_scale=7.5)
    if chunk:
        recipe = replace(recipe, chunks=Chunks(chunk))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = generate(model, prompt, recipe, progress=False, decode=not write)
    if cuda:
        torch.cuda.synchronize()
    generated = time.perf_counter()
    if write:
        from zeroshot import io
        from zeroshot.generate import decode_chunks

        with tempfile.TemporaryDirectory() as folder:
            io.save_result(result, f"{folder}/clip.mp4", chunks=decode_chunks(model, result.latents, result.recipe))
    out = {
        "seconds": time.perf_counter() - start,
        "generate_s": generated - start,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_mib": before / 1024,
    }
    if cuda:  # the GPU's peak over the generation, the loaded weights included
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["before_mib"] = base_cuda / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=["embedded", "mid"])
    ap.add_argument("--chunked-only", action="store_true", help="skip the unchunked runs")
    ap.add_argument("--no-write", action="store_true", help="generate() with decoded frames, no file written")
    ap.add_argument("--device", default="cpu", help="cuda: peak is torch.cuda.max_memory_allocated, not resident memory")
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3] == "write", args.child[4])))
        return
    # glibc returns freed blocks at once, so peak RSS measures what was live (as bench/t2v_zero_vs_diffusers.py)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    write = "none" if args.no_write else "write"
    print(f"write mp4: {write != 'none'}; device {args.device}")
    print(f"{'model':9s} {'chunk':>5s} {'frames':>6s} {'peak MiB':>9s} {'x first':>7s} {'s':>7s} {'gen s':>7s} "
          f"{'s/frame':>8s}")
    for name in args.models:
        for chunk in (args.chunk,) if args.chunked_only else (0, args.chunk):
            base = None
            for frames in args.frames:
                cmd = [sys.executable, __file__, "--child", name, str(frames), str(chunk), write, args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                base = base or r["peak_mib"]
                print(f"{name:9s} {chunk or '-':>5} {frames:6d} {r['peak_mib']:9.1f} {r['peak_mib'] / base:7.2f} "
                      f"{r['seconds']:7.1f} {r['generate_s']:7.1f} {r['seconds'] / frames:8.3f}", flush=True)


if __name__ == "__main__":
    main()
