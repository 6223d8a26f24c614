"""User comments per image, in the formats aesthetics data sets ship.

* a folder of ``<image id>.txt`` files, one comment per non-empty line
  (AVA-Comments style);
* DPC-Captions JSON: ``{"<id>.jpg": ["comment", ...], ...}``;
* Karpathy-style caption JSON (AVA-Captions, Food-IAC):
  ``{"images": [{"filename": "<id>.jpg", "sentences": ["..." | {"raw": "..."}]}]}``;
* JSONL: one ``{"image_id" | "id" | "filename": ..., "comment": "..." |
  "comments": [...]}`` per line (several lines per image are merged).

Every reader returns ``{image id: [comments]}``, the id being the file name
without its extension, so comments join to labels by image id.
"""

from __future__ import annotations

import json
from pathlib import Path

from .ava import LabelFormatError, jsonl_records


def image_id(name: str) -> str:
    """``"12345.jpg"`` / ``"dir/12345.jpg"`` / ``12345`` -> ``"12345"``."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext.lower() in {"jpg", "jpeg", "png", "webp", "txt", "tif", "tiff", "bmp"} else name


def _sentence(s) -> str:
    if isinstance(s, str):
        return s
    if isinstance(s, dict):
        if "raw" in s:
            return s["raw"]
        if "tokens" in s:
            return " ".join(s["tokens"])
    raise LabelFormatError(f"unrecognised sentence entry {s!r:.80}")


def read_utf8(path: str | Path) -> str:
    """A text file's contents; a file that is not UTF-8 is an error naming
    the file, the line and the byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LabelFormatError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
                               f"re-save the file as UTF-8") from None


def read_comment_folder(folder: str | Path) -> dict[str, list[str]]:
    out = {}
    for f in sorted(Path(folder).glob("*.txt")):
        lines = [ln.strip() for ln in read_utf8(f).splitlines()]
        out[image_id(f.name)] = [ln for ln in lines if ln]
    return out


def read_comment_json(path: str | Path) -> dict[str, list[str]]:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise LabelFormatError(f"{path}: not valid JSON ({exc})") from None
    out: dict[str, list[str]] = {}
    if isinstance(data, dict) and isinstance(data.get("images"), list):  # Karpathy style
        for entry in data["images"]:
            key = entry.get("filename") or entry.get("image_id") or entry.get("id")
            if key is None:
                raise LabelFormatError(f"{path}: an image entry has no filename or id")
            out.setdefault(image_id(key), []).extend(_sentence(s) for s in entry.get("sentences", []))
        return out
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):  # DPC-Captions
        return {image_id(k): [str(c) for c in v] for k, v in data.items()}
    raise LabelFormatError(f"{path}: neither DPC-Captions ({{'<id>.jpg': [...]}}) nor "
                           f"Karpathy-style ({{'images': [...]}}) comment JSON")


def read_comment_jsonl(path: str | Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n, row in jsonl_records(read_utf8(path).splitlines(), path):
        if not isinstance(row, dict):
            raise LabelFormatError(f"{path}:{n}: expected a JSON object ({{\"id\": ..., \"comment\": ...}})")
        key = row.get("image_id", row.get("id", row.get("filename")))
        if key is None:
            raise LabelFormatError(f"{path}:{n}: no image_id, id or filename")
        texts = row.get("comments", [row["comment"]] if "comment" in row else None)
        if texts is None:
            raise LabelFormatError(f"{path}:{n}: no comment or comments")
        out.setdefault(image_id(key), []).extend(_sentence(t) for t in texts)
    return out


def load_comments_option(path: str | Path) -> dict[str, list[str]]:
    """``--comments PATH`` read: a missing path is a usage error, a bad or
    non-UTF-8 file a data error naming file and line (both exit 2)."""
    from ..errors import DataError, UsageError

    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"--comments {p}: no such file or folder")
    try:
        return read_comments(p)
    except LabelFormatError as exc:
        raise DataError(str(exc)) from None


def read_comments(path: str | Path) -> dict[str, list[str]]:
    """Comments from a folder of .txt files, a .json or a .jsonl file."""
    path = Path(path)
    if path.is_dir():
        return read_comment_folder(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return read_comment_jsonl(path)
    if path.suffix.lower() == ".json":
        return read_comment_json(path)
    raise LabelFormatError(f"{path}: comments must be a folder of .txt files, .json or .jsonl")
