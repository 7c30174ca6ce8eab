"""Scoped changes to a UNet: context managers that install attention processors and
restore the very same objects in `finally`, even when the body raises.

Hooks compose with `contextlib.ExitStack`; after a `generate()` call returns or raises,
the UNet's processors are exactly the objects it had before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from zeroshot.attention import CrossFrameAttnProcessor, FrameState

PART_PREFIXES = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}


def is_spatial_self_attention(name: str) -> bool:
    """A UNet's spatial self-attention processor (attn1), not text or temporal attention."""
    return ".attn1." in name and "motion_modules" not in name and "temporal" not in name


def is_cross_attention(name: str) -> bool:
    """A UNet's text cross-attention processor (attn2)."""
    return ".attn2." in name and "motion_modules" not in name and "temporal" not in name


def in_parts(name: str, parts) -> bool:
    """Whether a processor name lies in one of the UNet parts ("down", "mid", "up")."""
    return any(name.startswith(PART_PREFIXES[p]) for p in parts)


@contextlib.contextmanager
def wrapped_processors(
    unet, select: Callable[[str], bool], wrap: Callable[[str, Any], Any]
) -> Iterator[dict[str, Any]]:
    """Replace each selected attention processor `p` by `wrap(name, p)` for the block.

    Yields the dict of installed wrappers (name -> wrapper). On exit, even on error, the
    original processor objects are put back.
    """
    original = dict(unet.attn_processors)
    wrappers = {name: wrap(name, proc) for name, proc in original.items() if select(name)}
    try:
        unet.set_attn_processor({**original, **wrappers})
        yield wrappers
    finally:
        unet.set_attn_processor(original)


@contextlib.contextmanager
def cross_frame_attention(
    unet,
    num_frames: int,
    *,
    mode: str = "first",
    anchor: int = 0,
    layers=("down", "mid", "up"),
    names=None,
    state: FrameState | None = None,
    prefix: str = "",
) -> Iterator[FrameState]:
    """Install cross-frame self-attention (Text2Video-Zero Sec. 3.3) on a UNet.

    `names`: the processors to wrap, as a model family lists them
    (`attention_layers("spatial_self")`); without it, a 2-D UNet's self-attention (attn1)
    in the given `layers` parts. Every selected layer wraps the processor installed
    there; selecting none is an error. Yields the shared `FrameState`: set `.num_frames`
    when the frame count of the UNet call changes and `.active` to switch it per step.
    `state`: share another hook's state instead (e.g. a ControlNet's layers driven with the
    UNet's); `prefix` keeps their keys in a chunked run's cache apart from the UNet's.
    """
    state = state if state is not None else FrameState(num_frames=num_frames, mode=mode, anchor=anchor)
    chosen = None if names is None else frozenset(names)
    if chosen is None and any("temp_attentions" in n or "motion_modules" in n for n in unet.attn_processors):
        raise ValueError("cross_frame_attention: this UNet has temporal attention; pass the spatial layers as names")

    def select(name: str) -> bool:
        if chosen is not None:
            return name in chosen
        return is_spatial_self_attention(name) and in_parts(name, layers)

    if not any(select(n) for n in unet.attn_processors):
        raise ValueError("cross_frame_attention: no self-attention layer selected")

    def wrap(name: str, proc):
        return CrossFrameAttnProcessor(proc, state, prefix + name)

    with wrapped_processors(unet, select, wrap):
        yield state
