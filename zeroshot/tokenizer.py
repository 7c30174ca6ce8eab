"""A real CLIP tokenizer over a closed word vocabulary, built offline.

Small models (the embedded shapes world, test fixtures) know a few dozen words. A standard
`transformers.CLIPTokenizer` can hold exactly those: every word is one BPE token ("red</w>")
reached by a chain of merges, so the folder saves and reloads with `from_pretrained` like any
Stable Diffusion tokenizer. Words outside the vocabulary fall back to character pieces (or
the unknown token) that the model never saw in training; `unknown_words()` names them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _merges_for(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build `word</w>` from its characters."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    acc = pieces[0]
    for piece in pieces[1:]:
        merges.append((acc, piece))
        acc = acc + piece
    return merges


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """The pieces byte-pair encoding makes of `word` (CLIP's rule: merge the lowest-ranked
    adjacent pair, everywhere, until none is left)."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
        rank, _ = min(pairs)
        if rank == len(ranks):
            break
        best = [p for p in zip(pieces, pieces[1:]) if ranks.get(p) == rank][0]
        out, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                out.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                out.append(pieces[i])
                i += 1
        pieces = out
    return pieces


def _ordered_merges(words: list[str]) -> list[tuple[str, str]]:
    """Every word's merge chain, ranked so that each word encodes to one token.

    BPE applies the lowest-ranked merge first, so one word's merges can cut another apart
    ("r e" of "red" inside "checkered"; "t r" of "triangle" inside "striped"). Longer words
    rank first, and a word that still splits moves to the front until none does.
    """
    order = sorted(words, key=len, reverse=True)
    for _ in range(len(words) + 1):
        merges: list[tuple[str, str]] = []
        for w in order:
            merges.extend(pair for pair in _merges_for(w) if pair not in merges)
        ranks = {pair: i for i, pair in enumerate(merges)}
        split = [w for w in order if _bpe(w, ranks) != [w + "</w>"]]
        if not split:
            return merges
        order = split + [w for w in order if w not in split]
    raise ValueError(f"vocabulary words that cannot each be one token: {', '.join(split)}")


def normalise_words(words) -> list[str]:
    """Lower-case, de-duplicated, order-preserving list of plain words."""
    out: list[str] = []
    for word in words:
        w = word.strip().lower()
        if not w or not re.fullmatch(r"[a-z0-9]+", w):
            raise ValueError(f"vocabulary word {word!r} must be letters or digits only")
        if w not in out:
            out.append(w)
    return out


def word_tokenizer(words, directory, *, max_length: int = 77):
    """Write a CLIP tokenizer whose tokens are exactly `words` to `directory` and load it.

    Token ids: the single characters needed to spell the words (so nothing maps to an
    unknown id), then one id per word, then BOS and EOS (EOS doubles as padding, as in SD).
    """
    from transformers import CLIPTokenizer

    words = normalise_words(words)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for w in words for c in w})
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for w in words:
        for a, b in _merges_for(w):
            vocab.setdefault(a + b, len(vocab))
    merges = _ordered_merges(words)
    for w in words:
        vocab.setdefault(w + "</w>", len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")
    config = {"model_max_length": max_length, "bos_token": BOS, "eos_token": EOS,
              "unk_token": EOS, "pad_token": EOS, "tokenizer_class": "CLIPTokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS})
    )
    (directory / "tokenizer.json").unlink(missing_ok=True)  # a stale one would override the files above
    CLIPTokenizer.from_pretrained(str(directory)).save_pretrained(str(directory))
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise ValueError(f"vocabulary words that do not encode to one token: {', '.join(split)}")
    return tokenizer


def unknown_words(prompt: str, vocabulary) -> list[str]:
    """Words of `prompt` that are not in `vocabulary` (case-insensitive), in order."""
    known = {w.lower() for w in vocabulary}
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z0-9]+", prompt):
        w = word.lower()
        if w not in known and w not in seen:
            seen.append(w)
    return seen
