"""AVA (Murray et al., CVPR 2012) in its official and common derived formats.

* ``AVA.txt``: ``index image_id v1 .. v10 tag1 tag2 challenge_id`` (v_k =
  number of votes for score k);
* CSV: ``image_id,score2..score11,tag1,tag2,tag3`` (score2..score11 are the
  votes for scores 1..10; tag3 is the challenge id);
* JSON: ``[{"image_id": "...", "label": [v1, .., v10]}, ...]``;
* split lists (``*.jpgl``: one id per line), the style lists
  (``train.jpgl`` + ``train.lab``, ``test.jpgl`` + ``test.multilab``,
  ``styles.txt``) and the ``id name`` files (``tags.txt``, ``challenges.txt``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BINS = np.arange(1, 11, dtype=np.float64)


class LabelFormatError(ValueError):
    pass


@dataclass
class VoteTable:
    """Per-image 10-bin vote histograms with optional tags and challenge ids."""

    ids: list[str]
    votes: np.ndarray  # (N, 10) int64
    tags: np.ndarray | None = None  # (N, 2) int, 0 = none
    challenge: np.ndarray | None = None  # (N,) int
    sources: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.votes = np.asarray(self.votes, dtype=np.int64).reshape(-1, 10)
        if len(self.ids) != len(self.votes):
            raise LabelFormatError("ids and votes differ in length")
        self.index = {k: i for i, k in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_votes(self) -> np.ndarray:
        return self.votes.sum(1)

    @property
    def distribution(self) -> np.ndarray:
        """Votes / total; rows of images with no votes are NaN."""
        n = self.votes.sum(1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.votes / np.where(n == 0, np.nan, n)

    @property
    def mean(self) -> np.ndarray:
        """Mean score; NaN for an image with no votes (it has no score)."""
        return self.distribution @ BINS

    @property
    def std(self) -> np.ndarray:
        d = self.distribution
        return np.sqrt(np.sum(d * (BINS[None, :] - self.mean[:, None]) ** 2, axis=1))

    @property
    def binary(self) -> np.ndarray:
        """1 where the mean score is above 5 (the usual AVA binary label),
        0 where it is not, -1 for images with no votes (no label)."""
        m = self.mean
        return np.where(np.isnan(m), -1, (m > 5.0).astype(np.int64))

    def subset(self, ids) -> tuple["VoteTable", list[str]]:
        """The rows for ``ids`` (in that order) and the ids that have no votes."""
        keep = [i for i in ids if i in self.index]
        missing = [i for i in ids if i not in self.index]
        rows = [self.index[i] for i in keep]
        sub = VoteTable(keep, self.votes[rows],
                        None if self.tags is None else self.tags[rows],
                        None if self.challenge is None else self.challenge[rows], list(self.sources))
        return sub, missing


def jsonl_records(lines, path) -> list[tuple[int, object]]:
    """(line number, parsed value) of each non-blank line of a JSON-lines
    text; a line that is not JSON is a :class:`LabelFormatError` naming it."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise LabelFormatError(f"{path}:{n}: not valid JSON ({exc})") from None
    return out


def open_text(path: str | Path) -> io.StringIO:
    """A label file as text, read and decoded once: UTF-8 with or without a
    byte-order mark. Other encodings (UTF-16 from spreadsheet exports,
    Latin-1) are refused with a message naming the file, not a decoding
    traceback. Line endings are left to the reader (as ``newline=""``)."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 3 and data[1:2] == b"\x00"):
        raise LabelFormatError(f"{path}:1: the file is UTF-16 text; save it as UTF-8 (CSV UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LabelFormatError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start:exc.start + 1]!r}); "
                               f"save it as UTF-8") from None
    return io.StringIO(text, newline="")


def _table(ids, votes, tags, challenge, source) -> VoteTable:
    if not ids:
        raise LabelFormatError(f"{source}: no rows")
    if len(set(ids)) != len(ids):
        raise LabelFormatError(f"{source}: duplicate image ids")
    return VoteTable(ids, np.array(votes), np.array(tags) if tags else None,
                     np.array(challenge) if challenge else None, [str(source)])


def read_ava_txt(path: str | Path) -> VoteTable:
    ids, votes, tags, chal = [], [], [], []
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 15:
                raise LabelFormatError(f"{path}:{n}: expected 15 columns (index, image id, 10 vote "
                                       f"counts, 2 tags, challenge), got {len(parts)}")
            try:
                nums = [int(x) for x in parts[2:]]
            except ValueError:
                raise LabelFormatError(f"{path}:{n}: non-integer vote, tag or challenge") from None
            if any(v < 0 for v in nums[:10]):
                raise LabelFormatError(f"{path}:{n}: negative vote count")
            ids.append(parts[1])
            votes.append(nums[:10])
            tags.append(nums[10:12])
            chal.append(nums[12])
    return _table(ids, votes, tags, chal, path)


def read_ava_csv(path: str | Path) -> VoteTable:
    ids, votes, tags, chal = [], [], [], []
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames:
            reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        cols = [f"score{k}" for k in range(2, 12)]
        if reader.fieldnames is None or "image_id" not in reader.fieldnames or \
                any(c not in reader.fieldnames for c in cols):
            raise LabelFormatError(f"{path}: expected columns image_id,score2..score11[,tag1,tag2,tag3]")
        has_tags = all(c in reader.fieldnames for c in ("tag1", "tag2", "tag3"))
        for n, row in enumerate(reader, 2):
            try:
                votes.append([int(float(row[c])) for c in cols])
                if has_tags:
                    tags.append([int(float(row["tag1"])), int(float(row["tag2"]))])
                    chal.append(int(float(row["tag3"])))
            except (TypeError, ValueError):
                raise LabelFormatError(f"{path}:{reader.line_num}: non-numeric vote or tag") from None
            if any(v < 0 for v in votes[-1]):
                raise LabelFormatError(f"{path}:{reader.line_num}: negative vote count")
            ident = str(row["image_id"] or "").strip()
            if not ident:
                raise LabelFormatError(f"{path}:{reader.line_num}: empty image_id")
            ids.append(ident)
    return _table(ids, votes, tags, chal, path)


def read_ava_json(path: str | Path) -> VoteTable:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LabelFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data or not all(
            isinstance(d, dict) and "image_id" in d and "label" in d for d in data):
        raise LabelFormatError(f'{path}: expected a list of {{"image_id", "label": [10 votes]}}')
    ids = [str(d["image_id"]) for d in data]
    votes = [d["label"] for d in data]
    for k, v in enumerate(votes):
        if not isinstance(v, list) or len(v) != 10 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 and x == int(x) for x in v):
            raise LabelFormatError(f"{path}: entry {k + 1} (image_id {ids[k]}): label must be 10 "
                                   f"non-negative vote counts, not {v!r}"[:300])
    return _table(ids, votes, None, None, path)


def read_votes(path: str | Path) -> VoteTable:
    """Any of the three AVA label formats, by extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_ava_csv(path)
    if suffix == ".json":
        return read_ava_json(path)
    return read_ava_txt(path)


def merge(*tables: VoteTable) -> VoteTable:
    """The union of several tables. Where an id appears in more than one,
    the histograms must agree: a disagreement raises, naming the ids."""
    ids: list[str] = []
    rows: dict[str, tuple] = {}
    conflicts = []
    for t in tables:
        for i, k in enumerate(t.ids):
            row = (t.votes[i], None if t.tags is None else t.tags[i],
                   None if t.challenge is None else t.challenge[i])
            if k in rows:
                if not np.array_equal(rows[k][0], row[0]):
                    conflicts.append(k)
                elif rows[k][1] is None and row[1] is not None:
                    rows[k] = row
            else:
                rows[k] = row
                ids.append(k)
    if conflicts:
        raise LabelFormatError(f"{len(conflicts)} image ids have different vote histograms in "
                               f"different files, e.g. {conflicts[:5]}")
    have_tags = all(rows[k][1] is not None for k in ids)
    return VoteTable(ids, np.stack([rows[k][0] for k in ids]),
                     np.stack([rows[k][1] for k in ids]) if have_tags else None,
                     np.array([rows[k][2] for k in ids]) if have_tags else None,
                     [s for t in tables for s in t.sources])


def read_id_list(path: str | Path) -> list[str]:
    """A split list: one image id (or file name) per line."""
    return [line.strip() for line in open(path, encoding="utf-8") if line.strip()]


def read_id_names(path: str | Path) -> dict[int, str]:
    """``tags.txt`` / ``challenges.txt`` / ``styles.txt``: ``id name`` per line."""
    out = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1].strip()
    return out


@dataclass
class StyleLists:
    names: list[str]  # 14 style names, index k = style k+1
    train_ids: list[str]
    train_labels: np.ndarray  # (N,) in 1..14
    test_ids: list[str]
    test_labels: np.ndarray  # (M, 14) 0/1


def read_style_lists(folder: str | Path) -> StyleLists:
    folder = Path(folder)
    names_map = read_id_names(folder / "styles.txt")
    names = [names_map[k] for k in sorted(names_map)]
    train_ids = read_id_list(folder / "train.jpgl")
    train_labels = np.array([int(x) for x in read_id_list(folder / "train.lab")])
    test_ids = read_id_list(folder / "test.jpgl")
    test_labels = np.array([[int(v) for v in line.split()] for line in
                            open(folder / "test.multilab", encoding="utf-8") if line.strip()])
    if len(train_ids) != len(train_labels) or len(test_ids) != len(test_labels):
        raise LabelFormatError(f"{folder}: list and label files differ in length")
    if test_labels.shape[1] != len(names):
        raise LabelFormatError(f"{folder}: test.multilab has {test_labels.shape[1]} columns, "
                               f"styles.txt names {len(names)} styles")
    return StyleLists(names, train_ids, train_labels, test_ids, test_labels)
