"""ovdiff: open-vocabulary segmentation with diffusion-generated prototypes (OVDiff).

The package is layered (see docs/design.md §2): ``commands`` → ``stages`` → ``core``, ``models``,
``formats``. Importing this module is cheap: it does not import torch.
"""

__version__ = "0.1.0"
