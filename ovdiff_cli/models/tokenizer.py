"""The CLIP BPE tokenizer for the tiny preset, built from the vocabulary that open_clip ships.

Stable Diffusion's text encoder uses OpenAI CLIP's byte-level BPE (49,408 tokens). open_clip
carries the same merges list in its package, so the tiny preset gets the real tokenizer without
a download: vocabulary = the 256 byte symbols, the same with ``</w>``, one symbol per merge, then
``<|startoftext|>`` and ``<|endoftext|>``.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

from ovdiff_cli.core.tokens import CONTEXT_LENGTH, bytes_to_unicode

#: OpenAI CLIP's tokenizer uses the first 49,152 − 256 − 2 merges of the file.
N_MERGES = 49152 - 256 - 2


def bpe_path() -> Path:
    """open_clip's gzip'd merges file."""
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The token → id table and the merges, as the CLIP tokenizer files hold them."""
    with gzip.open(bpe_path(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """A transformers ``CLIPTokenizer`` (77 tokens, padding with ``<|endoftext|>``) like SD-1.5's."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=CONTEXT_LENGTH,
                         pad_token="<|endoftext|>")
