import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PHOTOCRITIC_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache; never try the network for models."""
    monkeypatch.setenv("PHOTOCRITIC_CACHE", str(tmp_path_factory.mktemp("cache") / "emb.sqlite"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_images():
    d = SHARED / "data" / "images"
    if not d.is_dir():
        pytest.skip(f"{d} not found: the project's shared data is not beside this checkout")
    return d


@pytest.fixture(scope="session")
def lite():
    import photocritic

    return photocritic.load("lite")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from photocritic.encoders.tiny import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-clip"), size="tiny", kind="clip")


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    from photocritic.encoders.tiny import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-siglip"), size="tiny", kind="siglip")


def photo(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth random colour field with some edges: a cheap stand-in photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(-3, 3, 3)
        chans.append(127 + 120 * np.sin(a * xx * 6 + b * yy * 6 + c))
    arr = np.stack(chans, -1)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    arr[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_broken_files(folder: Path) -> dict[str, str]:
    """One file of every broken kind; returns {filename: expected status}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(photo(999, (320, 240)))
    png = io.BytesIO()
    photo(998).save(png, "PNG")
    png = png.getvalue()
    expected = {}

    def put(name, data, kind):
        (folder / name).write_bytes(data)
        expected[name] = kind

    put("empty.jpg", b"", "empty")
    put("truncated.jpg", good[: len(good) // 2], "truncated")
    put("truncated.png", png[: len(png) // 2], "truncated")
    put("garbage_after_header.jpg", good[:20] + bytes(range(256)) * 40, "corrupt")
    put("bad_png_header.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "corrupt")
    put("text.jpg", b"this is a text file, not a photo\n" * 10, "not_image")
    put("html.png", b"<html><body>404 not found</body></html>", "not_image")
    (folder / "a_directory.jpg").mkdir()
    expected["a_directory.jpg"] = "unreadable"
    return expected
