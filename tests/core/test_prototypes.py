"""Prototypes (docs/method.md §3.5, §4.2) against hand computations on toy features."""

from __future__ import annotations

import pytest
import torch

from ovdiff_cli.core.prototypes import Pool, build_side, distinct_rows, grid_masks, kmeans
from ovdiff_cli.core.settings import PrototypeSettings


@pytest.mark.parametrize("pixel, cell_set", [(3, True), (4, True), (2, False), (5, False)])
def test_512_to_64_keeps_a_cell_when_a_pixel_at_its_centre_is_set(pixel: int, cell_set: bool) -> None:
    k = 10
    m = torch.zeros(1, 512, 512, dtype=torch.bool)
    m[0, 8 * k + pixel, 8 * k + pixel] = True
    g = grid_masks(m, 64, 64)[0]
    assert bool(g[k, k]) is cell_set
    assert int(g.sum()) == int(cell_set)


def test_512_to_32_reads_pixels_16k_plus_7_and_8() -> None:
    m = torch.zeros(2, 512, 512, dtype=torch.bool)
    m[0, 16 * 5 + 7, 16 * 5 + 8] = True
    m[1, 16 * 5 + 6, 16 * 5 + 7] = True
    g = grid_masks(m, 32, 32)
    assert g[0, 5, 5] and int(g[0].sum()) == 1
    assert not g[1].any()


# Two 2 × 2 feature maps with D = 2 (channel 0, channel 1):
F0 = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])
F1 = torch.tensor([[[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]]])


def two_image_pools() -> tuple[Pool, Pool]:
    fg, bg = Pool(2), Pool(2)
    fg.add(0, F0, torch.tensor([[True, True], [False, False]]))   # pixels (1, 10), (2, 20)
    bg.add(0, F0, torch.tensor([[False, False], [True, False]]))  # pixel (3, 30)
    fg.add(1, F1, torch.tensor([[False, False], [False, True]]))  # pixel (8, 0)
    bg.add(1, F1, torch.zeros(2, 2, dtype=torch.bool))            # empty: no bg instance for image 1
    return fg, bg


def test_class_and_instance_prototypes_by_hand() -> None:
    fg_pool, bg_pool = two_image_pools()
    fg = build_side(fg_pool, PrototypeSettings(clusters=2))
    # instances: image 0 mean of (1,10),(2,20) = (1.5, 15); image 1 (8, 0)
    assert torch.allclose(fg.instance, torch.tensor([[1.5, 15.0], [8.0, 0.0]]))
    assert fg.instance_image.tolist() == [0, 1]
    # class: the mean of all three pooled pixels = the mask-size-weighted mean of the instances
    assert torch.allclose(fg.class_proto, torch.tensor([[11 / 3, 10.0]]))
    assert torch.allclose(fg.class_proto[0], (2 * fg.instance[0] + 1 * fg.instance[1]) / 3)
    assert fg.pooled_index.tolist() == [[0, 0, 0], [0, 0, 1], [1, 1, 1]]
    bg = build_side(bg_pool, PrototypeSettings(clusters=2))
    assert torch.allclose(bg.instance, torch.tensor([[3.0, 30.0]])) and bg.instance_image.tolist() == [0]
    assert torch.allclose(bg.class_proto, torch.tensor([[3.0, 30.0]]))
    # one distinct bg vector: one part, equal to it
    assert torch.allclose(bg.part, torch.tensor([[3.0, 30.0]])) and bg.pooled_label.tolist() == [0]


def test_parts_are_the_means_of_well_separated_groups() -> None:
    pool = Pool(2)
    f = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 1.0, 10.0, 11.0]]])  # [D=2, 1, 4]
    pool.add(0, f, torch.ones(1, 4, dtype=torch.bool))
    side = build_side(pool, PrototypeSettings(clusters=2))
    parts = torch.tensor(sorted(side.part.tolist()))
    assert torch.allclose(parts, torch.tensor([[0.0, 0.5], [10.0, 10.5]]))
    labels = side.pooled_label.tolist()
    assert labels[0] == labels[1] != labels[2] == labels[3]
    # each pixel's label is its nearest part
    assert torch.equal(torch.cdist(f[:, 0].T, side.part).argmin(dim=1), side.pooled_label)


def test_fewer_distinct_vectors_than_k_make_fewer_parts() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    centroids, labels = kmeans(x, 32)
    assert centroids.shape == (2, 2) and labels.shape == (3,)
    assert labels[0] == labels[1] != labels[2]


def test_kmeans_is_deterministic_for_a_fixed_seed() -> None:
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    a, la = kmeans(x, 5)
    b, lb = kmeans(x, 5)
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, _ = kmeans(x, 5, PrototypeSettings(kmeans_seed=1))
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_distinct_rows_counts_exactly_below_the_bound() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])
    assert distinct_rows(x, 10) == 3
    assert distinct_rows(torch.randn(100, 4), 32) >= 32


def test_an_empty_pool_gives_an_empty_side() -> None:
    side = build_side(Pool(3))
    assert side.class_proto.shape == (0, 3) and side.part.shape == (0, 3) and side.pooled_index.shape == (0, 3)
