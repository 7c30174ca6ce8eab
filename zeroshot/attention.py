"""Attention processors that change where self-attention reads its keys and values.

They *delegate* to the processor that was installed (SDPA, a LoRA-aware one, ...): only the
`encoder_hidden_states` they hand it change. They know the number of frames, not the
batch: the batch (CFG halves, several videos) is derived from the tensor. Inside the UNet
the layout is `(b f) n c`, frames minor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrameState:
    """Mutable state shared by the processors of one hook.

    num_frames: frames per video in the current UNet call.
    mode: "first" (keys/values from the anchor frame) or "sparse-causal" (anchor and the
    previous frame). active: switch the effect off for some steps.
    Chunked calls (a video's frames through the UNet a chunk at a time): `offset` is the
    index of the call's first frame in the video and `cache` a dict, emptied before every
    step, where each layer keeps the anchor's input (from the chunk that holds the anchor,
    which must run first) and the last frame of the previous chunk.
    """

    num_frames: int
    mode: str = "first"
    anchor: int = 0
    active: bool = True
    offset: int = 0
    cache: dict | None = None


def _foldable(attn, attention_mask) -> bool:
    """Whether frames can be folded into the query sequence without changing the result.

    Folding `(b f) n c -> b (f n) c` is exact when the processor treats tokens
    independently apart from the attention itself: no group/spatial norm over the
    sequence and no mask.
    """
    return (
        attention_mask is None
        and getattr(attn, "group_norm", None) is None
        and getattr(attn, "spatial_norm", None) is None
    )


class CrossFrameAttnProcessor:
    """Cross-frame self-attention (Text2Video-Zero Sec. 3.3) around an installed processor.

    "first": every frame's queries attend to the anchor frame's keys/values. The anchor's
    keys and values are computed once per video (frames are folded into the query
    sequence), not for every frame. "sparse-causal": each frame attends to the anchor and
    to its previous frame (Tune-A-Video's sparse-causal attention).
    """

    def __init__(self, processor, state: FrameState, name: str = ""):
        self.processor = processor
        self.state = state
        self.name = name  # the layer's processor name: its key in a chunked run's cache

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        state = self.state
        f = state.num_frames
        chunked = state.cache is not None
        if (
            encoder_hidden_states is not None
            or not state.active
            or (f <= 1 and not chunked)
            or hidden_states.ndim != 3
        ):
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        bf, n, c = hidden_states.shape
        if bf % f:
            raise ValueError(f"cross-frame attention: batch {bf} is not a multiple of num_frames {f}")
        b = bf // f
        x = hidden_states.view(b, f, n, c)
        previous = None  # the frame before this call's first frame (chunked calls)
        if chunked:
            entry = state.cache.setdefault(self.name, {})
            local = state.anchor - state.offset
            if 0 <= local < f:
                entry["anchor"] = x[:, local]
            if "anchor" not in entry:
                raise ValueError("cross-frame attention: the chunk holding the anchor frame must run first")
            anchor = entry["anchor"]  # b n c
            previous = entry.get("last") if state.offset > 0 else None
            entry["last"] = x[:, -1]
        else:
            anchor = x[:, state.anchor]  # b n c
        if state.mode == "first" and _foldable(attn, attention_mask):
            out = self.processor(attn, x.reshape(b, f * n, c), anchor, None, *args, **kwargs)
            return out.reshape(bf, n, out.shape[-1])
        if state.mode == "first":
            context = anchor[:, None].expand(b, f, n, c).reshape(bf, n, c)
        else:
            prev = torch.clamp(torch.arange(f, device=x.device) - 1, min=0)
            before = x[:, prev]  # b f n c: each frame's previous one (frame 0: itself)
            if previous is not None:
                before = torch.cat([previous[:, None], x[:, :-1]], dim=1)
            context = torch.cat([anchor[:, None].expand(b, f, n, c), before], dim=2)  # b f 2n c
            context = context.reshape(bf, 2 * n, c)
        return self.processor(attn, hidden_states, context, attention_mask, *args, **kwargs)
