"""Helpers shared by the stages that read support-set folders."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovdiff_cli.formats.supportset import SupportSet


def load_images(s: SupportSet, indices: Sequence[int], size: int) -> torch.Tensor:
    """Images ``indices`` of a support set as float [n, 3, size, size] in [0, 1].

    An image of another size (a user's own photo) is squashed to size × size (bilinear,
    antialiased), the grid its attribution maps live on.
    """
    out = []
    for i in indices:
        rgb, _ = s.read_image(i)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x)
    return torch.cat(out) if out else torch.zeros(0, 3, size, size)
