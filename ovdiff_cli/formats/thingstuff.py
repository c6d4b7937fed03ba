"""The thing/stuff table of docs/method.md §10.3 (official release; labels obtained from ChatGPT).

173 keys: the two background spellings, the 59 Pascal-Context names and 112 further ADE-150
names. Lookup is by class key; a key not in the table is a thing. Oddities (sea, field, sand,
earth, river, path, land, hill as "thing") are kept for fidelity.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["thing", "stuff"]

STUFF: frozenset[str] = frozenset({
    "background", "__background__",
    # Pascal-Context
    "bedclothes", "ceiling", "cloth", "curtain", "fence", "floor", "grass", "ground", "mountain",
    "platform", "road", "rock", "sidewalk", "sky", "snow", "track", "wall", "water", "wood",
    # ADE-150
    "step", "trade name", "lake", "blanket", "tray", "glass",
})

THING_CONTEXT: frozenset[str] = frozenset({
    "airplane", "bag", "bed", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "chair", "computer", "cow", "cup", "dog", "door", "flower",
    "food", "horse", "keyboard", "light", "motorbike", "mouse", "person", "plate", "plant",
    "sheep", "shelves", "sign", "sofa", "table", "train", "tree", "truck", "monitor", "window",
})

THING_ADE: frozenset[str] = frozenset({
    "windowpane", "earth", "painting", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "desk", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "hill", "countertop", "stove", "palm", "kitchen island", "swivel chair", "bar",
    "arcade machine", "hovel", "towel", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "dirt track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent",
    "minibike", "cradle", "oven", "ball", "tank", "microwave", "pot", "animal", "dishwasher",
    "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "ashcan", "fan", "pier",
    "crt screen", "bulletin board", "shower", "radiator", "clock", "flag",
})


def kind_of(key: str) -> Kind:
    """``stuff`` if the class key is a stuff entry of the table, else ``thing``."""
    return "stuff" if key.strip().lower() in STUFF else "thing"
