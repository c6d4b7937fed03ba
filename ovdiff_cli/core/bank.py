"""A vocabulary's bank of prototypes and the stuff filter (docs/method.md §5) as tensor functions.

Each class arrives as its raw prototypes per side, split by kind; rows leave L2-normalised with
their owner label, kind (0 class, 1 instance, 2 part) and row index within that kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ovdiff_cli.core.settings import BankSettings

KIND_IDS = {"class": 0, "instance": 1, "part": 2}
EPS = 1e-6


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows of [M, D] divided by max(‖row‖, 1e-6)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


@dataclass(frozen=True)
class Rows:
    """Prototype rows [M, D] (raw or normalised) with owner [M], kind [M] and index [M]."""

    vectors: torch.Tensor
    owner: torch.Tensor
    kind: torch.Tensor
    index: torch.Tensor

    @classmethod
    def empty(cls, dim: int) -> Rows:
        z = torch.zeros(0, dtype=torch.long)
        return cls(torch.zeros(0, dim), z, z.clone(), z.clone())

    @classmethod
    def cat(cls, parts: list[Rows], dim: int) -> Rows:
        if not parts:
            return cls.empty(dim)
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("vectors", "owner", "kind", "index")))

    def take(self, keep: torch.Tensor) -> Rows:
        return Rows(self.vectors[keep], self.owner[keep], self.kind[keep], self.index[keep])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def class_rows(label: int, by_kind: dict[str, torch.Tensor], kinds: tuple[str, ...]) -> Rows:
    """One side of one class: the chosen kinds in the order class, instance, part."""
    parts = []
    for name in ("class", "instance", "part"):
        if name in kinds and by_kind[name].shape[0]:
            m = by_kind[name].shape[0]
            parts.append(Rows(by_kind[name].float(), torch.full((m,), label), torch.full((m,), KIND_IDS[name]),
                              torch.arange(m)))
    dim = next(iter(by_kind.values())).shape[1]
    return Rows.cat(parts, dim)


@dataclass
class Filtered:
    """The bg rows kept, and a record per dropped row: why it went."""

    bg: Rows
    dropped: list[dict] = field(default_factory=list)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[M, D] × [K, D] → [M, K]: ⟨u, v⟩ / (max(‖u‖, 1e-6) · max(‖v‖, 1e-6))."""
    return l2_normalise(a.float()) @ l2_normalise(b.float()).T


def stuff_filter(fg: Rows, bg: Rows, stuff_labels: set[int], settings: BankSettings = BankSettings()) -> Filtered:
    """Steps 2–3 of docs/method.md §5 on raw rows; returns the bg rows that stay and why others went.

    compare="stuff": stuff classes lose every bg row; a thing's bg row goes when its cosine with
    any stuff class's fg row exceeds the threshold. compare="all": every class keeps its bg rows
    unless one's cosine with any *other* class's fg row exceeds the threshold.
    """
    if not settings.stuff_filter or len(bg) == 0:
        return Filtered(bg)
    dropped: list[dict] = []
    keep = torch.ones(len(bg), dtype=torch.bool)
    if settings.compare == "stuff":
        is_stuff_bg = torch.tensor([int(o) in stuff_labels for o in bg.owner], dtype=torch.bool)
        for r in torch.nonzero(is_stuff_bg).flatten().tolist():
            dropped.append(_record(bg, r, "stuff class: no background prototypes"))
        keep &= ~is_stuff_bg
        ref_mask = torch.tensor([int(o) in stuff_labels for o in fg.owner], dtype=torch.bool)
    elif settings.compare == "all":
        ref_mask = torch.ones(len(fg), dtype=torch.bool)
    else:
        raise ValueError(f"unknown stuff comparison {settings.compare!r}; choose stuff or all")
    if ref_mask.any():
        ref = fg.take(ref_mask)
        cos = cosine(bg.vectors, ref.vectors)                           # [M_bg, K]
        if settings.compare == "all":
            cos = cos.masked_fill(bg.owner[:, None] == ref.owner[None, :], -2.0)  # not its own class
        best, arg = cos.max(dim=1)
        over = keep & (best > settings.threshold)
        for r in torch.nonzero(over).flatten().tolist():
            j = int(arg[r])
            dropped.append(_record(bg, r, "too close to a foreground prototype", float(best[r]),
                                   {"owner": int(ref.owner[j]), "kind": int(ref.kind[j]), "index": int(ref.index[j])}))
        keep &= ~over
    return Filtered(bg.take(keep), dropped)


def _record(rows: Rows, r: int, reason: str, cos: float | None = None, against: dict | None = None) -> dict:
    out = {"owner": int(rows.owner[r]), "kind": int(rows.kind[r]), "index": int(rows.index[r]), "reason": reason}
    if cos is not None:
        out.update(cosine=round(cos, 6), against=against)
    return out


def normalised(rows: Rows) -> Rows:
    return Rows(l2_normalise(rows.vectors.float()), rows.owner, rows.kind, rows.index)
