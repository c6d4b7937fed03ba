"""CutLER's detector, a Cascade Mask R-CNN (ResNet-50 FPN), on torch and torchvision alone.

It computes what detectron2 computes for CutLER's published checkpoint, whose key names it
keeps, so the checkpoint loads as published (docs/method.md §3.1, docs/design.md §3):

- :mod:`.backbone`: ResNet-50 with batch norm and the FPN (p2–p6);
- :mod:`.boxes`: anchors, box decoding, clipping;
- :mod:`.rpn`: the region proposal network and its proposal selection;
- :mod:`.roi_heads`: multi-level ROIAlign, the three cascade stages, the mask head;
- :mod:`.postprocess`: boxes and masks at the caller's image size, and detectron2's test-time resize;
- :mod:`.detector`: the whole network and its checkpoint.
"""
