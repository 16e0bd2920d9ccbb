"""The mnist-sd text side: a word-level ``CLIPTokenizer`` and a small frozen ``CLIPTextModel``, built offline.

Stable Diffusion conditions its UNet on the last hidden states of a frozen CLIP text encoder. Here the
encoder keeps CLIP's architecture at a tiny size (``TEXT_CONFIG``) with seeded random weights that are
never trained: the UNet learns to read them, as SD's UNet learns to read a frozen pretrained encoder.

The tokenizer is CLIP's byte-pair tokenizer with a vocabulary written here: every caption word is one
whole token (merges.txt builds each word from its letters), and every single letter is a token too, so
a word outside the captions still tokenizes (into letters) instead of failing. Token ids: specials
first, then letters, then the merge products in merge order.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

from .data import ATTRIBUTES, DIGIT_WORDS

__all__ = ["CAPTION_WORDS", "MAX_LENGTH", "TEXT_CONFIG", "TEXT_SEED", "vocabulary_and_merges", "write_tokenizer_files",
           "build_tokenizer", "build_text_encoder"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CAPTION_WORDS = tuple(dict.fromkeys(["a", *DIGIT_WORDS, *(w for words in ATTRIBUTES.values() for p in words for w in p.split())]))
MAX_LENGTH = 16  # BOS + at most 14 words + EOS; the captions use 7 tokens
TEXT_SEED = 1234
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu", projection_dim=64)


def vocabulary_and_merges(words: "tuple[str, ...] | list[str]" = CAPTION_WORDS) -> tuple[dict[str, int], list[str]]:
    """CLIP-style vocab (token -> id) and BPE merges that make every word in ``words`` a single token.

    Each word w = c1 c2 ... cn is built left to right: (c1, c2), (c1c2, c3), ..., (c1..cn-1, cn</w>),
    where ``</w>`` marks the end of a word as in CLIP's vocabulary.
    """
    tokens = [BOS, EOS] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    merges: list[str] = []
    for w in words:
        if not w.isalpha() or not w.islower():
            raise ValueError(f"caption words must be lowercase letters only, got {w!r}")
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            rule = f"{left} {right}"
            if rule not in merges:
                merges.append(rule)
                tokens.append(left + right)
            left = left + right
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_tokenizer_files(folder: "str | os.PathLike") -> Path:
    """Write vocab.json and merges.txt (CLIP's file formats) into ``folder``."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary_and_merges()
    (d / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return d


def build_tokenizer(folder: "str | os.PathLike") -> Any:
    """A ``CLIPTokenizer`` from the files written into ``folder`` (padding to ``MAX_LENGTH`` with EOS, as SD)."""
    from transformers import CLIPTokenizer

    d = write_tokenizer_files(folder)
    # from_pretrained reads vocab.json + merges.txt in transformers 4 (Python BPE) and 5 (tokenizers BPE) alike
    return CLIPTokenizer.from_pretrained(str(d), model_max_length=MAX_LENGTH, pad_token=EOS, local_files_only=True)


def build_text_encoder(vocab_size: int, seed: int = TEXT_SEED) -> Any:
    """The frozen ``CLIPTextModel`` (random weights from ``seed``, eval mode, no gradients)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = vocabulary_and_merges()
    config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                            pad_token_id=vocab[EOS], **TEXT_CONFIG)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval().requires_grad_(False)
