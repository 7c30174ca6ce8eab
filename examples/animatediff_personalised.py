"""AnimateDiff's claim on the embedded model: the motion module trained on the base model
animates a personalised variant (the shipped "turned" style LoRA) without retraining.

    python examples/animatediff_personalised.py [--scale 1.0] [--out out/personalised.mp4]

Writes the base model's video and the variant's, same prompt and seed, side by side in
one clip, and prints the style score of each (0: upright shapes, 1: turned).
"""

import argparse

import numpy as np
import torch

from zeroshot import models
from zeroshot.generate import generate
from zeroshot.io import write_video
from zeroshot.recipe import apply_override, get_method
from zeroshot.trained.lora import personalised_model
from zeroshot.trained.personalise import default_out, turn_score


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", default="a yellow triangle on a blue background")
    ap.add_argument("--scale", type=float, default=1.0, help="LoRA strength")
    ap.add_argument("--out", default="out/personalised.mp4")
    args = ap.parse_args()
    base = models.load()
    variant = personalised_model(base, default_out("turned"), scale=args.scale)
    recipe = apply_override(get_method("animatediff"), "freeinit", "on")
    videos = []
    for name, model in (("base", base), ("turned", variant)):
        frames = generate(model, args.prompt, recipe, seed=0).frames[0]
        score = np.nanmean([turn_score(f.numpy(), args.prompt) for f in frames])
        print(f"{name}: style score {score:.2f}")
        videos.append(frames)
    print("wrote", write_video(torch.cat(videos, dim=3), args.out))  # side by side


if __name__ == "__main__":
    main()
