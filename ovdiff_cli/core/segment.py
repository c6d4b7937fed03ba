"""Dense prediction by nearest prototype (docs/method.md §7.3–7.6) and the explanation record (§9).

Shapes: C = classes of the vocabulary; score maps have C + 1 channels, channel 0 = background.
Bank rows arrive L2-normalised with their owner label (1..C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovdiff_cli.core.settings import PAMR_DILATIONS, SegmentSettings

EPS = 1e-6


@dataclass(frozen=True)
class BankRows:
    """One bank side on the device: unit vectors [M, D] and owner labels [M]."""

    vectors: torch.Tensor
    owner: torch.Tensor


def class_scores(features: torch.Tensor, fg: BankRows, bg: BankRows, active: torch.Tensor,
                 background_owners: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 on one window: features [D, h, w] → scores [C+1, h, w] and winning rows [C+1, h, w].

    S_c = max over class c's fg rows of the cosine (c active, else −1); S_0 = max over the bg rows
    whose owner is in ``background_owners`` (default: the active classes), −1 when there is none.
    Rows index the fg bank for channels 1..C and the bg bank for channel 0; −1 where no row.
    active: bool [C+1] (index 0 ignored).
    """
    d, h, w = features.shape
    n = active.numel()
    f = features.reshape(d, h * w).T.float()
    f = f / f.norm(dim=1, keepdim=True).clamp_min(EPS)                       # [P, D]
    scores = torch.full((n, h * w), -1.0, device=f.device)
    rows = torch.full((n, h * w), -1, dtype=torch.long, device=f.device)
    if fg.vectors.shape[0]:
        sims = f @ fg.vectors.T.float()                                      # [P, M]
        for c in torch.nonzero(active[1:]).flatten().tolist():
            idx = torch.nonzero(fg.owner == c + 1).flatten()
            if idx.numel():
                best, arg = sims[:, idx].max(dim=1)
                scores[c + 1], rows[c + 1] = best, idx[arg]
    owners = background_owners if background_owners is not None else torch.nonzero(active).flatten()
    if bg.vectors.shape[0]:
        idx = torch.nonzero(torch.isin(bg.owner, owners.to(bg.owner.device))).flatten()
        if idx.numel():
            best, arg = (f @ bg.vectors[idx].T.float()).max(dim=1)
            scores[0], rows[0] = best, idx[arg]
    return scores.view(n, h, w), rows.view(n, h, w)


class Accumulator:
    """Σ and K of docs/method.md §7.3–7.4 over an H × W image."""

    def __init__(self, n: int, h: int, w: int, device: torch.device | str) -> None:
        self.sum = torch.zeros(n, h, w, device=device)
        self.count = torch.zeros(h, w, device=device)

    def add(self, scores: torch.Tensor, window: tuple[int, int, int, int]) -> None:
        """scores [C+1, h, w] of the window (y0, y1, x0, x1): bilinear to its size, clamped, summed."""
        y0, y1, x0, x1 = window
        up = F.interpolate(scores[None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0]
        self.sum[:, y0:y1, x0:x1] += up.clamp(-1, 1)
        self.count[y0:y1, x0:x1] += 1

    def mean(self) -> torch.Tensor:
        """S̄ = Σ / K: [C+1, H, W]."""
        if bool((self.count == 0).any()):
            raise ValueError("some pixels are covered by no window")
        return self.sum / self.count


class BestRows:
    """For one extractor (docs/method.md §9): per class and pixel, the best (similarity, bank row) over
    the windows covering it; grid cells map to pixels by nearest."""

    def __init__(self, n: int, h: int, w: int, device: torch.device | str) -> None:
        self.sim = torch.full((n, h, w), -2.0, device=device)
        self.row = torch.full((n, h, w), -1, dtype=torch.long, device=device)

    def add(self, scores: torch.Tensor, rows: torch.Tensor, window: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = window
        size = (y1 - y0, x1 - x0)
        sim = F.interpolate(scores[None], size=size, mode="nearest")[0]
        row = F.interpolate(rows[None].float(), size=size, mode="nearest")[0].long()
        best_sim, best_row = self.sim[:, y0:y1, x0:x1], self.row[:, y0:y1, x0:x1]
        better = (sim > best_sim) & (row >= 0)
        best_sim[better] = sim[better]
        best_row[better] = row[better]

    def of(self, labels: torch.Tensor, floored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The row and similarity of each pixel's label [H, W]; −1 (and NaN) where ``floored``:
        background that won only because every score was ≤ 0."""
        row = self.row.gather(0, labels[None]).squeeze(0)
        sim = self.sim.gather(0, labels[None]).squeeze(0)
        return row.masked_fill(floored, -1), sim.masked_fill(floored, float("nan"))


def decide(scores: torch.Tensor, settings: SegmentSettings = SegmentSettings(), bg_zero: bool = False) -> torch.Tensor:
    """Labels [H, W] from scores [C+1, H, W] (docs/method.md §7.6): scores ≤ floor → 0, argmax with ties
    to the lowest index, so background wins ties and all-≤-0 pixels are background. A bank without
    bg prototypes (``bg_zero``): S_0 = 0 and class scores ≤ bg_threshold → 0. Without background
    (the no-background protocol): argmax over the classes alone, no floor."""
    if not settings.background:
        return scores[1:].argmax(dim=0) + 1
    s = scores.clone()
    if bg_zero:
        s[0] = 0
        cls = s[1:]
        cls[cls <= settings.bg_threshold] = 0
    s[s <= settings.score_floor] = 0
    return s.argmax(dim=0)


def upsample(scores: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[C+1, H, W] → [C+1, h, w], bilinear, align_corners=False."""
    if scores.shape[-2:] == (h, w):
        return scores
    return F.interpolate(scores[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def _shifted(x: torch.Tensor, d: int) -> list[torch.Tensor]:
    """The 8 neighbours at dilation d of every pixel of [C, H, W] (replicate padding), δ ≠ 0 in row-major order."""
    h, w = x.shape[-2:]
    p = F.pad(x[None], (d, d, d, d), mode="replicate")[0]
    return [p[:, d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def pamr_affinity(image: torch.Tensor, dilations: tuple[int, ...] = PAMR_DILATIONS) -> torch.Tensor:
    """α [8·len(dilations), H, W] of docs/method.md §7.5 for image [3, H, W] (float, 0–255)."""
    image = image.float()
    neigh = [torch.stack(_shifted(image, d), dim=1) for d in dilations]          # each [3, 8, H, W]
    centre = image[:, None]
    values = torch.cat([torch.cat([centre, n], dim=1) for n in neigh], dim=1)    # [3, 54, H, W]
    sigma = values.std(dim=1, unbiased=True)                                     # [3, H, W]
    q = torch.cat(neigh, dim=1)                                                  # [3, 48, H, W]
    kappa = (-(centre - q).abs() / (1e-8 + 0.1 * sigma[:, None])).mean(dim=0)    # [48, H, W]
    return torch.softmax(kappa, dim=0)


def pamr(scores: torch.Tensor, image: torch.Tensor, iterations: int = 10,
         dilations: tuple[int, ...] = PAMR_DILATIONS) -> torch.Tensor:
    """PAMR: S̄_c(p) ← Σ_q α_pq S̄_c(q) over the 48 neighbours, ``iterations`` times. scores [C, H, W]."""
    alpha = pamr_affinity(image, dilations)
    s = scores.float()
    for _ in range(iterations):
        out = torch.zeros_like(s)
        k = 0
        for d in dilations:
            for shifted in _shifted(s, d):
                out += alpha[k] * shifted
                k += 1
        s = out
    return s
