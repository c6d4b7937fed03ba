"""Everything around CutLER's detector, with a fake detector: input scaling, score filter and cap,
boxes back to the image, masks pasted at the image's size. And the real detectron2 path when
detectron2 is importable."""

from __future__ import annotations

import pytest
import torch

from ovdiff_cli.models.cutler import CutlerProposer, paste_masks, resize_for_detector


def test_inputs_are_scaled_to_255_and_resized_as_detectron2_does() -> None:
    image = torch.zeros(3, 512, 512)
    image[0] = 1.0  # red
    x = resize_for_detector(image, 800, 1333)
    assert x.shape == (3, 800, 800)
    assert x[0].min() == 255 and x[1:].max() == 0  # RGB order kept
    # short side 800 would make the long side 1600 > 1333: scale = 1333/1024 → 512·1.3018 = 666.5 → 667
    assert resize_for_detector(torch.rand(3, 512, 1024), 800, 1333).shape == (3, 667, 1333)
    assert resize_for_detector(torch.rand(3, 300, 200), 800, 1333).shape == (3, 1200, 800)


def box_region(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """An all-ones 28 × 28 map pasted in the box [x0, x1) × [y0, y1), written out plainly.

    Pixel centre c samples the map at p = (c − b0)/(b1 − b0) · 28 − 0.5 along each axis; with zeros
    outside the map, bilinear weights make an all-ones map read f(p) = clamp(min(p + 1, 28 − p), 0, 1),
    and a pixel reads f(p_x) · f(p_y), kept when ≥ 0.5 (detectron2's rule).
    """
    def f(n: int, b0: int, b1: int) -> torch.Tensor:
        p = (torch.arange(n, dtype=torch.float64) + 0.5 - b0) / (b1 - b0) * 28 - 0.5
        return torch.minimum(p + 1, 28 - p).clamp(0, 1)

    return f(h, y0, y1)[:, None] * f(w, x0, x1)[None, :] >= 0.5


def test_the_hand_rule_for_pasting() -> None:
    m = box_region(512, 512, 0, 512, 0, 256)
    # first column: 0.555 of the map (kept) mid-height; the column after the box: 0.445 (dropped);
    # the corner pixel: 0.555 · 0.527 = 0.29 (dropped)
    assert m[256, 0] and not m[256, 256] and not m[0, 0] and m[256, 255]
    assert not m[:, 256:].any()


def test_a_box_over_the_left_half_pastes_the_left_half() -> None:
    out = paste_masks(torch.ones(1, 28, 28), torch.tensor([[0.0, 0.0, 256.0, 512.0]]), (512, 512))
    assert out.dtype == torch.bool and out.shape == (1, 512, 512)
    assert torch.equal(out[0], box_region(512, 512, 0, 512, 0, 256))


def test_a_mask_is_sampled_inside_its_box() -> None:
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0  # the left half of the box
    out = paste_masks(probs, torch.tensor([[100.0, 50.0, 300.0, 150.0]]), (200, 400))[0]
    ys, xs = torch.nonzero(out, as_tuple=True)
    assert (int(ys.min()), int(ys.max())) == (50, 149)
    assert (int(xs.min()), int(xs.max())) == (100, 199)  # 100 + 200/2 − 1
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (4, 4)).shape == (0, 4, 4)


class FakeDetector:
    """Records what it is given; returns fixed detections at the input's (800²) resolution."""

    def __init__(self) -> None:
        self.inputs: list = []

    def __call__(self, inputs):
        self.inputs.append(inputs)
        ones = torch.ones(28, 28)
        boxes = torch.tensor([[0.0, 0.0, 400.0, 800.0],       # left half, score 0.9
                              [400.0, 0.0, 800.0, 800.0],     # right half, 0.3: below 0.35
                              [0.0, 0.0, 800.0, 400.0],       # top half, 0.5
                              [900.0, 0.0, 1000.0, 800.0],    # outside the image: empty after clipping
                              [0.0, 400.0, 800.0, 800.0]])    # bottom half, 0.36
        scores = torch.tensor([0.9, 0.3, 0.5, 0.8, 0.36])
        return [{"boxes": boxes, "scores": scores, "masks": ones.expand(5, 28, 28)} for _ in inputs]


def test_proposals_come_back_filtered_capped_and_at_the_images_size() -> None:
    fake = FakeDetector()
    images = torch.rand(2, 3, 512, 512)
    props = CutlerProposer(fake).propose(images)
    (batch,) = fake.inputs
    assert len(batch) == 2 and batch[0]["image"].shape == (3, 800, 800)
    assert torch.allclose(batch[1]["image"], resize_for_detector(images[1], 800, 1333))
    assert len(props) == 2
    p = props[0]
    assert p.scores.tolist() == pytest.approx([0.9, 0.5, 0.36])  # > 0.35, detector order, empty box gone
    assert p.masks.shape == (3, 512, 512)
    # boxes scaled by 512/800 back to the image, then pasted
    left, top, bottom = p.masks
    assert torch.equal(left, box_region(512, 512, 0, 512, 0, 256))
    assert torch.equal(top, box_region(512, 512, 0, 256, 0, 512))
    assert torch.equal(bottom, box_region(512, 512, 256, 512, 0, 512))

    capped = CutlerProposer(fake, max_detections=2).propose(images[:1])[0]
    assert capped.scores.tolist() == pytest.approx([0.9, 0.5])
    strict = CutlerProposer(fake, score_threshold=0.6).propose(images[:1])[0]
    assert strict.scores.tolist() == pytest.approx([0.9])


def test_detectron2_builds_cutlers_architecture_and_proposes() -> None:
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model

    from ovdiff_cli.models.cutler import as_detector, cutler_config

    model = build_model(cutler_config("cpu", score_threshold=0.0)).eval()  # random weights
    props = CutlerProposer(as_detector(model, "cpu"), score_threshold=0.0).propose(torch.rand(1, 3, 64, 64))
    assert props[0].masks.shape[1:] == (64, 64) and props[0].masks.dtype == torch.bool
    assert props[0].masks.shape[0] == props[0].scores.shape[0] <= 100
