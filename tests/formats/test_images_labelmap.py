"""Image decoding to 8-bit RGB, PNG metadata, and palette label maps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from ovdiff_cli.errors import BadFile
from ovdiff_cli.formats import images, labelmap
from ovdiff_cli.formats.images import png_metadata, read_rgb, to_rgb8, write_png, write_rgb_png
from ovdiff_cli.formats.labelmap import PALETTE, read_label_map, read_label_map_meta, write_label_map
from tests.helpers import one_line_with, only_files


# ---------------------------------------------------------------------------------------------
# palette


def voc_colour(i: int) -> tuple[int, int, int]:
    """The PASCAL VOC colour map, written independently: bit 3k+c of i goes to bit 7-k of channel c."""
    rgb = [0, 0, 0]
    for k in range(3):
        for c in range(3):
            bit = 3 * k + c
            if bit < 8 and (i >> bit) & 1:
                rgb[c] += 1 << (7 - k)
    return tuple(rgb)  # type: ignore[return-value]


@pytest.mark.parametrize("label, rgb", [
    (0, (0, 0, 0)), (1, (128, 0, 0)), (2, (0, 128, 0)), (3, (128, 128, 0)), (4, (0, 0, 128)),
    (8, (64, 0, 0)), (15, (192, 128, 128)), (20, (0, 64, 128)), (255, (224, 224, 192)),
])
def test_palette_known_colours(label, rgb):
    assert tuple(int(x) for x in PALETTE[label]) == rgb


def test_palette_matches_second_method_and_is_injective():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert [tuple(int(x) for x in row) for row in PALETTE] == [voc_colour(i) for i in range(256)]
    assert len({tuple(row) for row in PALETTE.tolist()}) == 256
    assert labelmap.IGNORE == 255


# ---------------------------------------------------------------------------------------------
# label maps


def test_label_map_all_256_values_round_trip(tmp_path: Path):
    labels = np.arange(256, dtype=np.uint8).reshape(8, 32)
    labels = np.ascontiguousarray(labels[:, ::-1])  # not in increasing raster order
    path = tmp_path / "lm.png"
    assert write_label_map(path, labels, {"vocabulary": "voc", "n": 3}) == path
    back = read_label_map(path)
    assert back.dtype == np.uint8 and back.shape == (8, 32)
    assert np.array_equal(back, labels)
    assert read_label_map_meta(path) == {"vocabulary": "voc", "n": 3}
    # the file is a palette PNG whose colours are the VOC colour map
    with Image.open(path) as im:
        assert im.mode == "P"
        rgb = np.asarray(im.convert("RGB"))
    assert rgb[0, 31].tolist() == [0, 0, 0]          # label 0 (reversed row: column 31 holds 0)
    assert rgb[0, 30].tolist() == [128, 0, 0]        # label 1
    assert rgb[7, 0].tolist() == [224, 224, 192]     # label 255
    for y, x in [(0, 0), (3, 17), (5, 5)]:
        assert tuple(rgb[y, x]) == voc_colour(int(labels[y, x]))
    assert only_files(tmp_path) == ["lm.png"]


def test_label_map_without_meta(tmp_path: Path):
    path = tmp_path / "lm.png"
    write_label_map(path, np.array([[0, 1], [2, 255]], dtype=np.uint8))
    assert read_label_map_meta(path) == {}
    assert read_label_map(path).tolist() == [[0, 1], [2, 255]]


def test_gray_png_reads_as_values(tmp_path: Path):
    values = np.array([[0, 1, 2], [17, 254, 255]], dtype=np.uint8)
    path = tmp_path / "gt.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == "L"
    assert read_label_map(path).tolist() == [[0, 1, 2], [17, 254, 255]]


def test_foreign_palette_png_reads_indices_not_colours(tmp_path: Path):
    im = Image.new("P", (3, 1))
    im.putpalette([255, 255, 255, 10, 20, 30, 0, 0, 0] + [0] * (253 * 3))
    im.putdata([2, 0, 1])
    path = tmp_path / "gt.png"
    im.save(path)
    assert read_label_map(path).tolist() == [[2, 0, 1]]


def test_16bit_label_map(tmp_path: Path):
    ok = tmp_path / "ok.png"
    Image.fromarray(np.array([[0, 7, 255]], dtype=np.uint16)).save(ok)
    assert read_label_map(ok).tolist() == [[0, 7, 255]]
    bad = tmp_path / "bad.png"
    Image.fromarray(np.array([[0, 256]], dtype=np.uint16)).save(bad)
    with pytest.raises(BadFile) as e:
        read_label_map(bad)
    one_line_with(e.value, str(bad), "above 255")


def test_rgb_png_is_not_a_label_map(tmp_path: Path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(path)
    with pytest.raises(BadFile) as e:
        read_label_map(path, "ovdiff segment")
    one_line_with(e.value, str(path), "RGB", "not a label map")


@pytest.mark.parametrize("labels", [
    np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2, 1), dtype=np.uint8),
    np.zeros((4,), dtype=np.uint8),
], ids=["float32", "int64", "3d", "1d"])
def test_write_label_map_rejects_bad_arrays(tmp_path: Path, labels):
    with pytest.raises(ValueError):
        write_label_map(tmp_path / "lm.png", labels)
    assert only_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# reading any image as RGB


def test_rgb_png_exact(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    out, note = read_rgb(path)
    assert note is None and out.dtype == np.uint8 and np.array_equal(out, rgb)


def test_gray_replicated(tmp_path: Path):
    gray = np.array([[0, 50], [200, 255]], dtype=np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(gray).save(path)
    out, note = read_rgb(path)
    assert out.shape == (2, 2, 3)
    for c in range(3):
        assert out[..., c].tolist() == [[0, 50], [200, 255]]
    assert note and "replicated" in note


def test_one_bit_is_black_and_white(tmp_path: Path):
    im = Image.new("1", (2, 1))
    im.putdata([0, 1])
    path = tmp_path / "b.png"
    im.save(path)
    out, _ = read_rgb(path)
    assert out.tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_rgba_alpha_dropped_without_compositing(tmp_path: Path):
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255], [200, 100, 50, 128]]], dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    with Image.open(path) as im:
        assert im.mode == "RGBA"
    out, note = read_rgb(path)
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60], [200, 100, 50]]]
    assert note and "alpha" in note


def test_la_alpha_dropped(tmp_path: Path):
    la = np.array([[[77, 0], [199, 255]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(la[..., 0]), Image.fromarray(la[..., 1])]).save(path)
    with Image.open(path) as im:
        assert im.mode == "LA"
    out, _ = read_rgb(path)
    assert out.tolist() == [[[77, 77, 77], [199, 199, 199]]]


def test_16bit_scaled_to_8bit(tmp_path: Path):
    values = np.array([[0, 65535, 257, 257 * 100, 257 * 254]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out, note = read_rgb(path)
    assert out.dtype == np.uint8
    assert out[..., 0].tolist() == [[0, 255, 1, 100, 254]]
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert note and "8" in note


def test_16bit_in_memory_k_times_257():
    k = np.arange(256, dtype=np.uint16)
    im = Image.fromarray((k * 257).astype(np.uint16).reshape(16, 16))
    out, _ = to_rgb8(im)
    assert np.array_equal(out[..., 2].reshape(-1), np.arange(256))


def test_palette_image_gives_its_colours(tmp_path: Path):
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 0, 255, 12, 34, 56] + [0] * (253 * 3))
    im.putdata([0, 1, 2])
    path = tmp_path / "p.png"
    im.save(path)
    out, note = read_rgb(path)
    assert out.tolist() == [[[255, 0, 0], [0, 0, 255], [12, 34, 56]]]
    assert note and "palette" in note
    # with a transparent index: the colour is kept, not composited
    path2 = tmp_path / "pt.png"
    im.save(path2, transparency=1)
    out2, _ = read_rgb(path2)
    assert out2.tolist() == [[[255, 0, 0], [0, 0, 255], [12, 34, 56]]]


@pytest.mark.parametrize("reader", [read_rgb, read_label_map], ids=["rgb", "label-map"])
@pytest.mark.parametrize("content", [b"", b"not an image at all", None], ids=["empty", "garbage", "truncated"])
def test_unreadable_images(tmp_path: Path, content, reader):
    path = tmp_path / "x.png"
    if content is None:
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(BadFile) as e:
        reader(path)
    one_line_with(e.value, str(path))


@pytest.mark.parametrize("read, parts", [
    (lambda tmp: read_rgb(tmp / "nope.png", "ovdiff sample"),
     lambda tmp: [str(tmp / "nope.png"), "does not exist", "ovdiff sample"]),
    (lambda tmp: read_label_map(tmp), lambda tmp: [str(tmp), "not a file"]),
], ids=["missing", "folder"])
def test_missing_and_folder(tmp_path: Path, read, parts):
    with pytest.raises(BadFile) as e:
        read(tmp_path)
    one_line_with(e.value, *parts(tmp_path))


# ---------------------------------------------------------------------------------------------
# PNG metadata


def test_rgb_png_with_metadata_round_trip(tmp_path: Path):
    rgb = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    meta = {"class": "café", "prompt": "猫 and a dog", "seed": 42, "guidance": 8.0, "nested": {"b": [1, 2], "a": None}}
    path = tmp_path / "sub" / "00000.png"  # the folder is created
    assert write_rgb_png(path, rgb, meta) == path
    out, note = read_rgb(path)
    assert note is None and np.array_equal(out, rgb)
    with Image.open(path) as im:
        assert png_metadata(im, path) == meta
        raw = im.text[images.TEXT_KEY]
    assert json.loads(raw) == meta
    assert raw == json.dumps(meta, sort_keys=True, ensure_ascii=False)  # sorted keys
    assert only_files(path.parent) == ["00000.png"]


def test_png_without_metadata(tmp_path: Path):
    path = tmp_path / "plain.png"
    write_rgb_png(path, np.zeros((1, 1, 3), dtype=np.uint8))
    with Image.open(path) as im:
        assert png_metadata(im, path) == {}


@pytest.mark.parametrize("raw, needle", [("{bad json", "invalid JSON"), ("[1, 2]", "not a JSON object")])
def test_png_bad_metadata(tmp_path: Path, raw, needle):
    info = PngImagePlugin.PngInfo()
    info.add_text(images.TEXT_KEY, raw)
    path = tmp_path / "m.png"
    Image.new("RGB", (1, 1)).save(path, pnginfo=info)
    with Image.open(path) as im, pytest.raises(BadFile) as e:
        png_metadata(im, path, "ovdiff sample")
    one_line_with(e.value, str(path), needle, "ovdiff sample")


@pytest.mark.parametrize("arr", [
    np.zeros((2, 2, 3), dtype=np.float32), np.zeros((2, 2), dtype=np.uint8), np.zeros((2, 2, 4), dtype=np.uint8),
], ids=["float", "2d", "rgba"])
def test_write_rgb_png_rejects_bad_arrays(tmp_path: Path, arr):
    with pytest.raises(ValueError):
        write_rgb_png(tmp_path / "a.png", arr)
    assert only_files(tmp_path) == []


def test_write_png_rejects_nan_meta_and_leaves_no_file(tmp_path: Path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "a.png", Image.new("RGB", (1, 1)), {"x": float("nan")})
    assert only_files(tmp_path) == []


def test_write_png_replaces_atomically(tmp_path: Path):
    path = tmp_path / "a.png"
    write_rgb_png(path, np.full((1, 1, 3), 7, dtype=np.uint8), {"v": 1})
    write_rgb_png(path, np.full((1, 1, 3), 9, dtype=np.uint8), {"v": 2})
    assert read_rgb(path)[0].tolist() == [[[9, 9, 9]]]
    with Image.open(path) as im:
        assert png_metadata(im, path) == {"v": 2}
    assert os.listdir(tmp_path) == ["a.png"]


# ---------------------------------------------------------------------------------------------
# EXIF orientation and the pixel limit

def _stored(path: Path) -> np.ndarray:
    """The pixels as stored in the file, with no orientation applied (Pillow never applies it itself)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


# What a viewer shows for each EXIF orientation, written with numpy (TIFF/EXIF 2.3 table).
ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                          # mirrored left-right
    3: lambda a: a[::-1, ::-1],                       # turned 180°
    4: lambda a: a[::-1],                             # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),                # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),                     # turned 90° clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),    # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),                      # turned 90° counter-clockwise
}


def quadrant_jpeg(path: Path, orientation: int | None) -> Path:
    """320 wide × 240 high: red, green over blue, white quadrants; the orientation tag if given."""
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:120, :160] = (255, 0, 0)
    rgb[:120, 160:] = (0, 255, 0)
    rgb[120:, :160] = (0, 0, 255)
    rgb[120:, 160:] = 255
    exif = Image.Exif()
    if orientation is not None:
        exif[images.EXIF_ORIENTATION] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int):
    path = quadrant_jpeg(tmp_path / "photo.jpg", orientation)
    rgb, _ = read_rgb(path)
    expected = ORIENTED[orientation](_stored(path))
    assert rgb.shape == expected.shape and (rgb == expected).all()


def test_orientation_6_stands_a_landscape_photo_up(tmp_path: Path):
    rgb, _ = read_rgb(quadrant_jpeg(tmp_path / "photo.jpg", 6))
    assert rgb.shape == (320, 240, 3)
    # turned clockwise: stored top-left (red) is now top-right, bottom-left (blue) top-left
    corners = {"top-left": rgb[80, 60], "top-right": rgb[80, 180], "bottom-left": rgb[240, 60],
               "bottom-right": rgb[240, 180]}
    want = {"top-left": (0, 0, 255), "top-right": (255, 0, 0), "bottom-left": (255, 255, 255),
            "bottom-right": (0, 255, 0)}
    for k, colour in want.items():
        assert np.abs(corners[k].astype(int) - colour).max() < 16, k


def test_no_orientation_leaves_the_image_and_its_metadata_alone(tmp_path: Path):
    path = quadrant_jpeg(tmp_path / "plain.jpg", None)
    assert (read_rgb(path)[0] == _stored(path)).all()
    png = write_rgb_png(tmp_path / "m.png", np.arange(24, dtype=np.uint8).reshape(2, 4, 3), {"k": [1, 2]})
    im = images.open_image(png)
    assert im.size == (4, 2) and png_metadata(im, png) == {"k": [1, 2]}


def test_an_oriented_png_keeps_its_text_chunk(tmp_path: Path):
    path = tmp_path / "o.png"
    info = PngImagePlugin.PngInfo()
    info.add_text(images.TEXT_KEY, json.dumps({"schema": "x"}))
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 8
    Image.fromarray(np.zeros((2, 5, 3), np.uint8)).save(path, pnginfo=info, exif=exif.tobytes())
    im = images.open_image(path)
    assert im.size == (2, 5) and png_metadata(im, path) == {"schema": "x"}


def test_the_pixel_limit_is_checked_and_can_be_raised(tmp_path: Path, monkeypatch):
    path = tmp_path / "p.png"
    Image.fromarray(np.zeros((10, 11, 3), np.uint8)).save(path)
    monkeypatch.setenv("OVDIFF_MAX_PIXELS", "109")
    with pytest.raises(BadFile) as e:
        read_rgb(path)
    line = one_line_with(e.value, str(path), "11×10 = 110 pixels", "limit of 109", "OVDIFF_MAX_PIXELS=110")
    assert line.endswith("OVDIFF_MAX_PIXELS=110")  # the whole message, not cut short
    monkeypatch.setenv("OVDIFF_MAX_PIXELS", "110")
    assert read_rgb(path)[0].shape == (10, 11, 3)
    assert read_label_map(write_label_map(tmp_path / "l.png", np.zeros((10, 11), np.uint8))).shape == (10, 11)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height, with a few bytes of pixel data (never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 10000)], ids=["20000-square", "100MP"])
def test_huge_images_are_refused_from_the_header(tmp_path: Path, monkeypatch, width: int, height: int):
    monkeypatch.delenv("OVDIFF_MAX_PIXELS", raising=False)
    path = png_header_only(tmp_path / "huge.png", width, height)
    with pytest.raises(BadFile) as e:
        read_rgb(path)  # decoding 20000² would take 1.2 GB; refused in milliseconds instead
    one_line_with(e.value, f"{width}×{height} = {width * height:,} pixels", "limit of 89,478,485",
                  f"OVDIFF_MAX_PIXELS={width * height}")
    assert "decompression bomb" not in str(e.value)


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1e9"])
def test_a_bad_pixel_limit_is_one_line(tmp_path: Path, monkeypatch, value: str):
    from ovdiff_cli.errors import BadInput

    monkeypatch.setenv("OVDIFF_MAX_PIXELS", value)
    path = write_rgb_png(tmp_path / "p.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(BadInput) as e:
        read_rgb(path)
    one_line_with(e.value, "OVDIFF_MAX_PIXELS", repr(value))


def test_decoder_messages_are_cut_between_words():
    text = "alpha beta " * 30
    short = images._clip_words(text, 40)
    assert short == "alpha beta alpha beta alpha beta alpha …"
    assert images._clip_words("one two", 40) == "one two"
