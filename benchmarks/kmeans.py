"""Time the prototype stage's k-means: scikit-learn against the torch k-means, side by side.

    python benchmarks/kmeans.py                      # 37,000 × 7,680, K = 32: sklearn, torch CPU (and CUDA)
    python benchmarks/kmeans.py --threads 1          # the same on one core
    python benchmarks/kmeans.py --seeds 3            # seeds 0, 1, 2 each, and the mean inertia
    python benchmarks/kmeans.py -p 131072 -x cuda    # torch on CUDA only, the largest pool
    python benchmarks/kmeans.py --quick              # 2,000 × 768, script check

The data stand in for pooled SD foreground features (docs/method.md §4.2): 256 Gaussian blobs of
uneven size (Dirichlet weights) in a random 64-dimensional subspace, within-blob spread half the
between-blob spread, plus isotropic noise, then a per-channel scale (log-normal) and offset, as SD
channels from several layers differ in scale and mean; fixed seed 0. scikit-learn runs as
`ovdiff_cli.core.prototypes.kmeans` calls it (k-means++, one start, Lloyd, tol 1e-4, random state
0); K' = min(K, distinct rows) is worked out once, beforehand, for all. Prints seconds (torch:
seeding and Lloyd apart), Lloyd rounds, the inertia (sum of squared distances of the rows to
their centres, in float64, the same code for all) and its ratio to scikit-learn's with the same
seed. Both draw the same random numbers, but at this size rounding moves some k-means++ draws to
other rows, and a different local optimum can differ by a few per cent: compare means over
``--seeds``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from ovdiff_cli.core.kmeans import kmeans_torch_run
from ovdiff_cli.core.prototypes import distinct_rows
from ovdiff_cli.core.settings import PrototypeSettings


def pooled_features(p: int, d: int, seed: int = 0, blobs: int = 256, rank: int = 64) -> torch.Tensor:
    """[p, d] float32: the stand-in for pooled SD features described above."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(blobs, 0.5)))
    member = torch.multinomial(weights, p, replacement=True, generator=g)
    centres = torch.randn(blobs, rank, generator=g)
    z = centres[member] + 0.5 * torch.randn(p, rank, generator=g)
    basis = torch.randn(rank, d, generator=g) / rank ** 0.5
    x = torch.randn(p, d, generator=g).mul_(0.5)
    x.addmm_(z, basis)
    scale = torch.exp(0.5 * torch.randn(d, generator=g))
    offset = torch.randn(d, generator=g)
    return x.mul_(scale).add_(offset)


def inertia(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, rows: int = 4096) -> float:
    """Sum over rows of ||x_i − c_{l_i}||², in float64, chunked."""
    c = centres.to(x.device, torch.float64)
    labels = labels.to(x.device)
    return float(sum(((x[i:i + rows].double() - c[labels[i:i + rows]]) ** 2).sum()
                     for i in range(0, x.shape[0], rows)))


def sklearn_kmeans(x: torch.Tensor, k: int, settings: PrototypeSettings,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """scikit-learn's KMeans with the arguments of ovdiff_cli.core.prototypes.kmeans (random state
    ``seed``) → centres, labels, rounds."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=settings.kmeans_max_iter,
                tol=settings.kmeans_tol, random_state=seed, algorithm="lloyd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = km.fit_predict(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return torch.from_numpy(km.cluster_centers_.astype(np.float32)), torch.from_numpy(labels), int(km.n_iter_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--points", type=int, default=37_000)
    parser.add_argument("-d", "--dim", type=int, default=7_680)
    parser.add_argument("-k", "--clusters", type=int, default=32)
    parser.add_argument("-x", "--only", action="append", choices=["sklearn", "cpu", "cuda"],
                        help="run only these (repeatable); default: all available")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for torch and scikit-learn (default: torch's)")
    parser.add_argument("--chunk-rows", type=int, default=16384)
    parser.add_argument("--seeds", type=int, default=1,
                        help="run each k-means with seeds (random states) 0..N-1 and print the mean inertia: "
                             "one seed's inertia also depends on which local optimum its draws lead to")
    parser.add_argument("--quick", action="store_true", help="2,000 × 768 (script check)")
    args = parser.parse_args()
    p, d = (2_000, 768) if args.quick else (args.points, args.dim)
    runs = args.only or ["sklearn", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    settings = PrototypeSettings()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_info, threadpool_limits

    start = time.perf_counter()
    x = pooled_features(p, d)
    made = time.perf_counter() - start
    k = min(args.clusters, distinct_rows(x, args.clusters))
    sk_threads = sorted({f"{i['internal_api']} {min(i['num_threads'], args.threads)}" for i in threadpool_info()})
    print(f"P × D = {p:,} × {d:,}, K' = {k}, data made in {made:.1f} s; {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}, scikit-learn: {', '.join(sk_threads)}")
    print(f"{'k-means':<18} {'seed s':>7} {'Lloyd s':>8} {'total s':>8} {'rounds':>6} {'inertia':>14} "
          f"{'vs sklearn':>10}")
    totals: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        reference = None
        for name in runs:
            if name == "cuda" and not torch.cuda.is_available():
                print(f"{'torch cuda':<18} (no CUDA device)")
                continue
            if name == "sklearn":
                with threadpool_limits(args.threads):
                    t0 = time.perf_counter()
                    centres, labels, rounds = sklearn_kmeans(x, k, settings, seed)
                    total = time.perf_counter() - t0
                split = f"{'-':>7} {'-':>8}"            # scikit-learn does not time its seeding apart
            else:
                xd = x.to(name)
                run = kmeans_torch_run(xd, k, max_iter=settings.kmeans_max_iter, tol=settings.kmeans_tol,
                                       seed=seed, chunk_rows=args.chunk_rows)
                centres, labels, rounds = run.centres, run.labels, run.n_iter
                split = f"{run.init_seconds:>7.2f} {run.lloyd_seconds:>8.2f}"
                total = run.init_seconds + run.lloyd_seconds
                del xd
            value = inertia(x, centres.cpu(), labels.cpu())
            totals.setdefault(name, []).extend([value, total])
            reference = value if name == "sklearn" else reference
            ratio = f"{value / reference:>10.4f}" if reference else f"{'-':>10}"
            label = ("scikit-learn" if name == "sklearn" else f"torch {name}") + (f" s{seed}" if args.seeds > 1 else "")
            print(f"{label:<18} {split} {total:>8.2f} {rounds:>6} {value:>14.6g} {ratio}", flush=True)
    if args.seeds > 1:
        base = float(np.mean(totals["sklearn"][0::2])) if "sklearn" in totals else None
        for name, values in totals.items():
            mean = float(np.mean(values[0::2]))
            ratio = f"{mean / base:>10.4f}" if base else f"{'-':>10}"
            label = "scikit-learn" if name == "sklearn" else f"torch {name}"
            print(f"{label + ' mean':<18} {'':>7} {'':>8} {np.mean(values[1::2]):>8.2f} {'':>6} {mean:>14.6g} {ratio}")


if __name__ == "__main__":
    main()
