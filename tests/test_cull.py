"""`photocritic cull`, `compare` and `--percentiles`: grouping, picks, XMP sidecars, moves and undo."""

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from photocritic.cli import main

from conftest import write_broken_files

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (Debian: apt-get install "
                                                              "libimage-exiftool-perl; make test installs it as root)")


@pytest.fixture(scope="module")
def bursts(tmp_path_factory):
    """30 photos in bursts of scenes from scikit-image's real photos, with the truth."""
    from photocritic.data.bursts import make_bursts
    from photocritic.data.synthetic import find_sources

    d = tmp_path_factory.mktemp("bursts")
    truth = make_bursts(d, 30, seed=4, sources=find_sources(debian=False), size=(480, 320))
    return d, truth


def _rows(path):
    return {Path(r["path"]).name: r for r in csv.DictReader(open(path))}


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def culled(bursts, tmp_path_factory):
    d, truth = bursts
    out = tmp_path_factory.mktemp("cull-out")
    assert main(["cull", str(d), "--output", str(out / "cull.csv"), "--html", str(out / "cull.html"),
                 "--precision", "fp32", "-q"]) == 0
    return _rows(out / "cull.csv"), out


def test_groups_bursts_and_picks_the_undegraded_frame(bursts, culled):
    from sklearn.metrics import adjusted_rand_score

    _, truth = bursts
    rows, out = culled
    names = sorted(truth)
    assert set(rows) == set(names)
    ari = adjusted_rand_score([truth[n]["group"] for n in names], [int(rows[n]["group"]) for n in names])
    assert ari >= 0.9
    scenes = {}
    for n in names:
        scenes.setdefault(truth[n]["group"], []).append(n)
    multi = [ns for ns in scenes.values() if len(ns) > 1]
    assert len(multi) >= 4
    best = [next(n for n in ns if truth[n]["best"]) for ns in multi]
    assert np.mean([rows[n]["rank"] == "1" for n in best]) >= 0.8
    for n in names:  # one keep per group; ranks 1..k; decisions follow the ranks
        r = rows[n]
        assert r["decision"] in ("keep", "similar", "reject") and r["status"] == "ok"
        assert (r["decision"] == "keep") == (r["rank"] == "1") or r["decision"] == "reject"
        assert r["capture_time"]  # read from EXIF
    page = (out / "cull.html").read_text()
    assert page.count('<figure class="keep"') == sum(r["decision"] == "keep" for r in rows.values())


def _reference_groups(emb, times, opts, hashes):
    """Every pair, one at a time, by the documented rules."""
    from photocritic.culling import DUPLICATE_COSINE

    n = len(emb)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    x = emb - emb.mean(0)
    with np.errstate(invalid="ignore"):  # a photo centred to zero has no direction: NaN, never linked
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            untimed = times[i] is None or times[j] is None
            close = not untimed and abs(times[i] - times[j]) <= opts.burst_gap
            hashed = hashes[i] is not None and hashes[j] is not None
            if ((unit[i] @ unit[j] >= DUPLICATE_COSINE and (untimed or close))
                    or (close and x[i] @ x[j] >= opts.similarity)
                    or (untimed and x[i] @ x[j] >= opts.similarity_without_time)
                    or (hashed and bin(hashes[i] ^ hashes[j]).count("1") <= opts.phash_distance)):
                parent[find(i)] = find(j)
    roots = {}
    return np.array([roots.setdefault(find(i), len(roots)) for i in range(n)])


@pytest.mark.parametrize("block", [1 << 22, 97])
def test_grouping_equals_every_pair_checked_by_the_rules(monkeypatch, block):
    """Grouping works a block of pairs at a time (vectorised similarities
    and hash distances, never an N x N matrix at scale); on 400 photos with
    planted scenes, missing times, exact copies and near-identical hashes it
    gives the groups of checking every pair in plain Python, with blocks of
    97 entries as with the default."""
    from photocritic import culling

    monkeypatch.setattr(culling, "PAIR_BLOCK", block)
    rng = np.random.default_rng(3)
    n, scenes = 400, 60
    scene = rng.integers(0, scenes, n)
    centres = rng.normal(size=(scenes, 24))
    emb = centres[scene] + rng.normal(scale=rng.uniform(0.3, 1.6, (n, 1)), size=(n, 24))
    emb[::37] = emb[1::37][: len(emb[::37])]  # exact copies
    # whole seconds, as EXIF without sub-seconds has them: equal times and pairs exactly burst_gap apart
    times = [float(scene[i] * 60 + rng.integers(0, 9)) if rng.random() > 0.15 else None for i in range(n)]
    base = rng.integers(0, 1 << 63, scenes, dtype=np.int64).astype(object) * 2 + 1
    hashes = []
    for i in range(n):
        h = int(base[scene[i]])
        for bit in rng.choice(64, int(rng.integers(0, 12)), replace=False):
            h ^= 1 << int(bit)
        hashes.append(h if rng.random() > 0.1 else None)
    opts = culling.CullOptions(similarity=0.3, similarity_without_time=0.6)
    for with_hashes in (None, hashes):
        got = culling.group_photos(emb, times, opts, with_hashes)
        want = _reference_groups(emb, times, opts, with_hashes or [None] * n)
        np.testing.assert_array_equal(got, want)
        assert 30 < got.max() + 1 < n - 30  # many links made, many not: the rules were exercised
    h = np.array([v for v in hashes if v is not None], np.uint64)[:50]
    want = [[bin(int(a) ^ int(b)).count("1") for b in h] for a in h]
    for native in {False, hasattr(np, "bitwise_count")}:  # numpy's popcount where it has one, and the table
        np.testing.assert_array_equal(culling.popcount64(h[:, None] ^ h[None, :], native=native), want)
    # two identical photos centre to zero: only the near-identical rule links them, within the gap
    # or where a time is missing, and not minutes apart
    pair = np.repeat(rng.normal(size=(1, 24)), 2, axis=0)
    for two_times, linked in (([0.0, 1.0], True), ([0.0, 600.0], False), ([None, 600.0], True)):
        got = culling.group_photos(pair, two_times, opts)
        np.testing.assert_array_equal(got, _reference_groups(pair, two_times, opts, [None, None]))
        assert (got[0] == got[1]) == linked


def test_rank_ties_by_sharpness_and_stars():
    from photocritic.culling import CullRow, rank_group, stars

    rows = [CullRow("a", score=7.00), CullRow("b", score=6.98), CullRow("c", score=6.20), CullRow("d", score=6.97)]
    sharp = {0: 10.0, 1: 50.0, 2: 99.0, 3: 30.0}
    order = rank_group(rows, [0, 1, 2, 3], 0.05, lambda k: sharp[k])
    assert order == [1, 3, 0, 2]  # 7.00, 6.98, 6.97 tie: sharpest first; 6.20 is no tie
    assert rows[2].sharpness is None  # measured only where needed
    np.testing.assert_array_equal(stars(np.arange(10.0)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    # equal scores share the lower star, wherever a quintile boundary falls among them
    np.testing.assert_array_equal(stars(np.array([1.0, 2, 3, 3, 3, 3, 7, 8, 9, 10])), [1, 1, 2, 2, 2, 2, 4, 4, 5, 5])


def test_sharpness_ignores_exposure_and_falls_with_blur(tmp_path):
    """The tie-break's sharpness is var(Laplacian) / var(grey): scipy's
    Laplacian gives the same number; a frame brightened 2x (nothing clipped)
    keeps its sharpness, where the plain Laplacian variance quadruples; a
    blurred frame is less sharp."""
    from PIL import Image, ImageFilter
    from scipy import ndimage
    import skimage.data

    from photocritic.culling import sharpness

    grey = skimage.data.camera().astype(np.float64) * 0.45  # at most 115: 2x clips nothing
    frames = {"dim": grey, "bright": grey * 2.0}
    for name, a in frames.items():
        Image.fromarray(np.rint(a).astype(np.uint8)).save(tmp_path / f"{name}.png")
    Image.open(tmp_path / "dim.png").filter(ImageFilter.GaussianBlur(2)).save(tmp_path / "blur.png")
    got = {n: sharpness(str(tmp_path / f"{n}.png")) for n in ("dim", "bright", "blur")}

    def reference(path):  # the same ~512 px grey image, scipy's 4-neighbour Laplacian
        im = Image.open(path).convert("L")
        im.thumbnail((512, 512))
        g = np.asarray(im, np.float64)
        return ndimage.laplace(g)[1:-1, 1:-1].var() / g.var(), ndimage.laplace(g)[1:-1, 1:-1].var()

    ref = {n: reference(tmp_path / f"{n}.png") for n in got}
    for n in got:
        assert got[n] == pytest.approx(ref[n][0], rel=1e-9)
    assert ref["bright"][1] / ref["dim"][1] == pytest.approx(4.0, rel=0.02)  # what the ratio undoes
    assert got["bright"] == pytest.approx(got["dim"], rel=0.02)
    assert got["blur"] < 0.5 * got["dim"]
    Image.new("L", (64, 64), 128).save(tmp_path / "flat.png")
    assert sharpness(str(tmp_path / "flat.png")) == 0.0


def test_cull_options_on_the_command_line_default_to_cull_options():
    """Each CullOptions field is a `cull` option whose default (the one --help
    documents) is the field's own."""
    from dataclasses import fields

    from photocritic.cli import build_parser
    from photocritic.culling import CullOptions

    args = build_parser().parse_args(["cull", "photos/"])
    assert {f.name: getattr(args, f.name) for f in fields(CullOptions)} == {f.name: f.default for f in fields(CullOptions)}


def test_bad_files_get_rows_and_never_stop_a_cull(bursts, tmp_path):
    d, truth = bursts
    folder = tmp_path / "mixed"
    shutil.copytree(d, folder)
    broken = write_broken_files(folder)
    (folder / "DSC_0001.NEF").write_bytes(b"not a raw file" * 10)
    assert main(["cull", str(folder), "--output", str(tmp_path / "c.jsonl"), "-q", "--precision", "fp32"]) == 0
    rows = {Path(r["path"]).name: r for r in map(json.loads, open(tmp_path / "c.jsonl"))}
    assert sum(r["status"] == "ok" for r in rows.values()) == len(truth)
    for name in broken:
        if (folder / name).is_file():
            assert rows[name]["status"] == broken[name] and rows[name]["decision"] == ""
    assert rows["DSC_0001.NEF"]["status"] == "unreadable" and "preview" in rows["DSC_0001.NEF"]["error"]


def test_move_rejects_then_undo_restores_the_folder(bursts, tmp_path, capsys):
    d, truth = bursts
    folder = tmp_path / "shoot"
    shutil.copytree(d, folder)
    before = _tree(folder)
    scores = sorted(float(r) for r in _score(folder))
    k = len(scores) // 3  # about a third rejected; the cut between two scores
    cut = (scores[k - 1] + scores[k]) / 2
    assert main(["cull", str(folder), "--reject-below", str(cut), "--move-rejects", str(tmp_path / "rejects"),
                 "--dry-run", "-q", "--precision", "fp32"]) == 0
    assert _tree(folder) == before and not (tmp_path / "rejects").exists()
    assert "would move" in capsys.readouterr().out
    assert main(["cull", str(folder), "--reject-below", str(cut), "--move-rejects", str(tmp_path / "rejects"),
                 "-q", "--precision", "fp32"]) == 0
    moved = [p.name for p in (tmp_path / "rejects").glob("IMG_*.jpg")]
    assert len(moved) == sum(s < cut for s in scores) > 0
    assert all(not (folder / n).exists() for n in moved)
    manifest = next((tmp_path / "rejects").glob("photocritic-moves-*.json"))
    assert main(["cull", "--undo", str(manifest)]) == 0
    assert _tree(folder) == before


def _score(folder):
    import photocritic

    return [r.score for r in photocritic.load("lite", precision="fp32").score(sorted(str(p) for p in folder.glob("*.jpg")))]


@needs_exiftool
def test_xmp_ratings_merge_and_are_stable(bursts, tmp_path):
    d, truth = bursts
    folder = tmp_path / "xmp"
    shutil.copytree(d, folder)
    first = sorted(truth)[0]
    side = folder / (first + ".xmp")  # an existing darktable sidecar with tags of its own
    subprocess.run([EXIFTOOL, "-q", "-XMP-dc:Subject=holiday", "-XMP-xmp:Label=Red", "-XMP-xmp:Rating=2",
                    str(side)], check=True)
    original = side.read_bytes()
    out = tmp_path / "c.csv"
    assert main(["cull", str(folder), "--xmp", "--output", str(out), "-q", "--precision", "fp32"]) == 0
    rows = _rows(out)
    got = json.loads(subprocess.run([EXIFTOOL, "-j", "-XMP-xmp:Rating", "-XMP-dc:Subject", "-XMP-xmp:Label",
                                     *[str(folder / (n + ".xmp")) for n in sorted(truth)]],
                                    capture_output=True, text=True, check=True).stdout)
    assert [g["Rating"] for g in got] == [int(rows[n]["rating"]) for n in sorted(truth)]
    assert got[0]["Subject"] == "holiday" and got[0]["Label"] == "Red"  # merged, not overwritten
    assert (folder / (first + ".xmp.photocritic-backup")).read_bytes() == original
    snapshot = _tree(folder)
    assert main(["cull", str(folder), "--xmp", "-q", "--precision", "fp32"]) == 0
    assert _tree(folder) == snapshot  # running twice gives the same files
    assert main(["cull", str(folder), "--xmp", "--xmp-style", "lightroom", "-q", "--precision", "fp32"]) == 0
    assert (folder / (Path(first).stem + ".xmp")).exists()


def test_percentiles_and_compare(bursts, tmp_path, capsys):
    from scipy.stats import percentileofscore

    from photocritic.reference import ScoreReference, load_reference

    rng = np.random.default_rng(0)
    sample = rng.normal(6, 1, 5000)
    ref = ScoreReference.from_scores(sample)
    for s in (4.2, 5.5, 6.0, 7.3):
        assert ref.percentiles([s])[0] == pytest.approx(percentileofscore(sample, s, kind="mean"), abs=0.6)
    d, truth = bursts
    a, b = (str(d / n) for n in sorted(truth)[:2])
    out = tmp_path / "s.csv"
    assert main(["score", a, b, "--percentiles", "default", "--output", str(out), "-q", "--precision", "fp32"]) == 0
    rows = list(csv.DictReader(open(out)))
    lite_ref = load_reference("default", __import__("photocritic").load("lite"))
    np.testing.assert_allclose([float(r["percentile"]) for r in rows],
                               lite_ref.percentiles([float(r["score"]) for r in rows]), atol=0.051)
    capsys.readouterr()
    assert main(["compare", a, b, "--json", "--percentiles", "default", "--precision", "fp32", "-q"]) == 0
    got = json.loads(capsys.readouterr().out)
    sa, sb = (float(r["score"]) for r in rows)
    assert got["better"] == ("a" if sa > sb else "b") and got["difference"] == pytest.approx(abs(sa - sb), abs=1e-3)
    assert main(["compare", a, str(tmp_path / "none.jpg")]) == 2


def _dng(path: Path, rgb: np.ndarray, preview: np.ndarray | None, taken: str) -> None:
    """A real DNG, written with tifffile: a 12-bit RGGB mosaic sampled from
    ``rgb`` (linear light), with or without an uncompressed RGB preview in
    IFD0 (the raw data then in a SubIFD), and a DateTimeOriginal."""
    tifffile = pytest.importorskip("tifffile")
    lin = (rgb / 255.0) ** 2.2
    cfa = np.empty(rgb.shape[:2])
    cfa[0::2, 0::2], cfa[0::2, 1::2] = lin[0::2, 0::2, 0], lin[0::2, 1::2, 1]
    cfa[1::2, 0::2], cfa[1::2, 1::2] = lin[1::2, 0::2, 1], lin[1::2, 1::2, 2]
    dng = [(50706, "B", 4, (1, 4, 0, 0)), (50708, "s", 0, "photocritic test"), (36867, "s", 0, taken)]
    # the camera sees linear sRGB: ColorMatrix1 (XYZ to camera, D65) is XYZ to linear sRGB
    xyz_to_srgb = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)
    mosaic = [(33421, "H", 2, (2, 2)), (33422, "B", 4, (0, 1, 1, 2)), (50717, "I", 1, 4095),
              (50721, "2i", 9, tuple(v for c in xyz_to_srgb for v in (round(c * 10000), 10000))),
              (50778, "H", 1, 21), (50728, "2I", 3, (1, 1, 1, 1, 1, 1))]  # AsShotNeutral: white is white
    raw = np.round(cfa * 4095).astype(np.uint16)
    with tifffile.TiffWriter(path) as tw:
        if preview is not None:
            tw.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=dng)
            tw.write(raw, photometric=32803, subfiletype=0, extratags=mosaic)
        else:
            tw.write(raw, photometric=32803, subfiletype=0, extratags=dng + mosaic)


def test_dng_files_are_read_by_libraw(bursts, lite, tmp_path, monkeypatch):
    """Real DNGs through rawpy (LibRaw): one with a bitmap preview (used as
    it is), one without (LibRaw develops the mosaic at half size); both are
    scored, and exiftool reads their capture time. Without rawpy, a DNG with
    no JPEG preview is unreadable, with the reasons."""
    import io
    import sys

    from PIL import Image

    from photocritic import culling

    rawpy = pytest.importorskip("rawpy", reason="rawpy is not installed (pip install 'photocritic[raw]')")
    d, truth = bursts
    sound = next(n for n in sorted(truth) if truth[n]["best"])  # an undegraded frame: nothing clipped
    photo = np.asarray(Image.open(d / sound).convert("RGB").resize((384, 256)))
    big = np.asarray(Image.fromarray(photo).resize((768, 512)))
    with_preview, mosaic_only = tmp_path / "IMG_0001.DNG", tmp_path / "IMG_0002.dng"
    _dng(with_preview, photo, big, "2026:11:30 08:01:02")
    _dng(mosaic_only, photo, None, "2026:11:30 08:01:03")

    shown = np.asarray(Image.open(io.BytesIO(culling.raw_preview(str(with_preview)))), float)
    assert shown.shape == big.shape and np.abs(shown - big).mean() < 2.0  # the preview, JPEG-encoded
    developed = np.asarray(Image.open(io.BytesIO(culling.raw_preview(str(mosaic_only)))), float)
    with rawpy.imread(str(mosaic_only)) as raw:
        ref = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8).astype(float)
    assert developed.shape == (128, 192, 3) and np.abs(developed - ref).mean() < 2.0
    thumb_only = tmp_path / "IMG_0003.dng"  # a 96x64 thumbnail is too small to judge: the mosaic is developed
    _dng(thumb_only, photo, np.asarray(Image.fromarray(photo).resize((96, 64))), "2026:11:30 08:01:04")
    assert np.asarray(Image.open(io.BytesIO(culling.raw_preview(str(thumb_only))))).shape == (128, 192, 3)
    half = np.asarray(Image.fromarray(photo).resize((192, 128)), float)  # the photo, from the mosaic, per channel
    assert all(np.corrcoef(developed[..., c].ravel(), half[..., c].ravel())[0, 1] > 0.95 for c in range(3))

    res = culling.cull(lite, [str(with_preview), str(mosaic_only)], culling.CullOptions())
    assert [r.status for r in res.rows] == ["ok", "ok"] and all(1 <= r.score <= 10 for r in res.rows)
    if EXIFTOOL:
        first, second = culling.raw_times([str(with_preview), str(mosaic_only)])  # one exiftool for both
        assert second - first == pytest.approx(1.0)
        assert res.rows[0].capture_time and res.rows[1].capture_time

    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now fails
    with pytest.raises(OSError, match="rawpy is not installed") as err:
        culling.raw_preview(str(with_preview))
    assert "exiftool" in str(err.value)


def test_raw_files_are_scored_from_their_preview(bursts, lite, tmp_path, monkeypatch):
    """A RAW file goes through its embedded preview (here the preview reader
    is replaced: no RAW sample ships with the tests): scored as the JPEG it
    holds, grouped with that JPEG, and the extracted previews removed."""
    import tempfile

    from photocritic import culling

    d, truth = bursts
    jpg = d / sorted(truth)[0]
    raw = tmp_path / "DSC_0002.NEF"
    raw.write_bytes(b"RAW" * 100)
    monkeypatch.setattr(culling, "raw_preview", lambda p: jpg.read_bytes())
    monkeypatch.setattr(culling, "raw_times", lambda ps: [None] * len(ps))
    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    res = culling.cull(lite, [str(raw), str(jpg)], culling.CullOptions())
    a, b = res.rows
    assert a.status == "ok" and a.path == str(raw) and a.score == pytest.approx(b.score, abs=1e-6)
    assert a.group == b.group and sorted([a.rank, b.rank]) == [1, 2]
    assert made and not Path(made[0]).exists()
    assert culling.sidecar_path(str(raw), "darktable").name == "DSC_0002.NEF.xmp"
    assert culling.sidecar_path(str(raw), "lightroom").name == "DSC_0002.xmp"
