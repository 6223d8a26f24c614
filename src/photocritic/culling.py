"""``photocritic cull``: group bursts and near-duplicates, pick the best of
each group, write star ratings, move rejects aside - and never lose a photo.

**Grouping.** Two photos are linked when their image embeddings are similar
(cosine of the model's features, centred on the run's mean, at least
``similarity``) *and* they were taken within ``burst_gap`` seconds of each
other (EXIF DateTimeOriginal, with SubSecTimeOriginal where present). A
photo without a capture time is linked by similarity alone, with the
stricter ``similarity_without_time``. Photos whose embeddings are nearly
identical (cosine at least ``DUPLICATE_COSINE`` before centring) are linked
as duplicates when taken within ``burst_gap`` or when either lacks a time. With ``phash``, photos whose perceptual
hashes (the ``imagehash`` package) differ in at most ``phash_distance`` bits
are linked whatever their times: exact and re-encoded duplicates. Groups are
the connected components.

**Ranking.** Within a group, by score; scores within ``tie`` of each other
are ordered by sharpness, sharper first: the variance of the Laplacian of
the grey image (about 512 px on its long side) over the variance of the
grey image itself. The ratio is the share of the image's contrast that is
fine detail, so it does not change with exposure or contrast: brightening a
frame 2x quadruples its Laplacian variance, and would make a plain
Laplacian-variance tie-break prefer the over-exposed frame of a burst.
Rank 1 is ``keep``; the others ``similar`` (kept, lower rank); any photo
scoring below ``reject_below`` is ``reject``.

**Safety.** Nothing is ever deleted. ``--move-rejects DIR`` moves rejected
files (and their sidecars) with a manifest of every move and its SHA-256;
``photocritic cull --undo MANIFEST`` moves them back. ``--dry-run`` does
nothing to any file and says what would happen.

RAW files (CR2, NEF, ARW, DNG, ...) are scored from their embedded JPEG
preview (rawpy, else ``exiftool -b -PreviewImage``/``-JpgFromRaw``); their
sidecars get the rating.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import UsageError

RAW_EXTENSIONS = {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf",
                  ".rw2", ".pef", ".srw", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".x3f"}
DECISIONS = ("keep", "similar", "reject")
COLUMNS = ["path", "group", "rank", "score", "percentile", "decision", "rating", "capture_time", "sharpness",
           "status", "error"]
MANIFEST_FORMAT = "photocritic-cull-moves"
#: embeddings this close (cosine, before centring) are the same photo: always one group. Measured
#: with lite: a JPEG re-save at quality 90 stays above 0.9995, different scenes (overlapping crops
#: of one photo) reached 0.9958; heavier re-encodes are what --phash is for
DUPLICATE_COSINE = 0.999


@dataclass
class CullOptions:
    #: cosine of centred embeddings to link two photos taken within burst_gap
    similarity: float = 0.2
    #: seconds between two photos of one burst
    burst_gap: float = 5.0
    #: cosine to link photos without a capture time
    similarity_without_time: float = 0.8
    #: also link perceptual-hash near-duplicates (exact or re-encoded copies)
    phash: bool = False
    phash_distance: int = 6
    #: photos scoring below this are rejected
    reject_below: float = 4.0
    #: scores closer than this are a tie, broken by sharpness
    tie: float = 0.05


@dataclass
class CullRow:
    path: str
    group: int | None = None
    rank: int | None = None
    score: float = math.nan
    percentile: float | None = None
    decision: str = ""
    rating: int | None = None
    capture_time: str = ""
    sharpness: float | None = None
    status: str = "pending"
    error: str = ""
    #: seconds since the epoch (not written out)
    t: float | None = None

    def as_dict(self, extra=()) -> dict:
        d = {c: getattr(self, c) for c in COLUMNS}
        d["score"] = None if math.isnan(self.score) else round(float(self.score), 6)
        return d


# -- capture time, sharpness, hashes ----------------------------------------------------

def capture_time(path: str) -> float | None:
    """EXIF DateTimeOriginal (+ SubSecTimeOriginal) as seconds since the
    epoch, read from the header only; None where there is none."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(0x8769)
            stamp = sub.get(36867) or exif.get(306)
            frac = sub.get(37521) or ""
    except Exception:  # noqa: BLE001 - no readable EXIF: no time
        return None
    return parse_exif_time(stamp, frac)


def parse_exif_time(stamp, subsec="") -> float | None:
    if not stamp:
        return None
    try:
        t = dt.datetime.strptime(str(stamp).strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    digits = "".join(c for c in str(subsec) if c.isdigit())
    return t.replace(tzinfo=dt.timezone.utc).timestamp() + (float("0." + digits) if digits else 0.0)


def _grey(path: str, size: int = 512):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.draft("L", (size, size))
        im = ImageOps.exif_transpose(im).convert("L")
        im.thumbnail((size, size))
        return im.copy()


def sharpness(path: str) -> float | None:
    """Variance of the 4-neighbour Laplacian of the grey image (~512 px)
    over the variance of the grey image: invariant to exposure and contrast
    (0 for a flat image)."""
    try:
        g = np.asarray(_grey(path), np.float64)
    except Exception:  # noqa: BLE001
        return None
    return laplacian_ratio(g)


def laplacian_ratio(g: np.ndarray) -> float:
    """var(4-neighbour Laplacian of ``g``, inner pixels) / var(``g``)."""
    g = np.asarray(g, np.float64)
    if g.ndim != 2 or min(g.shape) < 3:
        return 0.0
    lap = (-4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:])
    var = float(g.var())
    return float(lap.var()) / var if var > 1e-9 else 0.0


def phash(path: str) -> int | None:
    try:
        import imagehash
    except ImportError:
        raise UsageError("--phash needs the imagehash package: pip install imagehash") from None
    try:
        return int(str(imagehash.phash(_grey(path, 256))), 16)
    except Exception:  # noqa: BLE001
        return None


# -- grouping -----------------------------------------------------------------------------

class _Union:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, i):
        while self.p[i] != i:
            self.p[i] = self.p[self.p[i]]
            i = self.p[i]
        return i

    def join(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


#: entries of one block of pairwise similarities or hash distances (32 MB of float64): grouping
#: 100,000 photos never holds an N x N matrix
PAIR_BLOCK = 1 << 22
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount64(v: np.ndarray, native: bool = hasattr(np, "bitwise_count")) -> np.ndarray:
    """Set bits of each uint64 (numpy's ``bitwise_count`` where it has one, numpy >= 2)."""
    if native:
        return np.bitwise_count(v)
    v = np.ascontiguousarray(v)
    return _POPCOUNT8[v.view(np.uint8)].reshape(v.shape + (8,)).sum(-1)


def _row_blocks(rows: int, cols: int):
    step = max(1, PAIR_BLOCK // max(cols, 1))
    return ((s, min(s + step, rows)) for s in range(0, rows, step))


class _Links:
    """Which pairs of photos a cosine rule links: centred cosine (on the
    run's mean) at least a threshold, or raw cosine at least
    ``DUPLICATE_COSINE``. Both come from one product of the raw vectors
    (with c = r - m, c_i.c_j = r_i.r_j - r_i.m - r_j.m + m.m), compared
    against threshold x norms rather than divided. A photo whose centred
    vector is (nearly) zero - two identical photos alone in a run - is
    linked by the raw rule only."""

    def __init__(self, r: np.ndarray):
        self.r = r
        n = len(r)
        self.m = r.mean(0) if n > 1 else np.zeros(r.shape[1])
        self.mm = float(self.m @ self.m)
        self.rm = r @ self.m
        self.rn = np.linalg.norm(r, axis=1)
        self.cn = np.empty(n)
        for s, e in _row_blocks(n, r.shape[1]):
            self.cn[s:e] = np.linalg.norm(r[s:e] - self.m, axis=1)
        self.cn[self.cn <= 1e-9 * np.maximum(self.rn, 1e-12)] = np.inf  # no direction: never centred-linked

    def __call__(self, rows: np.ndarray, cols: np.ndarray, centred_at_least: float) -> np.ndarray:
        g = self.r[rows] @ self.r[cols].T
        link = g >= DUPLICATE_COSINE * np.maximum(np.outer(self.rn[rows], self.rn[cols]), 1e-24)
        g -= self.rm[rows, None]
        g -= self.rm[None, cols]
        g += self.mm
        link |= g >= centred_at_least * np.outer(self.cn[rows], self.cn[cols])
        return link


def group_photos(emb: np.ndarray, times: list[float | None], opts: CullOptions,
                 hashes: list[int | None] | None = None) -> np.ndarray:
    """Group ids (0..G-1, in order of first appearance) for N photos (see the module docstring)."""
    n = len(emb)
    if n == 0:
        return np.zeros(0, int)
    r = np.array(emb, np.float64).reshape(n, -1)
    links = _Links(r)
    uf = _Union(n)
    # Near-identical features (raw cosine at least DUPLICATE_COSINE: centring cannot see them in a
    # small run, where two identical photos centre to zero) are duplicates within the burst gap or
    # where a time is missing; near-identical photos minutes apart are separate moments. So both
    # rules look only at pairs within the burst gap and at pairs with an untimed photo: never at
    # every pair of a run whose photos all have times.
    timed = np.array([i for i, t in enumerate(times) if t is not None], int)
    if len(timed) > 1:  # each photo against the later ones in its burst_gap window
        t = np.array([times[i] for i in timed], np.float64)
        order = np.argsort(t, kind="stable")
        timed, t = timed[order], t[order]
        ends = np.searchsorted(t, t + opts.burst_gap, side="right")
        chunk = max(1, PAIR_BLOCK // r.shape[1])
        for a in range(len(timed) - 1):
            i = timed[a:a + 1]
            for w in range(a + 1, ends[a], chunk):
                part = timed[w:min(w + chunk, ends[a])]
                for j in part[links(i, part, opts.similarity)[0]]:
                    uf.join(int(i[0]), int(j))
    untimed = np.array([i for i, t in enumerate(times) if t is None], int)
    everyone = np.arange(n)
    for s, e in _row_blocks(len(untimed), n):  # a photo without a time against every photo
        rows = untimed[s:e]
        for a, j in zip(*np.nonzero(links(rows, everyone, opts.similarity_without_time))):
            if j != rows[a]:
                uf.join(int(rows[a]), int(j))
    if hashes is not None:  # Hamming distances of the 64-bit hashes, a block of rows at a time
        have = np.array([i for i, h in enumerate(hashes) if h is not None], int)
        h = np.array([hashes[i] for i in have], np.uint64)
        for s, e in _row_blocks(len(have), len(have)):
            dist = popcount64(h[s:e, None] ^ h[None, :])
            for a, b in zip(*np.nonzero(dist <= opts.phash_distance)):
                if s + a < b:
                    uf.join(int(have[s + a]), int(have[b]))
    roots, out = {}, np.zeros(n, int)
    for i in range(n):
        out[i] = roots.setdefault(uf.find(i), len(roots))
    return out


def stars(scores: np.ndarray) -> np.ndarray:
    """1-5 stars by the scores' quintiles within the run (ties share the lower star)."""
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        return np.zeros(0, int)
    below = np.searchsorted(np.sort(s), s, side="left")  # photos scoring strictly lower: equal scores, equal stars
    pct = (below + 0.5) / len(s)
    return np.clip(1 + np.floor(pct * 5).astype(int), 1, 5)


# -- RAW previews ------------------------------------------------------------------------

#: a RAW's embedded preview smaller than this (long side, pixels) is a mere
#: thumbnail: the raw data itself is developed instead (where rawpy is installed)
MIN_PREVIEW_SIDE = 512


def is_raw(path: str) -> bool:
    """A camera RAW file, by its extension (:data:`RAW_EXTENSIONS`)."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def raw_preview(path: str) -> bytes:
    """A JPEG of what a RAW file shows, for scoring. With rawpy (LibRaw): the
    embedded JPEG preview as it is, or an embedded bitmap preview encoded as
    JPEG; where the file has no preview, or only a thumbnail under
    :data:`MIN_PREVIEW_SIDE` pixels, LibRaw develops the raw data at half
    size (camera white balance). Without rawpy, or where LibRaw cannot read
    the file: exiftool's JpgFromRaw, PreviewImage or ThumbnailImage. An
    OSError naming what was tried when none gives an image."""
    tried = []
    try:
        import rawpy
    except ImportError:
        rawpy = None
        tried.append("rawpy is not installed (pip install 'photocritic[raw]')")
    if rawpy is not None:
        try:
            return _libraw_image(rawpy, path)
        except Exception as exc:  # noqa: BLE001 - LibRaw's errors are many; exiftool may still read it
            tried.append(f"LibRaw: {exc}")
    exe = shutil.which("exiftool")
    if exe:
        import subprocess

        for tag in ("-JpgFromRaw", "-PreviewImage", "-ThumbnailImage"):
            got = subprocess.run([exe, "-b", tag, path], capture_output=True, timeout=60)
            if got.returncode == 0 and got.stdout[:3] == b"\xff\xd8\xff":
                return got.stdout
        tried.append("exiftool found no embedded JPEG preview")
    else:
        tried.append("exiftool is not installed (apt-get install libimage-exiftool-perl)")
    raise OSError(f"{path}: no image could be read from this RAW file ({'; '.join(tried)})")


def _libraw_image(rawpy, path: str) -> bytes:
    import io

    from PIL import Image

    with rawpy.imread(path) as raw:
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            data = bytes(thumb.data)
            try:
                big = max(Image.open(io.BytesIO(data)).size) >= MIN_PREVIEW_SIDE
            except Exception:  # noqa: BLE001 - a broken preview: develop the raw data
                big = False
            if big:
                return data
        if thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP \
                and max(thumb.data.shape[:2]) >= MIN_PREVIEW_SIDE:
            rgb = thumb.data
        else:
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("RGB").save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def raw_times(paths: list[str]) -> list[float | None]:
    """Capture times (EXIF DateTimeOriginal + SubSecTimeOriginal) of RAW
    files, read by one exiftool process for all of them (a process per file
    costs about 60 ms each); None where there is none, or no exiftool."""
    exe = shutil.which("exiftool")
    if not exe or not paths:
        return [None] * len(paths)
    import subprocess

    names = ["./" + p if p.startswith("-") else p for p in paths]  # a line starting "-" is an option
    got = subprocess.run([exe, "-j", "-charset", "filename=utf8", "-DateTimeOriginal", "-SubSecTimeOriginal",
                          "-@", "-"], input="\n".join(names) + "\n", capture_output=True, text=True,
                         timeout=60 + len(paths))
    try:
        found = {r.get("SourceFile"): r for r in json.loads(got.stdout or "[]")}
    except ValueError:
        found = {}
    tags = [found.get(n, {}) for n in names]
    return [parse_exif_time(t.get("DateTimeOriginal", ""), t.get("SubSecTimeOriginal", "")) for t in tags]


# -- sidecars -----------------------------------------------------------------------------

def sidecar_path(path: str, style: str) -> Path:
    """darktable: ``photo.jpg.xmp``; Lightroom: ``photo.xmp``."""
    p = Path(path)
    return p.with_name(p.name + ".xmp") if style == "darktable" else p.with_suffix(".xmp")


BACKUP_SUFFIX = ".photocritic-backup"
#: per folder, the sidecars photocritic created (they have no original to back up)
LEDGER = ".photocritic-xmp.json"


class SidecarWriter:
    """Writes ``xmp:Rating`` into sidecars through exiftool (one long-lived
    process, ``-stay_open``): an existing sidecar is merged (other tags
    kept) and its original backed up once beside it (``NAME.xmp.photocritic-
    backup``); a missing one is created and listed in the folder's
    ``.photocritic-xmp.json``, so a later run knows it has no original to
    back up. Writing the same ratings again leaves every file as it was."""

    def __init__(self):
        exe = shutil.which("exiftool")
        if exe is None:
            raise UsageError("--xmp writes ratings with exiftool, which is not installed "
                             "(Debian: apt-get install libimage-exiftool-perl)")
        import exiftool

        self.tool = exiftool.ExifTool(executable=exe)
        self.tool.run()
        self.ledgers: dict[Path, tuple[set, bool]] = {}

    def _created(self, folder: Path) -> set:
        if folder not in self.ledgers:
            try:
                names = set(json.loads((folder / LEDGER).read_text()).get("created", []))
            except (OSError, ValueError):
                names = set()
            self.ledgers[folder] = (names, False)
        return self.ledgers[folder][0]

    def write(self, sidecar: Path, rating: int) -> str:
        created = self._created(sidecar.parent)
        existed = sidecar.exists()
        if existed and sidecar.name not in created:
            backup = sidecar.with_name(sidecar.name + BACKUP_SUFFIX)
            if not backup.exists():
                shutil.copy2(sidecar, backup)
        out = self.tool.execute("-overwrite_original", "-m", f"-XMP-xmp:Rating={int(rating)}", str(sidecar))
        if not sidecar.exists() or "error" in out.lower():
            raise OSError(f"{sidecar}: exiftool could not write the rating ({out.strip()[:200]})")
        if not existed:
            created.add(sidecar.name)
            self.ledgers[sidecar.parent] = (created, True)
        return "updated" if existed else "created"

    def close(self):
        self.tool.terminate()
        for folder, (names, dirty) in self.ledgers.items():
            if dirty:
                tmp = folder / (LEDGER + ".part")
                tmp.write_text(json.dumps({"created": sorted(names)}, indent=0) + "\n")
                tmp.replace(folder / LEDGER)


# -- moves and undo ---------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _free_target(dest: Path) -> Path:
    """``dest``, or ``name (2).ext`` ... where ``dest`` exists: never overwrite."""
    k = 2
    out = dest
    while out.exists():
        out = dest.with_name(f"{dest.stem} ({k}){dest.suffix}")
        k += 1
    return out


def move_rejects(paths: list[str], folder: str | Path, style_sidecars: bool = True) -> Path:
    """Move ``paths`` and their sidecars into ``folder``, writing the
    manifest (``folder/photocritic-moves-TIME.json``) before each move is
    made and after, so an interruption leaves a manifest that undo can use."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"photocritic-moves-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    moves = []

    def save():
        tmp = manifest.with_name(manifest.name + ".part")
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "version": 1, "moves": moves}, indent=1) + "\n")
        tmp.replace(manifest)

    for p in paths:
        src = Path(p)
        items = [src] + [s for s in (src.with_name(src.name + ".xmp"), src.with_suffix(".xmp"))
                         if style_sidecars and s.exists() and s != src]
        for item in items:
            dest = _free_target(folder / item.name)
            moves.append({"from": str(item.resolve()), "to": str(dest.resolve()), "sha256": _sha256(item),
                          "done": False})
            save()
            shutil.move(str(item), str(dest))
            moves[-1]["done"] = True
            save()
    return manifest


def undo_moves(manifest: str | Path) -> tuple[int, list[str]]:
    """Move every file of a ``--move-rejects`` manifest back (hash checked);
    returns (moved back, problems). A file whose original place is taken
    again is left where it is and reported."""
    manifest = Path(manifest)
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--undo {manifest}: not a readable manifest ({exc})") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise UsageError(f"--undo {manifest}: not a photocritic cull manifest")
    back, problems = 0, []
    for m in reversed(data["moves"]):
        src, dest = Path(m["from"]), Path(m["to"])
        if not dest.exists():
            if src.exists() and _sha256(src) == m["sha256"]:
                continue  # never moved, or already back
            problems.append(f"{dest}: missing; cannot put it back to {src}")
            continue
        if _sha256(dest) != m["sha256"]:
            problems.append(f"{dest}: changed since it was moved (hash differs); left where it is")
            continue
        if src.exists():
            problems.append(f"{src}: a file is there again; {dest} left where it is")
            continue
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dest), str(src))
        back += 1
    return back, problems


# -- the whole cull ---------------------------------------------------------------------------

@dataclass
class CullResult:
    rows: list
    groups: int
    seconds: dict = field(default_factory=dict)


def cull(critic, paths: list[str], opts: CullOptions, cache=None, reference=None, batch_size: int = 32,
         progress: bool = False, max_bytes: int | None = None, preview_dir: str | Path | None = None) -> CullResult:
    """Score, group, rank and decide (nothing is written or moved here).
    RAW files' previews go to ``preview_dir`` (default: a temporary folder,
    removed at the end)."""
    import tempfile

    made = None
    if preview_dir is None and any(map(is_raw, paths)):
        made = Path(tempfile.mkdtemp(prefix="photocritic-previews-"))
    try:
        return _cull(critic, paths, opts, cache, reference, batch_size, progress, max_bytes,
                     made or (Path(preview_dir) if preview_dir else None))
    finally:  # RAW previews extracted to a temporary folder go with it
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _cull(critic, paths, opts, cache, reference, batch_size, progress, max_bytes, previews) -> CullResult:
    from .features import EmbeddingCache

    if not hasattr(critic, "embed_paths"):  # before any RAW preview is extracted for nothing
        raise UsageError(f"model {critic.name} gives scores only (an exported ONNX scorer); cull groups photos "
                         f"by their image embeddings: use the model itself")
    t0 = time.perf_counter()
    rows = [CullRow(path=p) for p in paths]
    to_score, where, raws = [], [], []
    for k, p in enumerate(paths):
        if is_raw(p):
            try:
                data = raw_preview(p)
            except OSError as exc:
                rows[k].status, rows[k].error = "unreadable", str(exc)
                continue
            previews.mkdir(parents=True, exist_ok=True)
            q = previews / (hashlib.sha256(data).hexdigest()[:20] + ".jpg")
            q.write_bytes(data)
            to_score.append(str(q))
            raws.append(k)
        else:
            to_score.append(p)
        where.append(k)
    for k, t in zip(raws, raw_times([paths[k] for k in raws])):
        rows[k].t = t
    own = cache is None
    cache = cache if cache is not None else EmbeddingCache(None)
    scored, emb = critic.embed_paths(to_score, cache, batch_size=batch_size, progress=progress, max_bytes=max_bytes)
    ok = [j for j, r in enumerate(scored) if r.status == "ok"]
    if own:
        cache.close()
    for j, r in enumerate(scored):
        row = rows[where[j]]
        row.status, row.error = r.status, (r.error.replace(to_score[j], row.path) if r.error else "")
        row.score = float(r.score)
    t_score = time.perf_counter() - t0
    good = [where[j] for j in ok]
    preview_of = {where[j]: to_score[j] for j in range(len(where))}
    with ThreadPoolExecutor(max_workers=4) as pool:
        times = list(pool.map(lambda k: rows[k].t if rows[k].t is not None else capture_time(paths[k]), good))
        hashes = list(pool.map(lambda k: phash(preview_of[k]), good)) if opts.phash else None
    for k, t in zip(good, times):
        rows[k].t = t
        rows[k].capture_time = (dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                                if t is not None else "")
    groups = group_photos(emb, times, opts, hashes) if good else np.zeros(0, int)
    scores = np.array([rows[k].score for k in good])
    if reference is not None and len(good):
        for k, p in zip(good, reference.percentiles(scores)):
            rows[k].percentile = round(float(p), 1)
    for k, g in zip(good, groups):
        rows[k].group = int(g) + 1
    # rank within groups: score, near-ties by sharpness
    members: dict[int, list[int]] = {}
    for k in good:
        members.setdefault(rows[k].group, []).append(k)
    for ks in members.values():
        for r, k in enumerate(rank_group(rows, ks, opts.tie, lambda k: sharpness(preview_of[k])), 1):
            rows[k].rank = r
            rows[k].decision = "keep" if r == 1 else "similar"
    star = stars(scores)
    for k, s in zip(good, star):
        rows[k].rating = int(s)
        if rows[k].score < opts.reject_below:
            rows[k].decision, rows[k].rating = "reject", -1
    for r in rows:
        if r.status != "ok":
            r.decision = ""
    seconds = {"score": round(t_score, 3), "total": round(time.perf_counter() - t0, 3)}
    return CullResult(rows=rows, groups=len(members), seconds=seconds)


def rank_group(rows, ks: list[int], tie: float, measure) -> list[int]:
    """``ks`` best first: by score; runs of scores each within ``tie`` of
    the next are ordered by sharpness (``measure(k)``, computed only for
    them and stored in the rows), sharper first, then by score."""
    ks = sorted(ks, key=lambda k: -rows[k].score)
    out, run = [], [ks[0]] if ks else []
    for a, b in zip(ks, ks[1:]):
        if rows[a].score - rows[b].score <= tie:
            run.append(b)
            continue
        out += _by_sharpness(rows, run, measure)
        run = [b]
    return out + _by_sharpness(rows, run, measure)


def _by_sharpness(rows, run: list[int], measure) -> list[int]:
    if len(run) < 2:
        return run
    for k in run:
        rows[k].sharpness = measure(k)
    return sorted(run, key=lambda k: (-(rows[k].sharpness if rows[k].sharpness is not None else -1.0),
                                      -rows[k].score))


def summary(result: CullResult) -> str:
    rows = result.rows
    n_ok = sum(r.status == "ok" for r in rows)
    counts = {d: sum(r.decision == d for r in rows) for d in DECISIONS}
    bursts = sum(1 for g in {r.group for r in rows if r.group} if sum(r.group == g for r in rows) > 1)
    failed = len(rows) - n_ok
    return (f"photocritic: {len(rows)} photos, {n_ok} scored in {result.groups} groups ({bursts} with more than "
            f"one photo): {counts['keep']} keep, {counts['similar']} similar, {counts['reject']} reject"
            + (f", {failed} failed" if failed else ""))


def write_html(result: CullResult, path: str | Path, thumb: int = 180) -> None:
    """A contact sheet: one band per group (groups by their pick's score),
    the pick highlighted; rejects dimmed; failed files listed."""
    import html

    from .report import thumbnail_uri

    by_group: dict[int, list] = {}
    for r in result.rows:
        if r.status == "ok":
            by_group.setdefault(r.group, []).append(r)
    bands = []
    for g, rs in sorted(by_group.items(), key=lambda kv: -max(r.score for r in kv[1])):
        rs.sort(key=lambda r: r.rank)
        cells = []
        for r in rs:
            uri = thumbnail_uri(r.path, thumb)
            img = f'<img src="{uri}" alt="">' if uri else '<div class="noimg">no preview</div>'
            cells.append(f'<figure class="{r.decision}" data-path="{html.escape(r.path)}">{img}<figcaption>'
                         f'<b>{r.score:.2f}</b> {"★" * max(r.rating or 0, 0)} <span class="d">{r.decision}</span>'
                         f'<div class="n">{html.escape(Path(r.path).name)}</div></figcaption></figure>')
        bands.append(f'<section><h3>group {g} ({len(rs)})</h3><div class="row">{"".join(cells)}</div></section>')
    bad = [r for r in result.rows if r.status != "ok"]
    failed = "" if not bad else "<h2>Not read</h2><ul>" + "".join(
        f"<li><b>{html.escape(r.status)}</b> {html.escape(r.error)}</li>" for r in bad) + "</ul>"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>photocritic cull</title><style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; flex-wrap: wrap; gap: 8px; }} section {{ border-bottom: 1px solid #ddd; padding: .4em 0; }}
figure {{ margin: 0; padding: 4px; border: 3px solid transparent; border-radius: 6px; width: {thumb}px; }}
figure.keep {{ border-color: #4e9a06; background: #eef7e6; }} figure.reject {{ opacity: .45; }}
figure img {{ max-width: {thumb}px; max-height: {thumb}px; display: block; }}
.d {{ color: #666; font-size: .85em; }} .n {{ font-family: monospace; font-size: .75em; color: #555;
overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }} h3 {{ margin: .2em 0; font-size: 1em; }}
</style></head><body><h1>photocritic cull</h1><p>{html.escape(summary(result))}. The pick of each group is
framed in green; rejects are dimmed.</p>{"".join(bands)}{failed}</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")


def options_json(opts: CullOptions) -> str:
    return json.dumps(asdict(opts))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
