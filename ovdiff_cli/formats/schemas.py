"""The schemas of ovdiff's tensor files, in one torch-free module.

They are defined here, not beside their readers, so that ``ovdiff info`` can check a file's
header against its schema without importing torch; :mod:`~ovdiff_cli.formats.supportset`,
:mod:`~ovdiff_cli.formats.prototypes` and :mod:`~ovdiff_cli.formats.segmentation` re-export them.
"""

from __future__ import annotations

from ovdiff_cli.formats.header import Schema, TensorSpec

# -- support sets (formats/supportset.py) ------------------------------------------------------------------

#: The PNG files of a support set (their schema id sits in the ``ovdiff`` text chunk).
IMAGE_SCHEMA = "ovdiff.support-image/1"
MASK_SCHEMA = "ovdiff.mask/1"
MASK_OVERLAY_SCHEMA = "ovdiff.mask-overlay/1"

CROSSATTN = Schema("ovdiff.crossattn", 1, "ovdiff sample", {
    # Per image, layer and recorded token: the sum over steps × heads of the clamped maps,
    # upsampled to the G × G grid.
    "attn": TensorSpec("float32", ("N", "L", "T", "G", "G")),
    # How many maps were summed into each (image, layer): steps × heads.
    "counts": TensorSpec("int64", ("N", "L")),
    # Positions in the prompt's tokens (0..CONTEXT_LENGTH-1, BOS at 0) of the recorded tokens, and
    # of the class phrase among them.
    "positions": TensorSpec("int64", ("T",)),
    "phrase_positions": TensorSpec("int64", ("P",)),
}, meta_keys=("class", "prompt", "models"))

#: One batch of recorded attention while a support set is being sampled (``.crossattn-partial/``);
#: joined into crossattn.safetensors when the set is complete, so a killed run resumes per batch.
CROSSATTN_PART = Schema("ovdiff.crossattn-part", 1, "ovdiff sample", {
    "attn": TensorSpec("float32", ("B", "L", "T", "G", "G")),
    "counts": TensorSpec("int64", ("B", "L")),
    "indices": TensorSpec("int64", ("B",)),
}, meta_keys=("params",))

ATTRIBUTION = Schema("ovdiff.attribution", 1, "ovdiff attribute", {
    "attribution": TensorSpec("float32", ("N", "S", "S")),     # A, min–max normalised at image size
    "attribution64": TensorSpec("float32", ("N", "G", "G")),   # A^64, on the attention grid
}, meta_keys=("class", "models", "inputs"))

#: The raw class-agnostic proposals behind the masks (``mask --save-proposals``), bit-packed.
PROPOSALS = Schema("ovdiff.proposals", 1, "ovdiff mask --save-proposals", {
    "masks": TensorSpec("uint8", ("J", "S", "B")),   # np.packbits along the last axis, B = ⌈S/8⌉
    "scores": TensorSpec("float32", ("J",)),
    "image": TensorSpec("int64", ("J",)),            # the support image each proposal belongs to
}, meta_keys=("class", "proposer", "size"))

# -- prototypes and banks (formats/prototypes.py) ---------------------------------------------------------


def _side_specs(side: str) -> dict[str, TensorSpec]:
    s = side.upper()
    return {
        f"{side}.class": TensorSpec("float32", (f"C{s}", "D")),          # 0 or 1 row
        f"{side}.instance": TensorSpec("float32", (f"I{s}", "D")),
        f"{side}.instance_image": TensorSpec("int64", (f"I{s}",)),      # support image of each instance
        f"{side}.part": TensorSpec("float32", (f"K{s}", "D")),
        f"{side}.pooled_index": TensorSpec("int64", (f"P{s}", 3)),      # (n, y, x) on the support grid
        f"{side}.pooled_label": TensorSpec("int64", (f"P{s}",)),        # cluster of each pooled vector
    }


PROTOTYPES = Schema("ovdiff.prototypes", 1, "ovdiff prototype", {**_side_specs("fg"), **_side_specs("bg")},
                    meta_keys=("class", "extractor", "models", "inputs"))


def _bank_specs(side: str) -> dict[str, TensorSpec]:
    m = f"M{side.upper()}"
    return {
        side: TensorSpec("float32", (m, "D")),
        f"{side}_owner": TensorSpec("int64", (m,)),
        f"{side}_kind": TensorSpec("int64", (m,)),
        f"{side}_index": TensorSpec("int64", (m,)),
    }


BANK = Schema("ovdiff.bank", 1, "ovdiff filter-stuff", {**_bank_specs("fg"), **_bank_specs("bg")},
              meta_keys=("extractor", "models", "inputs", "vocabulary"))

# -- per-image side files of segment (formats/segmentation.py) ------------------------------------------

SCORES = Schema("ovdiff.scores", 1, "ovdiff segment --save-scores", {
    "scores": TensorSpec("float32", ("K", "H", "W")),
}, meta_keys=("image", "vocabulary", "inputs"))


def explain_schema(extractors: list[str]) -> Schema:
    specs = {"labels": TensorSpec("int64", ("H", "W"))}
    for e in extractors:
        specs[f"{e}.row"] = TensorSpec("int64", ("H", "W"))
        specs[f"{e}.similarity"] = TensorSpec("float32", ("H", "W"))
    return Schema("ovdiff.explain", 1, "ovdiff segment --explain", specs,
                  meta_keys=("image", "vocabulary", "extractors", "banks", "inputs"))
