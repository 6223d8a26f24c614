import io

import numpy as np
import pytest
from PIL import Image

from photocritic.data import images as imgs
from photocritic.data.images import ImageError, decode_for, list_images, open_image, read_bytes
from photocritic.encoders.base import Preprocess

from conftest import jpeg_bytes, photo, write_broken_files

SQUASH = Preprocess(resize=32, crop=None, mode="squash", resample="bilinear", jpeg_draft=False)


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_every_format_decodes(fmt):
    im = Image.new("RGB", (40, 30), (200, 40, 30))
    arr = decode_for(_encode(im, fmt), SQUASH)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert np.abs(arr.mean((0, 1)) - [200, 40, 30]).max() < 12


def test_gif_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    arr = decode_for(buf.getvalue(), SQUASH)
    assert arr[..., 0].mean() > 200 and arr[..., 2].mean() < 50


@pytest.mark.parametrize("mode,value,expected", [
    ("L", 100, (100, 100, 100)),
    ("1", 1, (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("RGBA", (0, 0, 255, 0), (255, 255, 255)),  # fully transparent -> white background
    ("RGBA", (0, 0, 255, 255), (0, 0, 255)),
    ("LA", (0, 0), (255, 255, 255)),
])
def test_modes(mode, value, expected):
    im = Image.new(mode, (16, 16), value)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    arr = decode_for(_encode(im, fmt), SQUASH)
    np.testing.assert_allclose(arr.reshape(-1, 3).mean(0), expected, atol=1.0)


def test_palette_with_transparency():
    im = Image.new("P", (16, 16), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.info["transparency"] = 0
    arr = decode_for(_encode(im, "PNG", transparency=0), SQUASH)
    np.testing.assert_allclose(arr.reshape(-1, 3).mean(0), (255, 255, 255), atol=1.0)


def test_16_bit_is_scaled_not_clipped():
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(8, 8)  # 0 .. 64512
    im = Image.fromarray(ramp)  # mode I;16
    assert im.mode.startswith("I;16")
    pre = Preprocess(resize=8, crop=None, mode="squash", resample="nearest", jpeg_draft=False)
    arr = decode_for(_encode(im, "PNG"), pre)
    np.testing.assert_allclose(arr[..., 0].astype(float), np.round(ramp / 65535 * 255), atol=1.0)


def test_exif_orientation_applied():
    # Left half red, right half blue; orientation 6 = display rotated 90 degrees clockwise.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(im, "JPEG", exif=exif, quality=95)
    out = open_image(data)
    assert out.size == (20, 40)
    px = np.asarray(out)
    assert px[2, 10, 0] > 200 and px[2, 10, 2] < 60      # top is the old left (red)
    assert px[37, 10, 2] > 200 and px[37, 10, 0] < 60    # bottom is the old right (blue)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (the data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def test_decompression_bomb_guard_at_the_real_limit():
    # 20,000 x 10,000 = 200 MP: over the real limit (PIL's hard limit, about 179 MP), refused
    # from the header alone, before any pixel is decoded or memory allocated for them
    assert imgs.MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS < 20_000 * 10_000
    with pytest.raises(ImageError) as err:
        decode_for(_png_claiming(20_000, 10_000), SQUASH, "bomb.png")
    assert err.value.kind == "too_large" and "bomb.png" in err.value.message
    assert "200000000 pixels" in err.value.message or "20000x10000" in err.value.message
    # a small image with the same (too short) data is not refused as a bomb
    with pytest.raises(ImageError) as err:
        decode_for(_png_claiming(64, 64), SQUASH, "small.png")
    assert err.value.kind in ("truncated", "corrupt")


def test_draft_mode_close_to_full_decode():
    im = photo(3, (1024, 768))
    data = jpeg_bytes(im)
    pre = Preprocess(resize=256, crop=224)
    full = Preprocess(resize=256, crop=224, jpeg_draft=False)
    a, b = decode_for(data, pre).astype(float), decode_for(data, full).astype(float)
    assert np.abs(a - b).mean() < 3.0


def test_broken_files_each_get_their_own_status(tmp_path):
    expected = write_broken_files(tmp_path)
    for name, kind in expected.items():
        with pytest.raises(ImageError) as err:
            decode_for(read_bytes(tmp_path / name), SQUASH, name)
        assert err.value.kind == kind, (name, err.value.message)
        assert name in err.value.message


def test_missing_file():
    with pytest.raises(ImageError) as err:
        read_bytes("/nonexistent/photo.jpg")
    assert err.value.kind == "missing" and "/nonexistent/photo.jpg" in err.value.message


def test_list_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["a.jpg", "b.PNG", "notes.txt", "sub/c.webp"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.split("/")[-1] for p in list_images([tmp_path])] == ["a.jpg", "b.PNG"]
    assert len(list_images([tmp_path], recursive=True)) == 3
    # explicitly named files are kept whatever their extension, missing ones too
    assert list_images([tmp_path / "notes.txt", tmp_path / "gone.jpg"]) == [
        str(tmp_path / "notes.txt"), str(tmp_path / "gone.jpg")]
