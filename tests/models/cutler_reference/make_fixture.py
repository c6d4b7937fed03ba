"""Re-derive ``fixture_ref.npz`` with detectron2 itself (a maintainer's tool, not part of the suite).

ovdiff's detectron2-free Cascade Mask R-CNN (``ovdiff_cli/models/rcnn/``) is tested against the
arrays in ``fixture_ref.npz``. They were made by detectron2 running CutLER's ImageNet cascade
config on the deterministic random weights of :func:`weights.random_state_dict`. This script
repeats that computation, so a maintainer with detectron2 installed (it is not on the package
index, and ovdiff does not need it) can rebuild the fixture or confirm it::

    python -m tests.models.cutler_reference.make_fixture OUT.npz           # write OUT.npz
    python -m tests.models.cutler_reference.make_fixture OUT.npz --check   # ... and compare

The recipe: detectron2's ``GeneralizedRCNN`` with ``CascadeROIHeads`` (CutLER's
``CustomCascadeROIHeads`` differs only in its training losses), batch norm as plain ``BN`` (CutLER
trains with SyncBN; the eval-mode arithmetic is the same), weights loaded by
``DetectionCheckpointer`` from a ``{"model": state_dict}`` file, and detectron2's
``DefaultPredictor`` on the fixture's BGR image (it flips it to RGB and resizes the short side to
800). Besides the final detections, a forward hook on the RPN records its proposals and their
objectness logits. The output has exactly the fixture's fields:

- ``img`` uint8 [H, W, 3] BGR (copied from the stored fixture);
- ``proposals`` float32 [1000, 4] XYXY in the resized input, ``logits`` float32 [1000];
- ``boxes`` float32 [100, 4] XYXY in the original image, ``scores`` float32 [100];
- ``masks`` uint8 [100, H, ceil(W / 8)]: the pasted binary masks, ``np.packbits`` along x.

Without detectron2 the script prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.models.cutler_reference.weights import FIXTURE, random_state_dict

#: The arrays of the fixture, in the order they are written.
FIELDS = ("img", "proposals", "logits", "boxes", "scores", "masks")

#: Largest absolute difference tolerated by ``--check`` for the float arrays.
TOLERANCE = 1e-4


def detectron2_importable() -> bool:
    """Whether ``import detectron2`` would find a package (checked without importing it)."""
    return importlib.util.find_spec("detectron2") is not None


def cascade_config(weights: Path) -> Any:
    """detectron2's config for CutLER's ImageNet Cascade Mask R-CNN on CPU, loading ``weights``.

    Restates ``CutLER-ImageNet/cascade_mask_rcnn_R_50_FPN.yaml`` over its ``Base-RCNN-FPN.yaml``
    for inference, with SyncBN replaced by BN and detectron2's own cascade heads.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    model = cfg.MODEL
    model.META_ARCHITECTURE = "GeneralizedRCNN"
    model.DEVICE = "cpu"
    model.WEIGHTS = str(weights)
    model.MASK_ON = True
    model.PIXEL_MEAN = [123.675, 116.280, 103.530]
    model.PIXEL_STD = [58.395, 57.120, 57.375]

    model.BACKBONE.NAME = "build_resnet_fpn_backbone"
    model.BACKBONE.FREEZE_AT = 0
    model.RESNETS.DEPTH = 50
    model.RESNETS.NORM = "BN"
    model.RESNETS.STRIDE_IN_1X1 = False
    model.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    model.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    model.FPN.NORM = "BN"

    model.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    model.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    model.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    model.RPN.PRE_NMS_TOPK_TEST = 1000
    model.RPN.POST_NMS_TOPK_TEST = 1000
    model.RPN.NMS_THRESH = 0.65

    model.ROI_HEADS.NAME = "CascadeROIHeads"
    model.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    model.ROI_HEADS.NUM_CLASSES = 1
    model.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model.ROI_HEADS.NMS_THRESH_TEST = 0.5
    model.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    model.ROI_BOX_HEAD.NUM_FC = 2
    model.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    model.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    model.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    model.ROI_MASK_HEAD.NUM_CONV = 4
    model.ROI_MASK_HEAD.POOLER_RESOLUTION = 14

    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.freeze()
    return cfg


def run_detectron2(img: np.ndarray) -> dict[str, np.ndarray]:
    """detectron2's outputs for the BGR uint8 image ``img`` [H, W, 3], as the fixture's arrays."""
    from detectron2.engine import DefaultPredictor

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "cutler_random.pth"
        torch.save({"model": random_state_dict()}, weights)
        predictor = DefaultPredictor(cascade_config(weights))  # loads through DetectionCheckpointer

    seen: dict[str, torch.Tensor] = {}

    def keep_proposals(module: torch.nn.Module, args: Any, output: Any) -> None:
        proposals = output[0][0]  # (list[Instances], losses) → the one image
        seen["proposals"] = proposals.proposal_boxes.tensor.detach().clone()
        seen["logits"] = proposals.objectness_logits.detach().clone()

    hook = predictor.model.proposal_generator.register_forward_hook(keep_proposals)
    try:
        instances = predictor(img)["instances"].to("cpu")
    finally:
        hook.remove()

    masks = instances.pred_masks.numpy().astype(bool)
    return {
        "img": img,
        "proposals": seen["proposals"].numpy().astype(np.float32),
        "logits": seen["logits"].numpy().astype(np.float32),
        "boxes": instances.pred_boxes.tensor.numpy().astype(np.float32),
        "scores": instances.scores.numpy().astype(np.float32),
        "masks": np.packbits(masks, axis=2),
    }


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Per field: the largest absolute difference (``masks``: the number of differing pixels).

    A field whose shapes differ reads ``inf``.
    """
    out: dict[str, float] = {}
    for name in FIELDS:
        a, b = ours[name], ref[name]
        if a.shape != b.shape:
            out[name] = float("inf")
        elif name == "masks":
            width = ref["img"].shape[1]
            bits_a = np.unpackbits(a, axis=2)[:, :, :width]
            bits_b = np.unpackbits(b, axis=2)[:, :, :width]
            out[name] = float(np.count_nonzero(bits_a != bits_b))
        else:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            out[name] = float(diff.max()) if diff.size else 0.0
    return out


def agrees(differences: dict[str, float], tolerance: float = TOLERANCE) -> bool:
    """Whether every float array is within ``tolerance`` and the images and masks are identical."""
    return all(d == 0 if name in ("img", "masks") else d <= tolerance for name, d in differences.items())


def load_fixture(path: Path = FIXTURE) -> dict[str, np.ndarray]:
    """The stored fixture's arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in FIELDS}


def main(argv: list[str] | None = None) -> int:
    """Write detectron2's arrays for the fixture image to OUT; with ``--check``, also compare them.

    Returns the exit status: 0, or 1 when detectron2 is missing or ``--check`` finds a difference.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--check", action="store_true",
                        help="compare with the stored fixture_ref.npz and print the differences")
    args = parser.parse_args(argv)

    if not detectron2_importable():
        print("detectron2 is not importable here; install it to re-derive the CutLER fixture")
        return 1

    ref = load_fixture()
    ours = run_detectron2(ref["img"])
    np.savez(args.out, **{name: ours[name] for name in FIELDS})
    print(f"wrote {args.out}: " + ", ".join(f"{n} {ours[n].dtype}{list(ours[n].shape)}" for n in FIELDS))

    if args.check:
        differences = compare(ours, ref)
        for name, d in differences.items():
            label = "differing pixels" if name == "masks" else "max abs difference"
            print(f"{name:>9}: {label} {d:g}")
        if not agrees(differences):
            print("DIFFERS from the stored fixture")
            return 1
        print("matches the stored fixture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
