"""CutLER's Cascade Mask R-CNN as one module, and its checkpoint (docs/method.md §3.1).

The module's parameter names are the checkpoint's (detectron2's), so the published
``cutler_cascade_final.pth`` loads without conversion: its ``{"model": …}`` wrapper is unwrapped,
a ``module.`` prefix (a checkpoint saved from a data-parallel wrapper) is stripped, and the keys
and shapes must match exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovdiff_cli.errors import BadFile
from ovdiff_cli.models.rcnn.backbone import ResNetFPN
from ovdiff_cli.models.rcnn.postprocess import Detections, resize_uint8, to_output_size
from ovdiff_cli.models.rcnn.roi_heads import CascadeROIHeads, DetectionSettings
from ovdiff_cli.models.rcnn.rpn import RPN

#: ImageNet statistics in 0–255, RGB (CutLER's config).
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)


class CascadeMaskRCNN(nn.Module):
    """Images in 0–255 RGB → per image boxes, scores and 28 × 28 mask probabilities at the input's size.

    :meth:`forward` takes a list of float [3, H_i, W_i] tensors: each is normalised, they are
    padded with zeros (after normalisation) to a common size divisible by 32, and go through the
    backbone, the RPN and the cascade heads as one batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNetFPN()
        self.proposal_generator = RPN()
        self.roi_heads = CascadeROIHeads()
        self.eval()  # inference only: batch norm always uses the running statistics

    @property
    def device(self) -> torch.device:
        return self.backbone.bottom_up.stem.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.bottom_up.stem.conv1.weight.dtype

    def batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalised, zero-padded batch [B, 3, H, W] (network dtype) and each image's (height, width)."""
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        d = self.backbone.size_divisibility
        h = -(-max(s[0] for s in sizes) // d) * d
        w = -(-max(s[1] for s in sizes) // d) * d
        # normalised in float32 whatever the network's dtype: 123.675 is 123.6875 in half precision
        mean = torch.tensor(PIXEL_MEAN, device=self.device).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD, device=self.device).view(-1, 1, 1)
        padded = []
        for im, (ih, iw) in zip(images, sizes):
            x = (im.to(self.device, torch.float32) - mean) / std
            padded.append(F.pad(x, [0, w - iw, 0, h - ih], value=0.0))
        return torch.stack(padded).to(self.dtype), sizes

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor], settings: DetectionSettings = DetectionSettings(),
                ) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` [D, 4] and ``scores`` [D] (float32, best first), ``mask_probs``
        [D, 28, 28], and the RPN's ``proposals`` [P, 4] with their ``objectness`` logits [P]."""
        if self.training:
            raise RuntimeError("CascadeMaskRCNN is inference-only; call .eval() before running it")
        x, sizes = self.batch(images)
        features = self.backbone(x)
        proposals = self.proposal_generator(features, sizes)
        found = self.roi_heads(features, [p for p, _ in proposals], sizes, settings)
        return [{"boxes": b, "scores": s, "mask_probs": m, "proposals": p, "objectness": o}
                for (b, s, m), (p, o) in zip(found, proposals)]

    def detect(self, images: list[torch.Tensor], sizes: list[tuple[int, int]],
               settings: DetectionSettings = DetectionSettings()) -> list[Detections]:
        """:meth:`forward`, then each image's detections scaled to its entry of ``sizes`` with
        masks pasted there."""
        return [to_output_size(r["boxes"], r["scores"], r["mask_probs"], tuple(im.shape[-2:]), size)
                for r, im, size in zip(self(images, settings), images, sizes)]

    def predict_bgr(self, image: np.ndarray, settings: DetectionSettings = DetectionSettings(),
                    ) -> tuple[Detections, dict[str, torch.Tensor]]:
        """detectron2's ``DefaultPredictor`` on a BGR uint8 array [H, W, 3]: flipped to RGB, resized
        by :func:`~ovdiff_cli.models.rcnn.postprocess.resize_uint8`, detections at [H, W]; also the
        raw outputs of :meth:`forward`."""
        x = resize_uint8(image[:, :, ::-1])
        raw = self([x], settings)[0]
        det = to_output_size(raw["boxes"], raw["scores"], raw["mask_probs"], tuple(x.shape[-2:]), image.shape[:2])
        return det, raw


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a detectron2 checkpoint file: unwrapped from ``{"model": …}``, ``module.``
    prefixes stripped. Loaded with ``weights_only=True`` (no code runs from the file)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated download, a pickle with objects, not a torch file at all
        raise BadFile(path, f"is not a readable checkpoint ({' '.join(str(e).split())[:120]})",
                      fix="delete it and run `ovdiff models download paper`") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadFile(path, "holds no state dict of tensors", fix="use CutLER's cutler_cascade_final.pth")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_detector(path: Path, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> CascadeMaskRCNN:
    """The detector with the weights of ``path``, in eval mode on ``device`` in ``dtype``.

    Keys and shapes must be exactly the model's; anything else is a one-line error naming the file.
    """
    state = read_checkpoint(path)
    model = CascadeMaskRCNN()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        first = (missing or extra)[0]
        raise BadFile(path, f"is not CutLER's cascade checkpoint: {len(missing)} of its {len(expected)} tensors "
                      f"missing, {len(extra)} unexpected (first: {first})",
                      fix="use cutler_cascade_final.pth from `ovdiff models download paper`")
    wrong = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise BadFile(path, f"has {len(wrong)} tensors of the wrong shape (first: {wrong[0]} is "
                      f"{list(state[wrong[0]].shape)}, not {list(expected[wrong[0]].shape)})",
                      fix="use cutler_cascade_final.pth from `ovdiff models download paper`")
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
