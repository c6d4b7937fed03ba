"""Vocabularies (built-ins, files, inline lists), slugs, prompts and the thing/stuff table.

Expected values come from docs/method.md §10 and are written out here by hand, not taken from the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ovdiff_cli.errors import BadFile, BadInput
from ovdiff_cli.formats import thingstuff, vocabulary
from ovdiff_cli.formats.vocabulary import Vocabulary, build, builtin, from_words, parse, read_file, slugify
from tests.helpers import one_line_with


# ---------------------------------------------------------------------------------------------
# docs/method.md §10.2, copied by hand (label i = position i in these lists, 1-based).

VOC_KEYS = ["airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
            "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "monitor"]

CONTEXT_NUMBERED = """1 airplane, 2 bag, 3 bed, 4 bedclothes, 5 bench, 6 bicycle, 7 bird, 8 boat, 9 book, 10 bottle,
11 building, 12 bus, 13 cabinet, 14 car, 15 cat, 16 ceiling, 17 chair, 18 cloth, 19 computer, 20 cow, 21 cup,
22 curtain, 23 dog, 24 door, 25 fence, 26 floor, 27 flower, 28 food, 29 grass, 30 ground, 31 horse,
32 keyboard, 33 light, 34 motorbike, 35 mountain, 36 mouse, 37 person, 38 plate, 39 platform,
40 plant, 41 road, 42 rock, 43 sheep, 44 shelves, 45 sidewalk, 46 sign, 47 sky, 48 snow, 49 sofa,
50 table, 51 track, 52 train, 53 tree, 54 truck, 55 monitor, 56 wall, 57 water, 58 window, 59 wood"""

CONTEXT_STUFF = {"bedclothes", "ceiling", "cloth", "curtain", "fence", "floor", "grass", "ground", "mountain",
                 "platform", "road", "rock", "sidewalk", "sky", "snow", "track", "wall", "water", "wood"}

COCO_KEYS = (
    "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, stop sign, "
    "parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, backpack, umbrella, "
    "handbag, tie, suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat, baseball glove, "
    "skateboard, surfboard, tennis racket, bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, "
    "sandwich, orange, broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, potted plant, bed, "
    "dining table, toilet, tv, laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink, "
    "refrigerator, book, clock, vase, scissors, teddy bear, hair drier, toothbrush").split(", ")

# docs/method.md §10.3
TABLE_STUFF = {"background", "__background__", *CONTEXT_STUFF, "step", "trade name", "lake", "blanket", "tray",
               "glass"}
TABLE_THING_CONTEXT = set(
    "airplane bag bed bench bicycle bird boat book bottle building bus cabinet car cat chair computer cow cup "
    "dog door flower food horse keyboard light motorbike mouse person plate plant sheep shelves sign sofa table "
    "train tree truck monitor window".split())
TABLE_THING_ADE = set(x.strip() for x in """windowpane, earth, painting, shelf, house, sea, mirror, rug, field,
  armchair, seat, desk, wardrobe, lamp, bathtub, railing, cushion, base, box, column, signboard,
  chest of drawers, counter, sand, sink, skyscraper, fireplace, refrigerator, grandstand, path,
  stairs, runway, case, pool table, pillow, screen door, stairway, river, bridge, bookcase, blind,
  coffee table, toilet, hill, countertop, stove, palm, kitchen island, swivel chair, bar, arcade
  machine, hovel, towel, tower, chandelier, awning, streetlight, booth, television receiver, dirt
  track, apparel, pole, land, bannister, escalator, ottoman, buffet, poster, stage, van, ship,
  fountain, conveyer belt, canopy, washer, plaything, swimming pool, stool, barrel, basket,
  waterfall, tent, minibike, cradle, oven, ball, tank, microwave, pot, animal, dishwasher, screen,
  sculpture, hood, sconce, vase, traffic light, ashcan, fan, pier, crt screen, bulletin board,
  shower, radiator, clock, flag""".replace("\n", " ").split(","))
TABLE_THING_ADE = {" ".join(x.split()) for x in TABLE_THING_ADE}


def context_keys() -> list[str]:
    pairs = [item.split() for item in CONTEXT_NUMBERED.replace("\n", " ").split(",")]
    assert [int(n) for n, _ in pairs] == list(range(1, 60))
    return [name for _, name in pairs]


# ---------------------------------------------------------------------------------------------
# Thing/stuff table


def test_table_sizes_match_method():
    assert (len(TABLE_STUFF), len(TABLE_THING_CONTEXT), len(TABLE_THING_ADE)) == (27, 40, 106)
    assert (len(thingstuff.STUFF), len(thingstuff.THING_CONTEXT), len(thingstuff.THING_ADE)) == (27, 40, 106)
    keys = thingstuff.STUFF | thingstuff.THING_CONTEXT | thingstuff.THING_ADE
    assert len(keys) == 27 + 40 + 106 == 173  # disjoint


def test_table_contents_match_method():
    assert set(thingstuff.STUFF) == TABLE_STUFF
    assert set(thingstuff.THING_CONTEXT) == TABLE_THING_CONTEXT
    assert set(thingstuff.THING_ADE) == TABLE_THING_ADE


@pytest.mark.parametrize("key, kind", [
    ("sky", "stuff"), ("Sky", "stuff"), ("  wall ", "stuff"), ("trade name", "stuff"), ("background", "stuff"),
    ("__background__", "stuff"), ("glass", "stuff"),
    # oddities kept for fidelity (§10.3)
    ("sea", "thing"), ("field", "thing"), ("sand", "thing"), ("earth", "thing"), ("river", "thing"),
    ("path", "thing"), ("land", "thing"), ("hill", "thing"),
    # absent keys are things
    ("pottedplant", "thing"), ("wine glass", "thing"), ("zebra", "thing"), ("cat", "thing"),
])
def test_kind_of(key, kind):
    assert thingstuff.kind_of(key) == kind


# ---------------------------------------------------------------------------------------------
# Built-ins


def test_voc_renamed_keys_that_are_right():
    voc = builtin("voc")
    assert voc.label_of("airplane") == 1
    assert voc.label_of("table") == 11
    c = voc.classes[voc.label_of("pottedplant") - 1]
    assert (c.name, c.prompt, c.kind, c.slug) == ("pottedplant", "potted plant", "thing", "pottedplant")
    assert "aeroplane" not in voc.names and "diningtable" not in voc.names and "tvmonitor" not in voc.names
    assert all(c.kind == "thing" for c in voc.classes)


def test_voc_has_twenty_classes_in_method_order():
    voc = builtin("voc")
    assert len(voc) == 20
    assert voc.names == VOC_KEYS
    assert voc.label_of("person") == 15
    assert voc.label_of("pottedplant") == 16
    assert voc.label_of("monitor") == 20


def test_context_has_59_classes_in_method_order_with_19_stuff():
    ctx = builtin("context")
    assert len(ctx) == 59
    assert ctx.names == context_keys()
    assert {c.name for c in ctx.classes if c.is_stuff} == CONTEXT_STUFF
    assert sum(c.is_stuff for c in ctx.classes) == 19


def test_context_prompts_keyboard_overlay():
    ctx = builtin("context")
    prompts = {c.name: c.prompt for c in ctx.classes}
    assert prompts["keyboard"] == "computer keyboard"
    assert ctx.label_of("keyboard") == 32
    # every other prompt is the key itself
    assert {k: p for k, p in prompts.items() if k != p} == {"keyboard": "computer keyboard"}


def test_context_without_overlay_keeps_keyboard():
    ctx = builtin("context", overlay=False)
    assert ctx.classes[31].name == "keyboard" and ctx.classes[31].prompt == "keyboard"
    assert all(c.prompt == c.name for c in ctx.classes)


def test_coco_object_80_things_in_order():
    coco = builtin("coco-object")
    assert len(coco) == 80
    assert coco.names == COCO_KEYS
    assert all(c.kind == "thing" for c in coco.classes)
    assert coco.label_of("person") == 1 and coco.label_of("toothbrush") == 80
    hot = coco.classes[coco.label_of("hot dog") - 1]
    assert hot.slug == "hot-dog" and hot.prompt == "hot dog"
    assert coco.classes[coco.label_of("keyboard") - 1].prompt == "computer keyboard"
    assert len({c.slug for c in coco.classes}) == 80


def test_unknown_builtin():
    with pytest.raises(BadInput) as e:
        builtin("ade")
    one_line_with(e.value, "'ade'", "voc", "context", "coco-object")


# ---------------------------------------------------------------------------------------------
# slugs, prompts, build


@pytest.mark.parametrize("name, slug", [
    ("Donut with chocolate glaze", "donut-with-chocolate-glaze"),
    ("Hot Dog", "hot-dog"),
    ("hot_dog", "hot-dog"),
    ("  --traffic   light!! ", "traffic-light"),
    ("Café au lait", "café-au-lait"),
    ("ＡＢＣ", "abc"),  # NFKC: full-width letters
    ("Straße", "strasse"),  # casefold
])
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_long_names_get_a_bounded_readable_slug_with_a_digest():
    import hashlib

    # 60 bytes exactly: kept whole
    assert slugify("a" * 60) == "a" * 60
    # 26 words: the first 49 bytes "the-quick-…-dog-and-t" are cut back to the last whole word
    words = "the quick brown fox jumps over the lazy dog and then runs far away".split() * 2
    name = " ".join(words[:26])
    full = "-".join(words[:26])
    expected = "the-quick-brown-fox-jumps-over-the-lazy-dog-and-" + hashlib.sha256(full.encode()).hexdigest()[:10]
    assert slugify(name) == expected and len(expected.encode()) <= 60
    # two names that differ only past the cut keep distinct slugs, so a vocabulary holds both
    other = name.replace("far away", "far off")
    assert slugify(other) != slugify(name) and slugify(other)[:48] == slugify(name)[:48]
    assert len(build("x", [(name, None, None), (other, None, None)])) == 2
    # a word longer than the prefix is cut inside it; multi-byte letters are never split
    assert slugify("x" * 100) == "x" * 49 + "-" + hashlib.sha256(b"x" * 100).hexdigest()[:10]
    cut = slugify("é" * 100)  # 2 bytes each: 24 fit in 49 bytes
    assert cut == "é" * 24 + "-" + hashlib.sha256(("é" * 100).encode()).hexdigest()[:10]
    assert len(cut.encode()) == 59
    # names with equal slugs still collide, however long
    with pytest.raises(BadInput, match="share the file name"):
        build("x", [(name, None, None), (name.upper(), None, None)])


def test_build_overlay_and_defaults():
    v = build("mine", [("tank", None, None), ("blind", None, None), ("hood", None, None), ("ashcan", None, None),
                       ("case", None, None), ("keyboard", None, None), ("apparel", None, None), ("sky", None, None)])
    assert [c.prompt for c in v.classes] == ["liquid tank", "window blinds", "cooker hood", "wastebin", "shop case",
                                             "computer keyboard", "clothing", "sky"]
    assert [c.kind for c in v.classes] == ["thing"] * 7 + ["stuff"]
    off = build("mine", [("tank", None, None)], overlay=False)
    assert off.classes[0].prompt == "tank"
    # an explicit prompt wins over the overlay, whitespace is normalised in names and prompts
    v2 = build("mine", [("  keyboard  ", "  piano   keys ", None)])
    assert (v2.classes[0].name, v2.classes[0].prompt) == ("keyboard", "piano keys")


def test_labels_are_one_based_and_label_of_unknown():
    v = from_words(["cat", "hot dog", "sky"])
    assert [v.label_of(n) for n in ("cat", "hot dog", "sky")] == [1, 2, 3]
    assert v.name == "words"
    with pytest.raises(BadInput) as e:
        v.label_of("dog")
    one_line_with(e.value, "'dog'", "cat, hot dog, sky")


def test_meta_round_trip():
    ctx = builtin("context")
    meta = ctx.to_meta()
    assert meta["classes"][31] == ["keyboard", "computer keyboard", "thing"]
    assert meta["classes"][46] == ["sky", "sky", "stuff"]
    assert Vocabulary.from_meta(meta) == ctx
    custom = build("x", [("sky", "blue sky", "thing"), ("tank", None, None)])
    back = Vocabulary.from_meta(custom.to_meta())
    assert back == custom
    assert back.classes[1].prompt == "liquid tank"


def test_duplicate_slug_names_both():
    with pytest.raises(BadInput) as e:
        build("x", [("Hot Dog", None, None), ("cat", None, None), ("hot-dog", None, None)])
    one_line_with(e.value, "'Hot Dog'", "'hot-dog'")


@pytest.mark.parametrize("entries, needle", [
    ([], "empty"),
    ([("   ", None, None)], "empty"),
    ([("!!!", None, None)], "'!!!'"),
    ([("cat", "   ", None)], "empty prompt"),
    ([("cat", None, "animal")], "'animal'"),
])
def test_build_errors(entries, needle):
    with pytest.raises(BadInput) as e:
        build("x", entries)
    one_line_with(e.value, needle)


def test_at_most_254_classes():
    assert len(build("x", [(f"c{i}", None, None) for i in range(254)])) == 254
    with pytest.raises(BadInput) as e:
        build("x", [(f"c{i}", None, None) for i in range(255)])
    one_line_with(e.value, "255", "254")


# ---------------------------------------------------------------------------------------------
# files


def test_read_file_with_comments_blanks_tabs_and_kinds(tmp_path: Path):
    p = tmp_path / "my-vocab.txt"
    p.write_text(
        "# my classes\n"
        "\n"
        "cat\n"
        "   \n"
        "Donut with chocolate glaze\tglazed donut   # a comment\n"
        "sky\tblue sky\tthing\n"
        "carpet\t\tSTUFF\n"
        "keyboard\n"
        "wall\n",
        encoding="utf-8")
    v = read_file(p)
    assert v.name == "my-vocab"
    got = [(c.name, c.prompt, c.kind, c.slug) for c in v.classes]
    assert got == [
        ("cat", "cat", "thing", "cat"),
        ("Donut with chocolate glaze", "glazed donut", "thing", "donut-with-chocolate-glaze"),
        ("sky", "blue sky", "thing", "sky"),  # explicit kind beats the table
        ("carpet", "carpet", "stuff", "carpet"),  # explicit kind, case-insensitive
        ("keyboard", "computer keyboard", "thing", "keyboard"),
        ("wall", "wall", "stuff", "wall"),  # kind from the table
    ]
    v_off = read_file(p, overlay=False)
    assert v_off.classes[4].prompt == "keyboard"
    assert v_off.classes[1].prompt == "glazed donut"


def test_read_file_crlf(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_bytes(b"cat\r\nsky\tthe sky\r\n")
    v = read_file(p)
    assert [(c.name, c.prompt, c.kind) for c in v.classes] == [("cat", "cat", "thing"), ("sky", "the sky", "stuff")]


def test_bad_kind_names_line_number(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("# header\n\ncat\ndog\t\tanimal\n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "line 4", "'animal'")


def test_too_many_columns_names_line_number(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("cat\na\tb\tthing\textra\n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "line 2", "4")


def test_file_duplicate_slug(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("Hot Dog\nhot-dog\n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "'Hot Dog'", "'hot-dog'", "'hot-dog'")


def test_file_empty(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("# nothing here\n\n   \n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "empty")


def test_file_too_many_classes(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("".join(f"class {i}\n" for i in range(255)), encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "255", "254")


@pytest.mark.parametrize("text", ["# nothing\n", "".join(f"c{i}\n" for i in range(255))],
                         ids=["empty", "255-classes"])
def test_file_error_names_path_once(tmp_path: Path, text: str):
    p = tmp_path / "v.txt"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    assert str(e.value).count(str(p)) == 1, str(e.value)


def test_file_lines_are_newline_separated_only(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("cat\x0cdog\nbird\tb\tanimal\n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    assert "line 2" in str(e.value), str(e.value)


def test_file_missing(tmp_path: Path):
    p = tmp_path / "nope.txt"
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "does not exist")


def test_file_not_utf8(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_bytes(b"caf\xe9\n")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "UTF-8")


def test_file_empty_name(tmp_path: Path):
    p = tmp_path / "v.txt"
    p.write_text("cat\n\tjust a prompt\n", encoding="utf-8")
    with pytest.raises(BadFile) as e:
        read_file(p)
    one_line_with(e.value, str(p), "empty")


# ---------------------------------------------------------------------------------------------
# parse (--vocab)


def test_parse_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert parse(" context ") == builtin("context")
    assert len(parse("coco-object")) == 80
    assert parse("voc", overlay=False) == builtin("voc", overlay=False)


def test_parse_inline_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    v = parse(" cat , hot dog,sky,keyboard")
    assert v.name == "inline"
    assert [(c.name, c.prompt, c.kind, c.slug) for c in v.classes] == [
        ("cat", "cat", "thing", "cat"), ("hot dog", "hot dog", "thing", "hot-dog"), ("sky", "sky", "stuff", "sky"),
        ("keyboard", "computer keyboard", "thing", "keyboard")]
    assert parse("keyboard,", overlay=False).classes[0].prompt == "keyboard"
    assert parse("cat,").names == ["cat"]
    assert parse("cat, dog,").names == ["cat", "dog"]


@pytest.mark.parametrize("spec", ["vocc", "cat"])
def test_a_lone_word_that_is_no_file_or_builtin_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           spec: str):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput) as e:
        parse(spec)
    one_line_with(e.value, repr(spec), "voc, context, coco-object", f"'{spec},'")


def test_parse_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes").write_text("cat\nsky\n", encoding="utf-8")
    v = parse("classes")  # an existing file wins even without a suffix
    assert v.names == ["cat", "sky"] and v.name == "classes"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v.tsv").write_text("dog\n", encoding="utf-8")
    assert parse("sub/v.tsv").names == ["dog"]


@pytest.mark.parametrize("spec", ["missing.txt", "some/dir/vocab"])
def test_parse_missing_path_like_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadFile) as e:
        parse(spec)
    one_line_with(e.value, spec, "does not exist")


@pytest.mark.parametrize("spec, needle", [("cat,,dog", "empty name"), (" , ", "empty"), ("cat,Cat", "'cat'")])
def test_parse_inline_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, needle: str):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput) as e:
        parse(spec)
    one_line_with(e.value, needle)


def test_module_constants():
    assert vocabulary.MAX_CLASSES == 254
    assert set(vocabulary.BUILTIN) == {"voc", "context", "coco-object"}


def test_file_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "v.txt"
    p.write_bytes("\ufeffsky\ncat\n".encode("utf-8"))
    v = vocabulary.read_file(p)
    assert [(c.name, c.kind) for c in v.classes] == [("sky", "stuff"), ("cat", "thing")]


def test_overlay_and_table_lookups_ignore_case():
    v = vocabulary.parse("Keyboard,SKY,Tank")
    assert [(c.prompt, c.kind) for c in v.classes] == [("computer keyboard", "thing"), ("SKY", "stuff"),
                                                       ("liquid tank", "thing")]
