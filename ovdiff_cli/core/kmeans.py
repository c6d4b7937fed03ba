"""k-means in torch on the features' own device (docs/method.md §4.2), as a pure function.

The same algorithm as scikit-learn's ``KMeans(init="k-means++", n_init=1, algorithm="lloyd")``:
greedy k-means++ seeding, then Lloyd iterations, with the same random draws; sums are taken in
another order (and partly in float64), so results agree in inertia, not bit for bit.

Shapes: data x [P, D] float32; centres [k, D]; labels [P] int64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class KMeansRun:
    """One run of :func:`kmeans_torch_run`: centres [k, D], labels [P], Lloyd rounds, seconds spent."""

    centres: torch.Tensor
    labels: torch.Tensor
    n_iter: int
    init_seconds: float
    lloyd_seconds: float


def kmeans_torch(x: torch.Tensor, k: int, *, max_iter: int = 300, tol: float = 1e-4, seed: int = 0,
                 chunk_rows: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of x [P, D] float32 on any device → (centres [k, D] float32, labels [P] int64), on x's device.

    Requires 1 <= k <= the number of distinct rows of x (the caller clamps K' = min(K, distinct
    rows), docs/method.md §4.2). Steps, as scikit-learn's Lloyd k-means with one k-means++ start:

    - x is centred on its column mean (float32 distances lose less to cancellation); the mean is
      added back to the returned centres;
    - seeding: the first centre a uniformly drawn row; each further one the best of
      2 + ⌊ln k⌋ rows drawn with probability ∝ the squared distance to the closest centre so far
      (the one leaving the lowest total squared distance wins, the lower draw on ties);
    - Lloyd: at most ``max_iter`` rounds of assign-then-average; stop when no label changes, or
      when the summed squared centre shift is <= tol × (mean per-feature variance of x), then
      assign once more to the final centres. A cluster left empty takes the point farthest from
      its own centre (farthest first), as scikit-learn relocates them.

    Squared distances are ||x||² − 2 x·c + ||c||² clamped at 0; ties go to the lower centre.
    Random numbers come from ``numpy.random.RandomState(seed)`` on the CPU, in scikit-learn's
    order, so every device draws the same sequence and seeding picks the rows scikit-learn's
    ``random_state=seed`` picks unless rounding moves a draw across a row boundary (likelier the
    more rows there are). A fixed seed on one device (and one CPU thread count) gives identical
    output: no floating-point atomic additions on CUDA (sums per cluster by a one-hot matmul),
    ``index_add_`` on the CPU.

    Memory beyond x: one centred copy of x (P·D floats), per-row vectors (P·(4 + trials) floats),
    [chunk_rows, k + trials] distance blocks, gathers of moved rows of at most chunk_rows · (k + 1)
    floats and a few [k, D] tensors (float64 sums). For P × D = 131,072 × 7,680, k = 32 that is
    4 GiB beside x's own 4 GiB and under 20 MiB of the rest at the default chunk size: 8 GiB with x.
    """
    run = kmeans_torch_run(x, k, max_iter=max_iter, tol=tol, seed=seed, chunk_rows=chunk_rows)
    return run.centres, run.labels


def kmeans_torch_run(x: torch.Tensor, k: int, *, max_iter: int = 300, tol: float = 1e-4, seed: int = 0,
                     chunk_rows: int = 16384) -> KMeansRun:
    """:func:`kmeans_torch` with its number of Lloyd rounds and the seconds of seeding (with the
    centring) and of the Lloyd rounds, for benchmarks."""
    start = time.perf_counter()
    if x.ndim != 2 or x.dtype != torch.float32:
        raise ValueError(f"kmeans_torch wants a float32 [P, D] tensor, got {x.dtype} {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans_torch needs 1 <= k <= P, got k = {k}, P = {x.shape[0]}")
    chunks = _Chunks(x.shape[0], max(1, chunk_rows))
    mean = _column_mean(x, chunks)
    xc = x - mean                                                        # the one centred copy
    xx = torch.cat([_row_sq_norms(xc[s]) for s in chunks])              # [P], computed once
    tol_abs = float(xx.sum(dtype=torch.float64)) / xc.numel() * tol    # mean of per-feature variances × tol
    centres = _kmeans_plusplus(xc, xx, k, np.random.RandomState(seed), chunks)
    seeded = _now(x.device)
    centres, labels, n_iter = _lloyd(xc, xx, centres, max_iter, tol_abs, chunks)
    centres = centres + mean
    end = _now(x.device)
    return KMeansRun(centres, labels, n_iter, seeded - start, end - seeded)


def _now(device: torch.device) -> float:
    """Wall-clock seconds once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class _Chunks:
    """Row slices of at most ``rows`` rows covering 0..P."""

    def __init__(self, p: int, rows: int) -> None:
        self.rows = rows
        self.slices = [slice(i, min(i + rows, p)) for i in range(0, p, rows)]

    def __iter__(self) -> Iterator[slice]:
        return iter(self.slices)


def _column_mean(x: torch.Tensor, chunks: _Chunks) -> torch.Tensor:
    """[P, D] → [D] float32; chunk sums added in float64 (no float64 copy of x)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for s in chunks:
        total += x[s].sum(dim=0).double()
    return (total / x.shape[0]).float()


def _row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """[n, D] → [n] squared Euclidean norms."""
    return torch.linalg.vecdot(x, x)


def _sq_distances(xc: torch.Tensor, xx: torch.Tensor, c: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
    """Rows [n, D] with norms xx [n] against centres c [m, D] with norms cc [m] → [n, m], clamped at 0."""
    d = torch.addmm(cc[None, :], xc, c.T, alpha=-2.0)
    d += xx[:, None]
    return d.clamp_min_(0.0)


def _kmeans_plusplus(xc: torch.Tensor, xx: torch.Tensor, k: int, rng: np.random.RandomState,
                     chunks: _Chunks) -> torch.Tensor:
    """Greedy k-means++ seeding of centred rows xc [P, D] → centres [k, D] (rows of xc).

    The uniform numbers are drawn on the CPU as scikit-learn draws them from its random state (the
    first row by ``choice`` over equal float32 weights, then ``uniform`` per centre), so both pick
    the same rows unless rounding moves a draw across a row boundary.
    """
    p, dev = xc.shape[0], xc.device
    trials = 2 + int(math.log(k))
    weights = np.ones(p, dtype=np.float32)
    first = int(rng.choice(p, p=weights / weights.sum()))
    idx = [first]
    closest = _distances_to(xc, xx, torch.tensor([first], device=dev), chunks)[:, 0]   # [P]
    for _ in range(1, k):
        # On the CPU: a float cumsum on CUDA may differ from run to run; P numbers are cheap to move.
        cum = torch.cumsum(closest.cpu(), 0, dtype=torch.float64)                        # [P]
        draws = torch.from_numpy(rng.uniform(size=trials)) * cum[-1]
        # side="right": the first row whose running sum exceeds the draw, so never a zero-weight row
        cand = torch.searchsorted(cum, draws, right=True).clamp_(max=p - 1).to(dev)      # [trials]
        new = torch.minimum(_distances_to(xc, xx, cand, chunks), closest[:, None])      # [P, trials]
        potential = torch.stack([new[s].sum(dim=0).double() for s in chunks]).sum(dim=0)  # [trials]
        best = int(torch.argmin(potential))
        idx.append(int(cand[best]))
        closest = new[:, best].contiguous()
    return xc[torch.tensor(idx, device=dev)].clone()


def _distances_to(xc: torch.Tensor, xx: torch.Tensor, rows: torch.Tensor, chunks: _Chunks) -> torch.Tensor:
    """Squared distances of every row of xc [P, D] to the rows ``rows`` [m] of xc → [P, m]."""
    c, cc = xc[rows], xx[rows]
    return torch.cat([_sq_distances(xc[s], xx[s], c, cc) for s in chunks])


def _lloyd(xc: torch.Tensor, xx: torch.Tensor, centres: torch.Tensor, max_iter: int, tol_abs: float,
           chunks: _Chunks) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd iterations from ``centres`` [k, D] on centred rows xc [P, D] → (centres, labels [P], rounds).

    The per-cluster sums are kept in float64 and updated by the rows that changed cluster only, so
    a round after the first few costs one distance pass, not two.
    """
    k = centres.shape[0]
    labels = torch.full((xc.shape[0],), -1, dtype=torch.int64, device=xc.device)
    sums = torch.zeros(k, xc.shape[1], dtype=torch.float64, device=xc.device)
    strict, n_iter = False, 0
    for n_iter in range(1, max(1, max_iter) + 1):
        old = labels
        labels, dist = _assign(xc, xx, centres, chunks)
        moved = _update_sums(sums, xc, labels, old, chunks)
        new = _new_centres(xc, labels, dist, sums.clone(), torch.bincount(labels, minlength=k))
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if moved == 0:
            strict = True                                                # labels fixed: centres are their means
            break
        if shift <= tol_abs:
            break
    if not strict:
        labels = _assign(xc, xx, centres, chunks)[0]                     # labels of the final centres
    return centres, labels, n_iter


def _assign(xc: torch.Tensor, xx: torch.Tensor, centres: torch.Tensor,
            chunks: _Chunks) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: the nearest centre of each row of xc [P, D] → labels [P] and squared distances [P]."""
    cc = _row_sq_norms(centres)
    labels = torch.empty(xc.shape[0], dtype=torch.int64, device=xc.device)
    dist = torch.empty(xc.shape[0], dtype=xc.dtype, device=xc.device)
    for s in chunks:
        nearest = _sq_distances(xc[s], xx[s], centres, cc).min(dim=1)  # the first minimum: lower index on ties
        dist[s], labels[s] = nearest.values, nearest.indices
    return labels, dist


def _update_sums(sums: torch.Tensor, xc: torch.Tensor, labels: torch.Tensor, old: torch.Tensor,
                 chunks: _Chunks) -> int:
    """Move the rows whose label changed from ``old`` (-1: none yet) to ``labels`` in the per-cluster
    sums [k, D] float64 → how many rows moved.

    A chunk where most rows moved is summed in place (unmoved rows cancel); otherwise the moved rows
    are gathered in blocks of at most chunk_rows · (k + 1) numbers, so no copy of a whole chunk.
    """
    k, one_hot = sums.shape[0], xc.device.type == "cuda"   # index_add_ sums with atomics on CUDA
    gather = max(1, min(chunks.rows, chunks.rows * (k + 1) // xc.shape[1]))
    total = 0
    for s in chunks:
        local = torch.nonzero(labels[s] != old[s]).flatten()
        total += local.numel()
        if 4 * local.numel() >= s.stop - s.start:
            sums += _moved_sums(xc[s], labels[s], old[s], k, one_hot)
            continue
        for i in range(0, local.numel(), gather):
            idx = local[i:i + gather] + s.start
            sums += _moved_sums(xc[idx], labels[idx], old[idx], k, one_hot)
    return total


def _moved_sums(block: torch.Tensor, to: torch.Tensor, was: torch.Tensor, k: int, one_hot: bool) -> torch.Tensor:
    """Rows [m, D] entering clusters ``to`` [m] and leaving ``was`` [m] (-1: none) → the change of the
    per-cluster sums [k, D], by a one-hot matmul (exact zero for a row with to = was) or by index_add_
    (such a row adds and subtracts itself)."""
    if one_hot:
        weight = torch.nn.functional.one_hot(to, k).to(block.dtype)
        weight -= torch.nn.functional.one_hot(was.clamp_min(0), k).to(block.dtype) * (was >= 0)[:, None]
        return weight.T @ block
    part = torch.zeros(k, block.shape[1], dtype=block.dtype, device=block.device).index_add_(0, to, block)
    left = was >= 0
    if bool(left.all()):
        part.index_add_(0, was, block, alpha=-1)
    elif bool(left.any()):
        part.index_add_(0, was[left], block[left], alpha=-1)
    return part


def _new_centres(xc: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, sums: torch.Tensor,
                 counts: torch.Tensor) -> torch.Tensor:
    """M-step from per-cluster sums [k, D] (float64, changed here) and counts [k] → centres [k, D]
    float32: the means; an empty cluster takes the point farthest from its centre.

    ``labels`` are not changed by the relocation (as in scikit-learn); the next E-step settles them.
    """
    counts = counts.to(sums.dtype)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        far = torch.sort(dist, descending=True, stable=True).indices[:len(empty)].tolist()
        for j, i in zip(empty, far):
            own = int(labels[i])
            sums[own] -= xc[i]
            counts[own] -= 1
            sums[j] = xc[i]
            counts[j] = 1
    # A cluster whose only point moved keeps its (zero) sum, as scikit-learn leaves it.
    return (sums / counts.clamp_min(1)[:, None]).to(xc.dtype)
