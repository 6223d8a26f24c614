"""Robust image decoding: any file in, either pixels or a specific error out.

A bad file never stops a run. :func:`decode` raises :class:`ImageError`
whose ``kind`` is one of :data:`ERROR_KINDS` and whose message says what was
wrong with which file; callers turn it into an output row.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..encoders.base import Preprocess

#: Every status a row can have besides ``ok``.
ERROR_KINDS = {
    "missing": "the file does not exist (or vanished before it was read)",
    "unreadable": "the file exists but cannot be read (permissions, a directory, an I/O error)",
    "empty": "the file has zero bytes",
    "not_image": "the file is not an image in any format we read",
    "truncated": "the image data ends early",
    "corrupt": "the file looks like an image but its data cannot be decoded",
    "too_large": "the image has more pixels than the decompression-bomb limit, or the file is "
                 "larger than the byte cap (--max-file-size)",
}

#: Files larger than this are not read (``too_large``); configurable per run
#: (``max_bytes=``, ``--max-file-size``). A 179-megapixel 16-bit TIFF is about 1 GB.
DEFAULT_MAX_BYTES = 1 << 30

#: Images with more pixels than this are refused before any pixel is decoded
#: (decompression-bomb guard): PIL's own hard limit, about 179 million.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

def _openable_extensions() -> set[str]:
    """Every file extension the installed Pillow can open (AVIF, JPEG 2000,
    PSD, QOI, ... as built), except formats Pillow only identifies: stubs
    that need an outside handler (BUFR, GRIB, HDF5, WMF) and MPEG video."""
    from PIL import ImageFile

    Image.init()
    out = set()
    for ext, fmt in Image.registered_extensions().items():
        if fmt not in Image.OPEN or fmt == "MPEG":
            continue
        factory = Image.OPEN[fmt][0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        out.add(ext.lower())
    return out


IMAGE_EXTENSIONS = _openable_extensions()

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

# Leading bytes of the formats we read; used to tell "not an image" from
# "an image whose data is damaged".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
          b"II*\x00", b"MM\x00*", b"RIFF")


class ImageError(Exception):
    """A file that could not become pixels; ``kind`` is in :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, message: str):
        assert kind in ERROR_KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message


def _special_kind(mode: int) -> str | None:
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file; only regular files are read"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file; only regular files are read"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file; only regular files are read"
    if not stat.S_ISREG(mode):
        return "is not a regular file; only regular files are read"
    return None


def read_bytes(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole regular file, mapping OS failures to :class:`ImageError`.

    Only regular files are read (symbolic links are followed): a FIFO would
    block forever and a device such as /dev/zero never ends, so both are
    ``unreadable``. At most ``max_bytes`` are read; a larger file is
    ``too_large``."""
    try:
        st = os.stat(path)
        why = _special_kind(st.st_mode)
        if why is not None:
            raise ImageError("unreadable", f"{path}: {why}")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageError("too_large", f"{path}: {st.st_size:,} bytes is over the cap of "
                             f"{max_bytes:,} bytes (--max-file-size)")
        limit = st.st_size if max_bytes is None else min(st.st_size, max_bytes)
        with open(path, "rb") as fh:
            # read(n) allocates n bytes up front: ask for the size stat gave (+1 to see
            # growth), never for the cap itself; a file that grew is read on in chunks
            data = fh.read(limit + 1)
            if len(data) > st.st_size:
                parts, total = [data], len(data)
                while max_bytes is None or total <= max_bytes:
                    more = fh.read(1 << 20)
                    if not more:
                        break
                    parts.append(more)
                    total += len(more)
                data = b"".join(parts)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("missing", f"{path}: no such file (it may have been moved or deleted)")
    except IsADirectoryError:
        raise ImageError("unreadable", f"{path}: is a directory, not an image file")
    except PermissionError:
        raise ImageError("unreadable", f"{path}: permission denied")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ImageError("missing", f"{path}: no such file")
        raise ImageError("unreadable", f"{path}: cannot read ({exc.strerror or exc})")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError("too_large", f"{path}: more than the cap of {max_bytes:,} bytes "
                         f"(--max-file-size)")
    if not data:
        raise ImageError("empty", f"{path}: file is empty (0 bytes)")
    return data


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparent areas are composited on white;
    16/32-bit integer and float images are scaled to 8 bits by their range."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            top = 1.0 if arr.max(initial=0) <= 1.0 else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _resize_crop(im: Image.Image, pre: Preprocess) -> Image.Image:
    """Resize (short side or both sides) then centre-crop, as ``pre`` says.

    With a crop, only the source region that lands in the crop is resampled
    (PIL's ``box=``): the same pixels as resizing the whole image and then
    cropping (up to rounding), for about 40 % less work.
    """
    w, h = im.size
    resample = _RESAMPLE[pre.resample]
    if pre.mode == "squash":
        size = (pre.resize, pre.resize)
    else:
        scale = pre.resize / min(w, h)
        size = (max(pre.resize, round(w * scale)), max(pre.resize, round(h * scale)))
    if pre.crop is None:
        return im if size == (w, h) else im.resize(size, resample, reducing_gap=3.0)
    c = pre.crop
    left, top = (size[0] - c) // 2, (size[1] - c) // 2
    if size == (w, h):
        return im.crop((left, top, left + c, top + c))
    sx, sy = w / size[0], h / size[1]
    box = (left * sx, top * sy, (left + c) * sx, (top + c) * sy)
    return im.resize((c, c), resample, box=box, reducing_gap=3.0)


def _check_pixels(im: Image.Image, name: str) -> tuple[int, int]:
    """The image's size; ImageError ``too_large`` past :data:`MAX_PIXELS`
    (decompression-bomb guard), before any pixel is decoded."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError("too_large", f"{name}: {w}x{h} pixels is over the "
                         f"{MAX_PIXELS:,}-pixel limit (decompression-bomb guard)")
    return w, h


def open_image(data: bytes, name: str = "<bytes>", draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode bytes into an RGB PIL image with EXIF orientation applied.

    ``draft_size`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while
    decoding, never below that size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            _check_pixels(im, name)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            if draft_size is not None and im.format == "JPEG":
                im.draft("RGB", draft_size)
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"{name}: {exc}")
    except UnidentifiedImageError:
        if any(data.startswith(m) for m in _MAGIC):
            raise ImageError("corrupt", f"{name}: has an image signature but its header cannot be parsed")
        raise ImageError("not_image", f"{name}: not a recognised image format "
                         f"(first bytes {data[:8]!r})")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, MemoryError) as exc:
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise ImageError("truncated", f"{name}: image data ends early ({text})")
        raise ImageError("corrupt", f"{name}: cannot decode image data ({type(exc).__name__}: {text})")


def draft_target(size: tuple[int, int], pre: Preprocess) -> tuple[int, int] | None:
    """The smallest size the JPEG decoder may produce for this preprocessing."""
    if not pre.jpeg_draft:
        return None
    w, h = size
    if pre.mode == "squash":
        return (pre.resize, pre.resize)
    scale = pre.resize / min(w, h)
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def decode_for(data: bytes, pre: Preprocess, name: str = "<bytes>") -> np.ndarray:
    """Bytes -> uint8 (H, W, 3) array ready for ``pre.normalize``."""
    draft = None
    if pre.jpeg_draft and data[:3] == b"\xff\xd8\xff":
        try:
            with Image.open(io.BytesIO(data)) as probe:
                draft = draft_target(probe.size, pre)
        except Exception:
            draft = None  # open_image reports the real error below
    im = open_image(data, name, draft)
    try:
        im = _resize_crop(im, pre)
    except (OSError, ValueError, MemoryError) as exc:
        raise ImageError("corrupt", f"{name}: cannot resize ({exc})")
    return np.asarray(im, dtype=np.uint8)


def prepare_pil(im: Image.Image, pre: Preprocess, name: str = "<image>") -> np.ndarray:
    """An in-memory PIL image -> uint8 (H, W, 3) array (API input).
    A PIL image that cannot be loaded (a lazily opened file that is
    truncated or damaged, a zero-size image) raises :class:`ImageError`."""
    try:
        w, h = _check_pixels(im, name)
        if w == 0 or h == 0:
            raise ImageError("corrupt", f"{name}: the image has no pixels ({w}x{h})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            return np.asarray(_resize_crop(_to_rgb(ImageOps.exif_transpose(im)), pre), dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # one bad in-memory image must not lose the others
        text = str(exc)
        kind = "truncated" if "truncated" in text.lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageError(kind, f"{name}: cannot use this PIL image ({type(exc).__name__}: {text})")


def list_images(paths: list[str | os.PathLike], recursive: bool = False, extensions=None) -> list[str]:
    """Expand files and folders into a sorted list of files to score.

    Files named explicitly are kept whatever their extension (so a bad one
    is reported); folders contribute files with an extension Pillow can open
    (:data:`IMAGE_EXTENSIONS`), or one of ``extensions``. Missing paths are
    kept too: they become ``missing`` rows (the command line rejects them
    before this).
    """
    extensions = IMAGE_EXTENSIONS if extensions is None else extensions
    out: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(str(q) for q in it
                           if q.suffix.lower() in extensions and not q.is_dir())
            out.extend(found)
        else:
            out.append(str(p))
    return out
