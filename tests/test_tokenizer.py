"""The closed-vocabulary CLIP tokenizer: every word one token, whatever the vocabulary."""

import pytest

from zeroshot.shapes import world
from zeroshot.testing import WORDS
from zeroshot.tokenizer import _bpe, _merges_for, _ordered_merges, word_tokenizer


@pytest.mark.parametrize("words", [world.VOCABULARY, world.VOCABULARY_V2, WORDS], ids=["v1", "v2", "test"])
def test_every_word_is_one_token(tmp_path, words):
    tok = word_tokenizer(words, tmp_path / "tok")
    for word in words:
        assert tok.tokenize(word) == [word + "</w>"], word
    caption = world.caption("star", "orange", "gray", "striped")
    if "striped" in words:
        assert len(tok(caption).input_ids) == 2 + len(caption.split())


def test_merge_order_matters_and_is_chosen_so_no_word_splits():
    words = ["red", "checkered", "triangle", "striped"]
    naive = [pair for w in words for pair in _merges_for(w)]  # vocabulary order: "red" first
    ranks = {pair: i for i, pair in enumerate(dict.fromkeys(naive))}
    assert _bpe("checkered", ranks) != ["checkered</w>"]  # "r e" of red cuts it: checke + red
    ranks = {pair: i for i, pair in enumerate(_ordered_merges(words))}
    assert all(_bpe(w, ranks) == [w + "</w>"] for w in words)


def test_a_stale_tokenizer_json_does_not_override_a_rebuild(tmp_path):
    word_tokenizer(["red", "blue"], tmp_path)
    tok = word_tokenizer(["red", "checkered"], tmp_path)
    assert tok.tokenize("checkered") == ["checkered</w>"]
