"""mnist-sd text side: the word-level CLIP tokenizer built offline and the frozen random text encoder."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from linmultistep.backends.mnist_sd.data import ATTRIBUTES, DIGIT_WORDS, caption  # noqa: E402
from linmultistep.backends.mnist_sd.text import (  # noqa: E402
    CAPTION_WORDS, MAX_LENGTH, build_text_encoder, build_tokenizer, vocabulary_and_merges,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def all_captions() -> list[str]:
    sizes = [range(10)] + [range(len(w)) for w in (ATTRIBUTES["thickness"], ATTRIBUTES["width"], ATTRIBUTES["slant"])]
    return [caption(*c) for c in itertools.product(*sizes)]


def test_every_caption_word_is_one_whole_token(tokenizer):
    vocab, _ = vocabulary_and_merges()
    for w in CAPTION_WORDS:
        ids = tokenizer(w, add_special_tokens=False).input_ids
        assert ids == [vocab[w + "</w>"]], w
    assert set(DIGIT_WORDS) <= set(CAPTION_WORDS)


def test_captions_round_trip_and_pad_with_eos(tokenizer):
    caps = all_captions()
    assert len(caps) == 10 * 2 * 2 * 3
    enc = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    for text, ids in zip(caps, enc.input_ids):
        n_words = len(text.split())
        assert len(ids) == MAX_LENGTH
        assert ids[0] == tokenizer.bos_token_id and ids[1 + n_words:] == [tokenizer.eos_token_id] * (MAX_LENGTH - 1 - n_words)
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_empty_prompt_is_bos_then_eos(tokenizer):
    ids = tokenizer("", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert ids == [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (MAX_LENGTH - 1)


def test_unknown_words_fall_back_to_letters_not_to_unk(tokenizer):
    ids = tokenizer("hello", add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["h", "e", "l", "l", "o</w>"]


def test_text_encoder_is_seeded_and_frozen(tokenizer):
    a, b = build_text_encoder(len(tokenizer)), build_text_encoder(len(tokenizer))
    c = build_text_encoder(len(tokenizer), seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training


@pytest.mark.bad_input("9 unclear errors")
def test_vocabulary_rejects_words_the_captions_cannot_hold():
    with pytest.raises(ValueError, match=r"lowercase letters only, got 'Seven'"):
        vocabulary_and_merges(["a", "Seven"])
