"""Per-image, per-attribute data: descriptions (texts) and scores (numbers).

Descriptions (``--attributes``), each reader giving
``{image id: {attribute: [texts]}}``:

* JSON: ``{"<id>.jpg": {"lighting": "text" | ["text", ...], ...}, ...}``;
* JSONL: one ``{"id" | "image_id" | "filename": ..., "<attribute>": text |
  [texts], ...}`` per line (several lines per image are merged);
* CSV: an id column (``id``, ``image_id``, ``filename``, ``path`` or
  ``image``) and one column per attribute; an empty cell is a missing
  attribute.

Scores (``--attribute-labels``): the same layouts with numbers (1-10) in
place of texts; a CSV may hold other columns too (the synthetic world's
``labels.csv``), so the attributes read are the ones named, by default those
of :data:`DEFAULT_ATTRIBUTES` that are present.

Attribute names are free. A missing attribute (or an empty text) is simply
absent from that image's entry: the losses mask it out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .ava import LabelFormatError, jsonl_records
from .comments import image_id, read_utf8

#: Huang et al.'s seven attributes (TPAMI 2024), the default set
DEFAULT_ATTRIBUTES = ("composition", "depth_of_field", "lighting", "colour", "technical_quality",
                      "content", "emotion")
ID_KEYS = ("id", "image_id", "filename", "path", "image", "file")


def _texts(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LabelFormatError(f"{where}: an attribute's description must be a text or a list of texts")
    return [" ".join(v.split()) for v in value if v.strip()]


def _merge(out: dict, key: str, attrs: dict, where: str) -> None:
    entry = out.setdefault(image_id(key), {})
    for name, value in attrs.items():
        texts = _texts(value, f"{where}, attribute {name!r}")
        if texts:
            entry.setdefault(str(name), []).extend(texts)


def _id_of(row: dict, where: str) -> str:
    key = next((row[k] for k in ID_KEYS if row.get(k) not in (None, "")), None)
    if key is None:
        raise LabelFormatError(f"{where}: no id column ({', '.join(ID_KEYS)})")
    return str(key)


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(where, record) of a JSON mapping, a JSONL file or a CSV."""
    text = read_utf8(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        out = []
        for n, row in jsonl_records(text.splitlines(), path):
            if not isinstance(row, dict):
                raise LabelFormatError(f"{path}:{n}: expected a JSON object")
            if not any(k in row for k in ID_KEYS) and len(row) == 1 and isinstance(next(iter(row.values())), dict):
                key, attrs = next(iter(row.items()))  # {"<id>": {...}} per line
                row = {"id": key, **attrs}
            out.append((f"{path}:{n}", row))
        return out
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelFormatError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise LabelFormatError(f"{path}: expected {{\"<id>\": {{\"<attribute>\": ...}}}}")
        return [(f"{path}, image {k!r}", {"id": k, **v}) for k, v in data.items()]
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not any(k in (reader.fieldnames or []) for k in ID_KEYS):
            raise LabelFormatError(f"{path}: no id column ({', '.join(ID_KEYS)})")
        return [(f"{path}:{n + 2}", row) for n, row in enumerate(reader)]
    raise LabelFormatError(f"{path}: attribute files are .json, .jsonl or .csv")


def read_attributes(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Attribute descriptions: ``{image id: {attribute: [texts]}}``."""
    path = Path(path)
    out: dict[str, dict[str, list[str]]] = {}
    for where, row in _rows(path):
        key = _id_of(row, where)
        _merge(out, key, {k: (v or None) for k, v in row.items() if k not in ID_KEYS}, where)
    return out


def attribute_names(descriptions: dict[str, dict[str, list[str]]]) -> list[str]:
    """The attributes a description set uses: the default seven first (in
    their order), then any others alphabetically."""
    seen = {a for entry in descriptions.values() for a in entry}
    return [a for a in DEFAULT_ATTRIBUTES if a in seen] + sorted(seen - set(DEFAULT_ATTRIBUTES))


def read_attribute_scores(path: str | Path, names: list[str] | None = None) -> tuple[list[str], dict]:
    """Attribute scores: (attribute names, ``{image id: {attribute: score}}``).
    ``names``: the attributes to read (default: those of the default seven
    present). An empty cell is a missing score; anything else that is not a
    number is an error naming the file and row."""
    path = Path(path)
    rows = _rows(path)
    present = set()
    for _, row in rows:
        present |= {k for k in row if k not in ID_KEYS}
    if names is None:
        names = [a for a in DEFAULT_ATTRIBUTES if a in present]
        if not names:
            raise LabelFormatError(f"{path}: none of the default attributes ({', '.join(DEFAULT_ATTRIBUTES)}) "
                                   f"is there; name yours with --attribute-names")
    lacking = [a for a in names if a not in present]
    if lacking:
        raise LabelFormatError(f"{path}: no attribute {', '.join(lacking)} (it has {', '.join(sorted(present))})")
    out: dict[str, dict] = {}
    for where, row in rows:
        entry = out.setdefault(image_id(_id_of(row, where)), {})
        for a in names:
            value = row.get(a)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise LabelFormatError(f"{where}: attribute {a!r} is {value!r}, not a number") from None
            if not math.isfinite(number):
                raise LabelFormatError(f"{where}: attribute {a!r} is {value!r}, not a finite number")
            entry[a] = number
    return list(names), out


def load_attributes_option(path: str | Path, option: str = "--attributes") -> dict[str, dict[str, list[str]]]:
    """``--attributes PATH`` read: a missing path is a usage error, a bad file a data error."""
    from ..errors import DataError, UsageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{option} {p}: no such file")
    try:
        return read_attributes(p)
    except LabelFormatError as exc:
        raise DataError(str(exc)) from None
