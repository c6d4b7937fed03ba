"""Prototypes from dense features and masks (docs/method.md §3.5, §4.2) as pure functions.

Shapes: support masks [N, S, S] bool; features of one image [D, h, w] float32; pooled pixel
features [P, D] with their (n, y, x) index [P, 3].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovdiff_cli.core.settings import PrototypeSettings


def grid_masks(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, S, S] bool → [N, h, w] bool: bilinear (align_corners=False, no antialias), cells > 0.

    For 512 → 64 a cell is set when any of the 2 × 2 pixels at its centre (8k+3, 8k+4) is set.
    """
    if masks.shape[-2:] == (h, w):
        return masks.bool()
    small = F.interpolate(masks[:, None].float(), size=(h, w), mode="bilinear", align_corners=False,
                          antialias=False)[:, 0]
    return small > 0


@dataclass
class Pool:
    """Pixel features gathered for one side of one class, image by image, on the features' device.

    They stay there (4 GB for SD's foreground at N = 32) until the side is built: only prototypes,
    the pooled index and labels go back to the CPU (docs/method.md §4.2).
    """

    dim: int

    def __post_init__(self) -> None:
        self.instances: list[torch.Tensor] = []
        self.instance_image: list[int] = []
        self.pixels: list[torch.Tensor] = []
        self.index: list[torch.Tensor] = []
        self.sums: list[torch.Tensor] = []

    def add(self, n: int, features: torch.Tensor, mask: torch.Tensor) -> None:
        """Pool image ``n``'s features [D, h, w] over ``mask`` [h, w]; an empty mask adds nothing."""
        mask = mask.to(features.device)
        if not bool(mask.any()):
            return
        ys, xs = torch.nonzero(mask, as_tuple=True)
        px = features[:, ys, xs].T.float()                          # [p, D]
        self.pixels.append(px)
        self.index.append(torch.stack([torch.full_like(ys, n), ys, xs], dim=1))
        wide = px.double()
        self.sums.append(wide.sum(dim=0))                           # for the class prototype, Eq. 2
        self.instances.append(wide.mean(dim=0).float())
        self.instance_image.append(n)

    def __len__(self) -> int:
        return len(self.instances)


@dataclass(frozen=True)
class Side:
    """One side (fg or bg) of a class's prototypes, D channels, raw (not normalised).

    class_proto [C, D] with C ∈ {0, 1}; instance [I, D] with the support image of each,
    instance_image [I]; part [K, D]; pooled_index [P, 3] (n, y, x) on the support grid and
    pooled_label [P] in 0..K-1 (empty when K = 0).
    """

    class_proto: torch.Tensor
    instance: torch.Tensor
    instance_image: torch.Tensor
    part: torch.Tensor
    pooled_index: torch.Tensor
    pooled_label: torch.Tensor

    @classmethod
    def empty(cls, dim: int) -> Side:
        """A side without prototypes: no support image had a pixel on it."""
        z = torch.zeros(0, dim)
        i = torch.zeros(0, dtype=torch.int64)
        return cls(z, z.clone(), i, z.clone(), torch.zeros(0, 3, dtype=torch.int64), i.clone())

    def count(self) -> int:
        """Prototypes of all kinds: C + I + K."""
        return self.class_proto.shape[0] + self.instance.shape[0] + self.part.shape[0]


@dataclass(frozen=True)
class Prototypes:
    """A class's prototypes for one extractor; ``meta`` names the class, extractor and settings."""

    fg: Side
    bg: Side
    meta: dict[str, Any]

    @property
    def class_name(self) -> str:
        return str(self.meta["class"])

    @property
    def extractor(self) -> str:
        return str(self.meta["extractor"])

    @property
    def dim(self) -> int:
        return int(self.fg.class_proto.shape[1])


def kmeans(x: torch.Tensor, k: int,
           settings: PrototypeSettings = PrototypeSettings()) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of x [P, D] → centroids float32 [K', D] and labels [P], on x's device.

    K' = min(k, number of distinct rows): fewer distinct vectors than clusters cannot make k parts.
    ``settings.kmeans`` picks the implementation (docs/method.md §4.2): ``sklearn`` (on the CPU)
    or ``torch`` (on x's device); ``auto`` means torch for x on an accelerator, else scikit-learn.
    """
    if x.shape[0] == 0 or k <= 0:
        return x.new_zeros(0, x.shape[1]), torch.zeros(0, dtype=torch.long, device=x.device)
    k_eff = min(k, distinct_rows(x, k))
    if settings.resolved(x.device.type).kmeans == "torch":
        from ovdiff_cli.core.kmeans import kmeans_torch

        return kmeans_torch(x.float(), k_eff, max_iter=settings.kmeans_max_iter, tol=settings.kmeans_tol,
                            seed=settings.kmeans_seed)
    centroids, labels = _kmeans_sklearn(x.float().cpu(), k_eff, settings)
    return centroids.to(x.device), labels.to(x.device)


def _kmeans_sklearn(x: torch.Tensor, k: int, settings: PrototypeSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's KMeans (k-means++, one run, Lloyd, tol relative to the mean variance, fixed
    random state) of x [P, D] on the CPU, k ≤ distinct rows → centroids float32 [k, D], labels [P]."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=settings.kmeans_max_iter,
                tol=settings.kmeans_tol, random_state=settings.kmeans_seed, algorithm="lloyd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on ties; the result is still defined
        labels = km.fit_predict(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return torch.from_numpy(km.cluster_centers_.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def distinct_rows(x: torch.Tensor, enough: int, chunk_rows: int = 16384) -> int:
    """How many distinct rows x [P, D] has, counted exactly up to ``enough``.

    Distinct values of a random projection are a lower bound (equal rows project alike), cheap
    even for 40k × 7680 pooled SD features; only when that bound is below ``enough`` are the
    rows compared exactly. The projection is float64, taken ``chunk_rows`` rows at a time so that
    no float64 copy of x is made whole (8 GB for SD's foreground at N = 32 on a GPU).
    """
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(x.shape[1], dtype=torch.float64, generator=g).to(x.device)
    projection = torch.cat([part.double() @ direction for part in x.split(chunk_rows)])
    lower = int(torch.unique(projection).numel())
    if lower >= enough:
        return lower
    return int(torch.unique(x.cpu(), dim=0).shape[0])  # rare; on the CPU, not beside the features on a GPU


def build_side(pool: Pool, settings: PrototypeSettings = PrototypeSettings()) -> Side:
    """Eq. 2 and 3: the class prototype (mean of all pooled pixels), one instance prototype per
    image, K parts; all raw (not normalised), computed where the pool is and returned on the CPU.
    An empty pool gives an empty side. The pool's pixels are consumed (moved into one tensor)."""
    if not pool.pixels:
        return Side.empty(pool.dim)
    pixels = torch.cat(pool.pixels)
    pool.pixels.clear()  # else two copies: 4 GB each for SD's foreground at N = 32, on the GPU
    # the mean of all pixels in float64 from the per-image sums: no float64 copy of every pixel
    class_proto = (torch.stack(pool.sums).sum(dim=0, keepdim=True) / pixels.shape[0]).float()
    part, labels = kmeans(pixels, settings.clusters, settings)
    return Side(class_proto.cpu(), torch.stack(pool.instances).cpu(),
                torch.tensor(pool.instance_image, dtype=torch.long), part.cpu(), torch.cat(pool.index).cpu(),
                labels.cpu())
