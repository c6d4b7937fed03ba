"""CutLER's detector against detectron2, its checkpoint, and the proposer the mask stage uses.

The equality test reruns what ``tests/models/cutler_reference/fixture_ref.npz`` records: detectron2
(with CutLER's config) on the fixture image through its ``DefaultPredictor``, on the reference's
deterministic random weights (tests/models/cutler_reference/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovdiff_cli.errors import BadFile
from ovdiff_cli.models.cutler import CutlerProposer, load_cutler, resize_for_detector
from ovdiff_cli.models.rcnn.detector import CascadeMaskRCNN, load_detector, read_checkpoint
from ovdiff_cli.models.rcnn.postprocess import Detections
from ovdiff_cli.models.rcnn.roi_heads import DetectionSettings
from tests.helpers import one_line_with
from tests.models.cutler_reference.weights import FIXTURE, checkpoint_shapes


@pytest.fixture(scope="module")
def reference_model(cutler_state: dict) -> CascadeMaskRCNN:
    model = CascadeMaskRCNN()
    model.load_state_dict(cutler_state, strict=True)
    return model.eval().requires_grad_(False)


def test_the_model_has_exactly_the_checkpoints_keys_and_shapes() -> None:
    ours = {k: tuple(v.shape) for k, v in CascadeMaskRCNN().state_dict().items()}
    assert ours == checkpoint_shapes()  # 408 tensors, detectron2's names


def test_equals_detectron2_on_the_reference_fixture(reference_model: CascadeMaskRCNN) -> None:
    ref = np.load(FIXTURE)
    det, raw = reference_model.predict_bgr(ref["img"], DetectionSettings(score_threshold=0.0))
    # the RPN's 1000 proposals (800 × 1067 input) and their logits, in detectron2's order
    assert raw["proposals"].shape == (1000, 4)
    np.testing.assert_allclose(raw["proposals"].numpy(), ref["proposals"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(raw["objectness"].numpy(), ref["logits"], rtol=0, atol=1e-4)
    # the 100 detections at the original 240 × 320
    assert det.boxes.shape == (100, 4)
    np.testing.assert_allclose(det.boxes.numpy(), ref["boxes"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(det.scores.numpy(), ref["scores"], rtol=0, atol=1e-4)
    masks = np.unpackbits(ref["masks"], axis=2)[:, :, : ref["img"].shape[1]].astype(bool)
    assert det.masks.shape == masks.shape and int((det.masks.numpy() != masks).sum()) == 0


def test_a_batch_gives_each_image_what_it_gets_alone(reference_model: CascadeMaskRCNN) -> None:
    # two support images at 96² (the short side 128 keeps this quick): one batch or one at a time
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    proposer = CutlerProposer(reference_model, min_size=128)
    together = proposer.propose(images)
    alone = [proposer.propose(im[None])[0] for im in images]
    for t, a in zip(together, alone):
        assert t.masks.shape[1:] == (96, 96) and t.masks.dtype == torch.bool and len(t.masks) > 0
        assert torch.allclose(t.scores, a.scores, atol=1e-5)
        assert (t.masks != a.masks).float().mean() < 1e-3
        assert (t.scores > 0.35).all() and (t.scores[:-1] >= t.scores[1:]).all()


def test_images_of_different_sizes_are_padded_and_each_kept_in_its_own_bounds(
        reference_model: CascadeMaskRCNN) -> None:
    # 96 × 128 and 64 × 64 go through as one 96 × 128 batch; each image's boxes stay inside it
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) * 255 for h, w in ((96, 128), (64, 64))]
    batch, sizes = reference_model.batch(images)
    assert batch.shape == (2, 3, 96, 128) and sizes == [(96, 128), (64, 64)]
    assert torch.equal(batch[1, :, 64:], torch.zeros(3, 32, 128))  # zeros after normalising
    for out, (h, w) in zip(reference_model(images, DetectionSettings(score_threshold=0.0)), sizes):
        for key in ("boxes", "proposals"):
            b = out[key]
            assert len(b) > 0 and (b >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all(), key
    sized = reference_model.detect(images, [(48, 64), (32, 32)], DetectionSettings(score_threshold=0.0))
    assert [tuple(d.masks.shape[1:]) for d in sized] == [(48, 64), (32, 32)]


def test_half_precision_keeps_boxes_and_scores_in_float32(cutler_state: dict) -> None:
    model = CascadeMaskRCNN()
    model.load_state_dict(cutler_state)
    image = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255]
    full = model.eval()(image)[0]
    half = model.to(torch.bfloat16)(image)[0]  # bfloat16: the CPU's half type
    for key in ("boxes", "scores", "proposals", "objectness", "mask_probs"):
        assert half[key].dtype == torch.float32, key
    assert len(half["scores"]) > 0 and abs(float(half["scores"][0] - full["scores"][0])) < 0.05


class FakeDetector:
    """Records what it is given; returns one fixed detection per image."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[torch.Tensor], list[tuple[int, int]], DetectionSettings]] = []

    def detect(self, images: list[torch.Tensor], sizes: list[tuple[int, int]],
               settings: DetectionSettings) -> list[Detections]:
        self.calls.append((images, sizes, settings))
        return [Detections(torch.zeros(1, 4), torch.tensor([0.9]), torch.ones(1, *s, dtype=torch.bool)) for s in sizes]


def test_the_proposer_batches_images_at_800_and_passes_its_settings() -> None:
    fake = FakeDetector()
    images = torch.rand(3, 3, 512, 512)
    props = CutlerProposer(fake, score_threshold=0.5, max_detections=7).propose(images)
    (inputs, sizes, settings), = fake.calls  # one call for the batch
    assert [tuple(x.shape) for x in inputs] == [(3, 800, 800)] * 3 and sizes == [(512, 512)] * 3
    assert torch.allclose(inputs[1], resize_for_detector(images[1], 800, 1333))
    assert float(inputs[1].max()) > 1.5  # 0–255
    assert settings == DetectionSettings(score_threshold=0.5, nms=0.5, max_detections=7)
    assert len(props) == 3 and props[0].masks.shape == (1, 512, 512)


def test_inputs_are_scaled_to_255_and_resized_as_detectron2_sizes_them() -> None:
    image = torch.zeros(3, 512, 512)
    image[0] = 1.0  # red
    x = resize_for_detector(image, 800, 1333)
    assert x.shape == (3, 800, 800)
    assert x[0].min() == 255 and x[1:].max() == 0  # RGB order kept
    assert resize_for_detector(torch.rand(3, 512, 1024), 800, 1333).shape == (3, 667, 1333)
    assert resize_for_detector(torch.rand(3, 300, 200), 800, 1333).shape == (3, 1200, 800)


# -- the checkpoint as published -------------------------------------------------------------------------

def test_the_published_layout_loads_and_a_module_prefix_is_stripped(cutler_in_cache, cutler_state, tmp_path) -> None:
    model = load_cutler({"cutler_cascade_final.pth": cutler_in_cache}, torch.device("cpu"), torch.float32)
    assert isinstance(model, CascadeMaskRCNN) and not model.training
    assert torch.equal(model.roi_heads.mask_head.predictor.weight, cutler_state["roi_heads.mask_head.predictor.weight"])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"module.a.weight": torch.ones(2)}, "iteration": 5}, wrapped)
    assert list(read_checkpoint(wrapped)) == ["a.weight"]


def test_a_foreign_checkpoint_is_one_line(tmp_path) -> None:
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(BadFile) as info:
        load_detector(foreign)
    one_line_with(info.value, str(foreign), "not CutLER's cascade checkpoint", "408 of its 408 tensors missing",
                  "1 unexpected", "ovdiff models download paper")


def test_a_checkpoint_with_a_wrong_shape_is_one_line(cutler_state, tmp_path) -> None:
    state = dict(cutler_state)
    state["roi_heads.box_predictor.0.cls_score.weight"] = torch.zeros(81, 1024)  # a COCO-class head
    path = tmp_path / "coco.pth"
    torch.save({"model": state}, path)
    with pytest.raises(BadFile) as info:
        load_detector(path)
    one_line_with(info.value, "1 tensors of the wrong shape", "roi_heads.box_predictor.0.cls_score.weight",
                  "[81, 1024], not [2, 1024]")


def test_a_pickle_with_objects_or_a_truncated_file_is_refused(tmp_path) -> None:
    objects = tmp_path / "objects.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, objects)  # a pickled module: weights_only refuses to build it
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04 not a whole file")
    for path in (objects, truncated):
        with pytest.raises(BadFile) as info:
            read_checkpoint(path)
        one_line_with(info.value, str(path), "not a readable checkpoint")


@pytest.mark.weights
def test_the_published_checkpoint_loads_and_finds_objects() -> None:
    """Needs ``cutler_cascade_final.pth`` in torch's hub cache (``ovdiff models download paper``)."""
    import torch.hub
    from pathlib import Path

    path = Path(torch.hub.get_dir()) / "checkpoints" / "cutler_cascade_final.pth"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    model = load_detector(path)
    image = torch.zeros(1, 3, 512, 512)
    image[:, :, 128:384, 128:384] = 1.0  # a white square on black
    props = CutlerProposer(model).propose(image)[0]
    assert len(props.scores) > 0 and props.masks[0, 256, 256]


@pytest.mark.gpu
def test_the_proposer_on_the_gpu_in_half_precision_stays_near_float32(cutler_state: dict) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from torchvision.ops import box_iou

    model = CascadeMaskRCNN()
    model.load_state_dict(cutler_state)
    model = model.to("cuda")
    images = torch.rand(4, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    full = CutlerProposer(model).propose(images)
    inputs = [resize_for_detector(im, 800, 1333) for im in images]
    full_raw = model(inputs)
    half_raw = model.half()(inputs)
    half = CutlerProposer(model).propose(images)
    for f, h, fr, hr in zip(full, half, full_raw, half_raw):
        assert f.masks.device.type == "cpu" and f.masks.shape[1:] == (512, 512) and len(h.scores) > 0
        assert abs(float(f.scores[0] - h.scores[0])) < 0.05
        # the best fp32 box has an fp16 partner that overlaps it almost entirely
        assert float(box_iou(fr["boxes"][:1], hr["boxes"]).max()) > 0.9
