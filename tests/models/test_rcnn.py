"""CutLER's detector piece by piece, at each place where torchvision's detection models compute
something else than detectron2 (docs/method.md §3.1). Every expected value is worked out by hand
in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovdiff_cli.models.rcnn.boxes import cell_anchors, decode, grid_anchors
from ovdiff_cli.models.rcnn.postprocess import paste_masks, resize_uint8, shortest_edge_size, to_output_size
from ovdiff_cli.models.rcnn.roi_heads import CascadeROIHeads, DetectionSettings, average_scores, box_levels, pool
from ovdiff_cli.models.rcnn.rpn import ProposalSettings, select_proposals


# -- anchors: unrounded ------------------------------------------------------------------------------

def test_anchors_keep_their_fractional_sizes() -> None:
    # size 32: ratio 0.5 → w = √(1024/0.5) = 45.254834, h = 0.5·w = 22.627417; ratio 1 → 32 × 32;
    # ratio 2 → w = √512 = 22.627417, h = 45.254834. torchvision would round to ±23, ±11.
    half_w, half_h = math.sqrt(2048) / 2, math.sqrt(2048) / 4
    expected = torch.tensor([[-half_w, -half_h, half_w, half_h], [-16, -16, 16, 16],
                             [-half_h, -half_w, half_h, half_w]], dtype=torch.float32)
    cell = cell_anchors(32, (0.5, 1.0, 2.0))
    assert torch.equal(cell, expected)
    assert float(cell[0, 0]) == pytest.approx(-22.627417, abs=1e-6)


def test_grid_anchors_shift_by_the_stride_location_major() -> None:
    cell = cell_anchors(64, (0.5, 1.0, 2.0))
    anchors = grid_anchors(cell, height=2, width=3, stride=8)
    assert anchors.shape == (2 * 3 * 3, 4)
    # location (y=1, x=2) is row 1·3 + 2 = 5: anchors 15, 16, 17, shifted by (16, 8)
    assert torch.equal(anchors[16], torch.tensor([16 - 32.0, 8 - 32.0, 16 + 32.0, 8 + 32.0]))
    assert torch.equal(anchors[15], cell[0] + torch.tensor([16.0, 8.0, 16.0, 8.0]))


def test_deltas_move_the_centre_and_scale_the_size() -> None:
    box = torch.tensor([[100.0, 100.0, 200.0, 300.0]])  # centre (150, 200), 100 × 200
    # weights (10, 10, 5, 5): dx = 1 → 0.1 · 100 = +10; dw = 5·ln 2 → width × 2
    out = decode(torch.tensor([[1.0, 0.0, 5 * math.log(2), 0.0]]), box, (10.0, 10.0, 5.0, 5.0))
    assert out.tolist()[0] == pytest.approx([60.0, 100.0, 260.0, 300.0], abs=1e-4)
    # a huge dw is clamped at log(1000/16): width 100 · 62.5 = 6250
    out = decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), box, (1.0, 1.0, 1.0, 1.0))
    assert float(out[0, 2] - out[0, 0]) == pytest.approx(6250.0, rel=1e-5)


# -- RPN: top-k and NMS on the logits ----------------------------------------------------------------

def test_proposals_are_ranked_by_logits_that_a_sigmoid_would_tie() -> None:
    # in float32 the sigmoid of 20 and of 25 are both exactly 1.0, so only the logits order them
    logits = torch.tensor([[20.0, 25.0, 3.0]])
    assert torch.sigmoid(logits)[0, 0] == torch.sigmoid(logits)[0, 1] == 1.0
    boxes = torch.tensor([[[10.0, 10.0, 50.0, 50.0], [11.0, 11.0, 51.0, 51.0], [200.0, 200.0, 240.0, 240.0]]])
    (kept, scores), = select_proposals([boxes], [logits], [(300, 300)], ProposalSettings())
    # the two first overlap (IoU 0.905 > 0.65): the logit-25 box wins; raw logits come back
    assert kept.tolist() == [[11.0, 11.0, 51.0, 51.0], [200.0, 200.0, 240.0, 240.0]]
    assert scores.tolist() == [25.0, 3.0]
    (kept, scores), = select_proposals([boxes], [logits], [(300, 300)], ProposalSettings(pre_nms_topk=1))
    assert scores.tolist() == [25.0]


def test_proposals_are_clipped_and_empty_ones_dropped_per_level() -> None:
    level0 = torch.tensor([[[-5.0, 10.0, 40.0, 320.0], [350.0, 0.0, 400.0, 50.0]]])  # 2nd: outside → empty
    level1 = torch.tensor([[[0.0, 12.0, 40.0, 300.0]]])  # overlaps level 0's first, but NMS is per level
    out, = select_proposals([level0, level1], [torch.tensor([[2.0, 9.0]]), torch.tensor([[1.0]])],
                            [(300, 300)], ProposalSettings())
    assert out[0].tolist() == [[0.0, 10.0, 40.0, 300.0], [0.0, 12.0, 40.0, 300.0]]
    assert out[1].tolist() == [2.0, 1.0]


# -- ROIAlign: detectron2's level mapping, aligned=True ------------------------------------------------

def square(side: float, x0: float = 0.0) -> list[float]:
    return [x0, 0.0, x0 + side, side]


def test_boxes_pool_from_detectron2s_levels() -> None:
    # level = floor(4 + log2(√area / 224 + 1e-8)), clamped to 2 … 5, minus 2:
    # 224 → 4 → p4 (2); 223 → 3.99 → p3 (1); 112 → 3 (1); 111 → 2.99 → p2 (0); 10 → p2 (0);
    # 448 → 5 (3); 1000 → 6.16, clamped to 5 (3)
    boxes = torch.tensor([square(s) for s in (224, 223, 112, 111, 10, 448, 1000)])
    assert box_levels(boxes).tolist() == [2, 1, 1, 0, 0, 3, 3]


def test_roi_align_samples_pixel_centres_on_the_chosen_level() -> None:
    # a 112 × 112 box at (16, 16) pools from p3 (stride 8): in p3 cells it spans 2 … 16, shifted by
    # −0.5 (aligned): 1.5 … 15.5, seven bins of 2 with 2 × 2 samples; on a map whose value is its
    # column index, bin k averages columns 2 + 2k and 3 + 2k: 2.5, 4.5, …, 14.5 (aligned=False: 3, 5, …)
    columns = torch.arange(32.0).expand(1, 1, 32, 32)
    features = [torch.full((1, 1, 64, 64), -1.0), columns, torch.full((1, 1, 16, 16), -2.0),
                torch.full((1, 1, 8, 8), -3.0)]
    out = pool(features, [torch.tensor([[16.0, 16.0, 128.0, 128.0]])], 7)
    assert out.shape == (1, 1, 7, 7)
    assert torch.allclose(out[0, 0], torch.tensor([2.5 + 2 * k for k in range(7)]).expand(7, 7))


# -- cascade: mean of the three stages' scores, boxes of the last ------------------------------------------

def test_cascade_averages_the_stages_scores_and_refines_boxes_stage_by_stage() -> None:
    heads = CascadeROIHeads()
    for p in heads.parameters():
        torch.nn.init.zeros_(p)  # every stage sees zero features: its outputs are its biases
    # object/background logits: (ln 3, 0) → softmax 0.75 in stages 1 and 2, (0, 0) → 0.5 in stage 3;
    # mean 2/3 (stage 3 alone would say 0.5)
    heads.box_predictor[0].cls_score.bias.data = torch.tensor([math.log(3), 0.0])
    heads.box_predictor[1].cls_score.bias.data = torch.tensor([math.log(3), 0.0])
    # stage 2 doubles the width (dw = 10 · ln 2 with weight 10); stage 3 moves the centre by 0.1 of
    # the (doubled) width (dx = 3 with weight 30): [100, 100, 200, 300] → [50, 100, 250, 300] → [70, …, 270, …]
    heads.box_predictor[1].bbox_pred.bias.data = torch.tensor([0.0, 0.0, 10 * math.log(2), 0.0])
    heads.box_predictor[2].bbox_pred.bias.data = torch.tensor([3.0, 0.0, 0.0, 0.0])
    features = {f"p{k}": torch.zeros(1, 256, 800 // 2**k, 800 // 2**k) for k in range(2, 6)}
    (boxes, scores, masks), = heads(features, [torch.tensor([[100.0, 100.0, 200.0, 300.0]])], [(800, 800)],
                                    DetectionSettings(score_threshold=0.0))
    assert boxes.tolist()[0] == pytest.approx([70.0, 100.0, 270.0, 300.0], abs=1e-4)
    assert scores.tolist() == pytest.approx([2 / 3])
    assert masks.shape == (1, 28, 28) and torch.equal(masks, torch.full((1, 28, 28), 0.5))  # sigmoid(0)
    # above the threshold before NMS: 2/3 is not above 0.7
    (boxes, scores, masks), = heads(features, [torch.tensor([[100.0, 100.0, 200.0, 300.0]])], [(800, 800)],
                                    DetectionSettings(score_threshold=0.7))
    assert len(boxes) == len(scores) == len(masks) == 0


def test_stage_scores_are_the_mean_of_the_three_stages() -> None:
    probs = [torch.tensor([[0.1, 0.9]]), torch.tensor([[0.2, 0.8]]), torch.tensor([[0.4, 0.6]])]
    # 0.1 + 0.2 + 0.4 = 0.7 and 0.9 + 0.8 + 0.6 = 2.3, over three stages
    assert average_scores(probs)[0].tolist() == pytest.approx([0.7 / 3, 2.3 / 3])


# -- pasting: grid_sample over the real-valued box -----------------------------------------------------------

def hand_paste(h: int, w: int, box: tuple[float, float, float, float], m: int = 28) -> torch.Tensor:
    """An all-ones m × m map pasted into ``box``, worked out plainly in float64.

    Pixel centre c reads the map at p = (c − b0) / (b1 − b0) · m − 0.5 along an axis; with zeros
    outside the map, bilinear weights make an all-ones map read clamp(min(p + 1, m − p), 0, 1)
    there, and a pixel is f(p_x) · f(p_y), kept when ≥ 0.5.
    """
    def f(n: int, b0: float, b1: float) -> torch.Tensor:
        p = (torch.arange(n, dtype=torch.float64) + 0.5 - b0) / (b1 - b0) * m - 0.5
        return torch.minimum(p + 1, m - p).clamp(0, 1)

    x0, y0, x1, y1 = box
    return f(h, y0, y1)[:, None] * f(w, x0, x1)[None, :]


@pytest.mark.parametrize("box", [(0.0, 0.0, 256.0, 512.0), (10.4, 20.7, 50.2, 60.9), (3.3, 1.1, 9.9, 5.6)])
def test_masks_are_pasted_over_the_real_valued_box(box) -> None:
    expected = hand_paste(64, 512, box) if box[2] > 60 else hand_paste(64, 64, box)
    size = tuple(expected.shape)
    assert (expected - 0.5).abs().min() > 1e-4  # no pixel is a float rounding away from the threshold
    out = paste_masks(torch.ones(1, 28, 28), torch.tensor([box]), size)[0]
    assert torch.equal(out, expected >= 0.5)
    if box == (10.4, 20.7, 50.2, 60.9):  # pasting into the box rounded to integers would move its edges
        rounded = hand_paste(*size, (10.0, 21.0, 50.0, 61.0)) >= 0.5
        assert not torch.equal(out, rounded)


def test_a_mask_is_sampled_inside_its_box() -> None:
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0  # the left half of the box
    out = paste_masks(probs, torch.tensor([[100.0, 50.0, 300.0, 150.0]]), (200, 400))[0]
    ys, xs = torch.nonzero(out, as_tuple=True)
    assert (int(ys.min()), int(ys.max())) == (50, 149)
    assert (int(xs.min()), int(xs.max())) == (100, 199)  # 100 + 200/2 − 1
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (4, 4)).shape == (0, 4, 4)


def test_detections_are_scaled_clipped_and_empty_boxes_dropped() -> None:
    boxes = torch.tensor([[0.0, 0.0, 400.0, 800.0], [900.0, 0.0, 1000.0, 800.0], [400.0, -20.0, 900.0, 400.0]])
    det = to_output_size(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.ones(3, 28, 28), (800, 800), (512, 512))
    # × 512/800 = 0.64; the second lies right of the image (empty once clipped); the third is clipped
    assert torch.allclose(det.boxes, torch.tensor([[0.0, 0, 256, 512], [256, 0, 512, 256]]))
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])
    assert torch.equal(det.masks[0], hand_paste(512, 512, (0, 0, 256, 512)) >= 0.5)


# -- detectron2's predictor resize -----------------------------------------------------------------------

def test_the_predictor_resize_rounds_sizes_half_up() -> None:
    assert shortest_edge_size(240, 320, 800, 1333) == (800, 1067)  # 1066.67 → 1067 (torchvision: 1066)
    assert shortest_edge_size(512, 1024, 800, 1333) == (667, 1333)  # 800 × 1600 capped: 666.5 → 667
    assert shortest_edge_size(512, 512, 800, 1333) == (800, 800)
    # capped in two steps as detectron2 does: 91 → 800 × 1600 → × 1333/1600 → 666.4999… → 666
    # (91 · 1333/182 in one step is 666.5 → 667)
    assert shortest_edge_size(91, 182, 800, 1333) == (666, 1333)
    assert shortest_edge_size(182, 91, 800, 1333) == (1333, 666)


def test_the_predictor_resize_is_pil_bilinear_on_8_bit_values() -> None:
    # one row [0, 255] → four columns: output x samples input (x + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75,
    # 1.25 → 0, 63.75, 191.25, 255, rounded to 8 bits: 0, 64, 191, 255 (a float resize keeps 63.75)
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[0, 1] = 255
    out = resize_uint8(image, short=2, max_size=100)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 4)
    assert out[0].tolist() == [[0.0, 64.0, 191.0, 255.0]] * 2
