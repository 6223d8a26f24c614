"""Labelled image sets from a dataset SPEC, for evaluation and training.

A SPEC is one of:

* an AVA folder (holding ``AVA.txt`` / ``AVA_head.txt`` and/or ``labels/*.csv|json``,
  with optional ``aesthetics_image_lists/*.jpgl`` splits and ``images/``),
  or one AVA label file (``.txt``, CSV with ``score2..score11``, JSON with
  ``label``);
* a generic labels file, ``.csv`` or ``.jsonl``, or a folder holding
  ``labels.csv`` / ``labels.jsonl``: one row per image, naming it
  (``path``, ``image``, ``file``, ``filename``, ``image_id`` or ``id``) and
  giving one of: a 10-bin distribution (``score1..score10``, or a
  ``distribution`` / ``votes`` list), a MOS (``mos``, any scale), or a mean
  score on the 1-10 scale (``mean``, ``score`` or ``label``); an optional
  ``split`` column names each row's split.

Image files are looked up relative to ``images=`` (default: the labels'
folder, or its ``images/`` sub-folder for AVA); ids without an extension try
``.jpg``, ``.jpeg`` and ``.png``. Images missing on disk are counted and
listed, never fatal.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ava import BINS, LabelFormatError, VoteTable, jsonl_records, merge, open_text, read_ava_csv, read_ava_json, \
    read_ava_txt, read_id_list
from .comments import image_id, read_comments

PATH_KEYS = ("path", "image", "file", "filename", "image_id", "id")
MEAN_KEYS = ("mean", "score", "label")
DIST_KEYS = ("distribution", "votes")
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class LabelledSet:
    name: str
    kind: str  # "distribution", "mean" or "mos"
    ids: list[str]
    mean: np.ndarray
    distribution: np.ndarray | None = None
    names: list[str] | None = None  # file names/paths as given, per id
    root: Path | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)
    comments: dict[str, list[str]] | None = None
    sources: list[str] = field(default_factory=list)
    #: the label scale the file used ("0-100", ...) when mapped to 1-10
    scale: str | None = None
    #: rows left out while loading, by reason (e.g. {"no_votes": 3})
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def on_1_to_10(self) -> bool:
        return self.kind in ("distribution", "mean")

    def image_paths(self) -> list[str | None]:
        """Where each image should be (``None`` when there is no image root)."""
        if self.root is None:
            return [None] * len(self.ids)
        out = []
        for i, k in enumerate(self.ids):
            given = self.names[i] if self.names else k
            p = Path(given) if os.path.isabs(given) else self.root / given
            if not p.suffix:
                for ext in (".jpg", ".jpeg", ".png"):
                    if p.with_name(p.name + ext).exists():
                        p = p.with_name(p.name + ext)
                        break
                else:
                    p = p.with_name(p.name + ".jpg")
            out.append(str(p))
        return out

    def subset(self, ids: list[str], name: str | None = None) -> "LabelledSet":
        index = {k: i for i, k in enumerate(self.ids)}
        rows = [index[k] for k in ids if k in index]
        return LabelledSet(
            name or self.name, self.kind, [self.ids[r] for r in rows], self.mean[rows],
            None if self.distribution is None else self.distribution[rows],
            None if self.names is None else [self.names[r] for r in rows], self.root,
            {}, {}, None if self.comments is None else
            {self.ids[r]: self.comments[self.ids[r]] for r in rows if self.ids[r] in self.comments},
            list(self.sources), self.scale, dict(self.dropped))

    def split(self, name: str, seed: int = 0) -> tuple["LabelledSet", dict]:
        """The rows of split ``name``: a split this set defines, a list file,
        or ``train``/``val``/``test`` of a seeded 80/10/10 random split.
        Returns the subset and a description (how it was made, how many ids
        of the list have no labels). ``a+b`` is the union of splits a and b."""
        if "+" in name and not Path(name).is_file():
            parts = [self.split(part, seed) for part in name.split("+")]
            ids = list(dict.fromkeys(k for sub, _ in parts for k in sub.ids))
            sub = self.subset(ids, f"{self.name}:{name}")
            return sub, {"split": name, "how": " + ".join(info["how"] for _, info in parts),
                         "listed": sum(info["listed"] for _, info in parts), "with_labels": len(sub),
                         "without_labels": sum(info["without_labels"] for _, info in parts)}
        if name in self.splits:
            ids = self.splits[name]
            how = f"list {name}"
        elif self.split_of and name in set(self.split_of.values()):
            ids = [k for k in self.ids if self.split_of.get(k) == name]
            how = f"split column = {name}"
        elif Path(name).is_file():
            ids = [image_id(x) for x in read_id_list(name)]
            how = f"list file {name}"
        elif name in SPLIT_FRACTIONS:
            ids = random_split(self.ids, seed)[name]
            how = f"random 80/10/10 split, seed {seed}"
        else:
            known = sorted(set(self.splits) | set(self.split_of.values()))
            raise ValueError(f"unknown split {name!r}: use one of {known or ['train', 'val', 'test']}, "
                             f"or a file listing image ids")
        sub = self.subset(ids, f"{self.name}:{name}")
        return sub, {"split": name, "how": how, "listed": len(ids), "with_labels": len(sub),
                     "without_labels": len(ids) - len(sub)}


def random_split(ids: list[str], seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_train = int(round(SPLIT_FRACTIONS["train"] * len(ids)))
    n_val = int(round(SPLIT_FRACTIONS["val"] * len(ids)))
    pick = lambda idx: [ids[i] for i in sorted(idx)]  # noqa: E731
    return {"train": pick(order[:n_train]), "val": pick(order[n_train:n_train + n_val]),
            "test": pick(order[n_train + n_val:])}


def _from_votes(table: VoteTable, name: str) -> LabelledSet:
    """Images without a single vote have no score: they are left out (and counted)."""
    keep = np.flatnonzero(table.n_votes > 0)
    dropped = len(table) - len(keep)
    return LabelledSet(name, "distribution", [table.ids[i] for i in keep], table.mean[keep],
                       table.distribution[keep], sources=list(table.sources),
                       dropped={"no_votes": dropped} if dropped else {})


def _is_ava_csv(path: Path) -> bool:
    with open_text(path) as fh:
        header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    return "image_id" in header and "score2" in header and "score11" in header


def _ava_folder_tables(folder: Path) -> list[VoteTable]:
    tables = []
    for f in sorted(folder.glob("AVA*.txt")):
        tables.append(read_ava_txt(f))
    labels = folder / "labels"
    if labels.is_dir():
        for f in sorted(labels.iterdir()):
            if f.suffix.lower() == ".csv":
                tables.append(read_ava_csv(f))
            elif f.suffix.lower() == ".json":
                tables.append(read_ava_json(f))
    return tables


def read_generic(path: Path) -> tuple[list[tuple[int, dict]], str]:
    """(line number, row) pairs of a generic labels file; header names are
    lower-cased, a UTF-8 byte-order mark is accepted."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with open_text(path) as fh:
            for n, row in jsonl_records(fh, path):
                if not isinstance(row, dict):
                    raise LabelFormatError(f"{path}:{n}: expected a JSON object "
                                           f"({{\"path\": ..., \"mean\": ...}}), got a {type(row).__name__}")
                rows.append((n, {str(k).strip().lower(): v for k, v in row.items()}))
        return rows, "jsonl"
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames:
            reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        return [(reader.line_num, row) for row in reader], "csv"


def parse_scale(text: str | None) -> tuple[float, float] | None:
    """``"0-100"`` -> (0.0, 100.0); None stays None."""
    if text is None:
        return None
    parts = str(text).split("-")
    try:
        lo, hi = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if not hi > lo:
        raise ValueError(f"--label-scale {text}: give the scale as LOW-HIGH, e.g. 0-100 or 1-5")
    return lo, hi


def _number(v, what: str) -> float:
    if isinstance(v, bool) or v is None or (isinstance(v, str) and not v.strip()):
        raise ValueError(f"{what} is empty")
    x = float(v)
    if not np.isfinite(x):
        raise ValueError(f"{what} is {v!r}, not a finite number")
    return x


def generic_set(path: Path, name: str | None = None, label_scale: str | None = None) -> LabelledSet:
    """A generic labels file (see the module docstring). Every label is
    checked: NaN/inf, negative votes and mean scores outside 1-10 (or
    outside ``label_scale``, which maps the labels linearly to 1-10) are
    errors naming the file and line."""
    rows, _ = read_generic(path)
    if not rows:
        raise LabelFormatError(f"{path}: no rows")
    scale = parse_scale(label_scale)
    keys = set().union(*(set(r) for _, r in rows))
    key = next((k for k in PATH_KEYS if k in keys), None)
    if key is None:
        raise LabelFormatError(f"{path}: no column naming the image (one of {', '.join(PATH_KEYS)})")
    bins = [f"score{k}" for k in range(1, 11)]
    ids, names, means, dists, split_of = [], [], [], [], {}
    dropped = 0
    if all(b in keys for b in bins) or any(k in keys for k in DIST_KEYS):
        kind = "distribution"
        if scale is not None:
            raise LabelFormatError(f"{path}: --label-scale applies to mean or MOS labels; "
                                   f"vote distributions are always on 1-10")
    elif "mos" in keys:
        kind = "mos"
    elif any(k in keys for k in MEAN_KEYS):
        kind = "mean"
    else:
        raise LabelFormatError(f"{path}: no label column: give score1..score10, distribution, "
                               f"votes, mos, mean, score or label")
    label_key = "mos" if kind == "mos" else next((k for k in MEAN_KEYS if k in keys), None)
    for n, row in rows:
        where = f"{path}:{n}"
        given = row.get(key)
        if given is None or not str(given).strip():
            raise LabelFormatError(f"{where}: empty image {key!r}")
        try:
            if kind == "distribution":
                if all(b in row for b in bins):
                    d = np.array([_number(row[b], b) for b in bins])
                else:
                    dk = next((k for k in DIST_KEYS if k in row), None)
                    if dk is None:
                        raise ValueError(f"no {' or '.join(DIST_KEYS)} in this row")
                    v = row[dk]
                    d = np.array(json.loads(v) if isinstance(v, str) else v, dtype=np.float64)
                if d.shape != (10,) or (d < 0).any() or not np.isfinite(d).all():
                    raise ValueError("a distribution needs 10 non-negative finite numbers")
                if d.sum() == 0:
                    dropped += 1  # no votes: no score
                    continue
                d = d / d.sum()
                dists.append(d)
                means.append(float(d @ BINS))
            else:
                if label_key not in row:
                    raise ValueError(f"no {label_key!r} in this row")
                y = _number(row[label_key], label_key)
                if scale is not None:
                    if not scale[0] <= y <= scale[1]:
                        raise ValueError(f"{label_key} {y:g} is outside --label-scale "
                                         f"{scale[0]:g}-{scale[1]:g}")
                    y = 1.0 + 9.0 * (y - scale[0]) / (scale[1] - scale[0])
                elif kind == "mean" and not 1.0 <= y <= 10.0:
                    raise ValueError(f"{label_key} {y:g} is outside 1-10; if the file uses another "
                                     f"scale, say which with --label-scale (e.g. 0-100 or 1-5)")
                means.append(y)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise LabelFormatError(f"{where}: bad label ({exc})") from None
        given = str(given).strip()
        k = image_id(given)
        ids.append(k)
        names.append(given)
        if row.get("split"):
            split_of[k] = str(row["split"])
    if len(set(ids)) != len(ids):
        dup = next(k for k in ids if ids.count(k) > 1)
        raise LabelFormatError(f"{path}: image {dup!r} appears in more than one row")
    if not ids:
        raise LabelFormatError(f"{path}: no row has a label (every vote distribution is empty)")
    if scale is not None and kind == "mos":
        kind = "mean"
    return LabelledSet(name or path.stem, kind, ids, np.array(means),
                       np.stack(dists) if dists else None, names, path.parent, {}, split_of,
                       sources=[str(path)], scale=label_scale if scale is not None else None,
                       dropped={"no_votes": dropped} if dropped else {})


HENTSCHEL_TEST = "idealo_ava_labels_test.json"


def load_dataset(spec: str | Path, images: str | Path | None = None,
                 comments: str | Path | None = None, label_scale: str | None = None) -> LabelledSet:
    """A :class:`LabelledSet` from a SPEC (see the module docstring).

    ``label_scale`` ("0-100", "1-5", ...) says the scale of a generic file's
    mean or MOS labels; they are checked against it and mapped to 1-10.

    An AVA folder whose ``labels/`` holds ``idealo_ava_labels_test.json``
    also gets the named splits ``hentschel-test`` (its 25,551 ids, the test
    set of Hentschel et al. 2022) and ``hentschel-train`` (every other
    labelled id; the paper reports 229,971 training images).
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec}: no such file or folder")
    ava_dir = None
    if path.is_dir():
        generic = next((path / f for f in ("labels.csv", "labels.jsonl") if (path / f).exists()), None)
        if generic is not None:
            ds = generic_set(generic, path.name, label_scale)
        else:
            tables = _ava_folder_tables(path)
            if not tables:
                raise LabelFormatError(f"{path}: no labels.csv / labels.jsonl and no AVA label "
                                       f"files (AVA*.txt, labels/*.csv, labels/*.json)")
            ds = _from_votes(merge(*tables), path.name)
            ava_dir = path
    else:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            ds = _from_votes(read_ava_txt(path), path.stem)
            ava_dir = path.parent
        elif suffix == ".json":
            ds = _from_votes(read_ava_json(path), path.stem)
        elif suffix == ".csv" and _is_ava_csv(path):
            ds = _from_votes(read_ava_csv(path), path.stem)
        elif suffix in (".csv", ".jsonl", ".ndjson"):
            ds = generic_set(path, label_scale=label_scale)
        else:
            raise LabelFormatError(f"{path}: unknown label format (use .txt, .csv, .json or .jsonl)")
    if label_scale is not None and ds.kind == "distribution" and ds.scale is None:
        raise LabelFormatError(f"{path}: --label-scale applies to mean or MOS labels; AVA vote "
                               f"histograms are always on 1-10")
    if ava_dir is not None:
        lists = ava_dir / "aesthetics_image_lists"
        if lists.is_dir():
            ds.splits = {f.stem: [image_id(x) for x in read_id_list(f)] for f in sorted(lists.glob("*.jpgl"))}
        ht = ava_dir / "labels" / HENTSCHEL_TEST
        if ht.is_file():
            test_ids = list(read_ava_json(ht).ids)
            held = set(test_ids)
            ds.splits["hentschel-test"] = test_ids
            ds.splits["hentschel-train"] = [k for k in ds.ids if k not in held]
        if images is None and (ava_dir / "images").is_dir():
            images = ava_dir / "images"
    if images is not None:
        ds.root = Path(images).expanduser()
    elif ds.kind == "distribution" and ds.names is None:
        ds.root = None  # AVA labels without an image root: summaries only
    if comments is not None:
        ds.comments = read_comments(comments)
    return ds


def check_images(ds: LabelledSet, examples: int = 5) -> dict:
    """How many of the set's images are on disk (only when it has a root)."""
    if ds.root is None:
        return {"root": None}
    paths = ds.image_paths()
    missing = [p for p in paths if not os.path.exists(p)]
    return {"root": str(ds.root), "found": len(paths) - len(missing), "missing": len(missing),
            "missing_examples": missing[:examples]}


def summary(ds: LabelledSet) -> dict:
    out = {"name": ds.name, "sources": ds.sources, "images": len(ds), "label_kind": ds.kind,
           "mean_score": {"mean": round(float(ds.mean.mean()), 4), "std": round(float(ds.mean.std()), 4),
                          "min": round(float(ds.mean.min()), 4), "max": round(float(ds.mean.max()), 4)}}
    if ds.on_1_to_10:
        out["above_5"] = int((ds.mean > 5).sum())
    if ds.scale:
        out["label_scale"] = f"{ds.scale}, mapped to 1-10"
    if ds.dropped:
        out["dropped"] = ds.dropped
    id_set = set(ds.ids)
    splits = {name: {"listed": len(ids), "with_labels": sum(k in id_set for k in ids)}
              for name, ids in ds.splits.items()}
    for name in sorted(set(ds.split_of.values())):
        splits[name] = {"listed": sum(1 for v in ds.split_of.values() if v == name)}
    if splits:
        out["splits"] = splits
    if ds.comments is not None:
        joined = [k for k in ds.comments if k in id_set]
        out["comments"] = {"images_with_comments": len(ds.comments), "joined_to_labels": len(joined),
                           "comments": sum(len(v) for v in ds.comments.values())}
    out["images_on_disk"] = check_images(ds)
    return out
