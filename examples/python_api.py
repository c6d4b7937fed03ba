"""The Python API underneath the commands: vocabularies, model presets and ovdiff's file formats.

    python examples/python_api.py [OUTPUT_FOLDER]              # the tiny preset
    PRESET=paper python examples/python_api.py [OUTPUT_FOLDER]  # OpenAI's CLIP, once downloaded

Builds the preset's CLIP (on tiny: random weights, no download), embeds a vocabulary's prompts and
writes them as a bank file that `ovdiff info` can read back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

from ovdiff_cli.core.bank import Rows
from ovdiff_cli.formats import vocabulary
from ovdiff_cli.formats.prototypes import Bank, bank_path, read_bank, write_bank
from ovdiff_cli.models import get_preset, load


def main(out: Path) -> None:
    vocab = vocabulary.parse("cat,dog,sky")
    print("classes:", [(c.name, c.prompt, c.kind) for c in vocab.classes])

    preset = get_preset(os.environ.get("PRESET", "tiny"))
    clip = load(preset, "scorer")  # an OpenClip; on `paper` this is OpenAI's ViT-B/16
    texts = clip.encode_texts(["a " + c.prompt for c in vocab.classes])  # [3, E], unit vectors

    labels = torch.arange(1, len(vocab) + 1)
    fg = Rows(texts, labels, torch.zeros_like(labels), torch.zeros_like(labels))  # owner, kind, index per row
    empty = Rows.empty(texts.shape[1])
    meta = {"extractor": "text", "models": preset.describe(), "inputs": {}}  # provenance every bank carries
    path = write_bank(bank_path(out, "text"), Bank(fg, empty, vocab, meta))
    back = read_bank(path)
    print(path, "holds", back.fg.vectors.shape[0], "rows for", back.vocabulary.names)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ovdiff-example-")))
