import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import torch
import pytest

from photocritic.features import EmbeddingCache

from conftest import jpeg_bytes, photo, write_broken_files


def _folder(tmp_path, n, size=(200, 150)):
    d = tmp_path / "imgs"
    d.mkdir(exist_ok=True)
    for i in range(n):
        (d / f"p{i:04d}.jpg").write_bytes(jpeg_bytes(photo(i, size)))
    return d


@pytest.mark.parametrize("decode", ["threads", "workers"])
def test_broken_files_reported_others_scored(tmp_path, lite, decode):
    d = _folder(tmp_path, 12)
    expected = write_broken_files(d)
    (d / "empty_too.jpg").write_bytes(b"")  # identical bad files: each row names its own
    expected["empty_too.jpg"] = "empty"
    (d / "text_too.jpg").write_bytes((d / "text.jpg").read_bytes())
    expected["text_too.jpg"] = "not_image"
    os.symlink("loop.jpg", d / "loop.jpg")  # ELOOP: exists as a name, cannot be opened
    expected["loop.jpg"] = "unreadable"
    paths = sorted(str(p) for p in d.iterdir()) + [str(d / "vanished.jpg")]
    expected["vanished.jpg"] = "missing"
    rows = lite.score(paths, batch_size=5, workers=2, decode=decode)
    by_name = {os.path.basename(r.path): r for r in rows}
    assert [r.path for r in rows] == paths  # input order kept
    for name, kind in expected.items():
        assert by_name[name].status == kind, by_name[name]
        assert name in by_name[name].error and math.isnan(by_name[name].score)
    good = [r for r in rows if r.path.endswith(tuple(f"p{i:04d}.jpg" for i in range(12)))]
    assert len(good) == 12 and all(r.status == "ok" and 1 < r.score < 10 for r in good)
    stats = rows.stats
    assert (stats.scored, stats.failed) == (12, len(expected))


def test_scores_do_not_depend_on_batching_workers_or_input_kind(tmp_path, lite):
    from PIL import Image

    d = _folder(tmp_path, 9)
    paths = sorted(str(p) for p in d.iterdir())
    a = np.array([r.score for r in lite.score(paths, batch_size=1, workers=0, decode="workers")])
    b = np.array([r.score for r in lite.score(paths, batch_size=4, workers=2, decode="workers")])
    c = np.array([r.score for r in lite.score(paths, batch_size=3, workers=2, decode="threads")])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="decode must be"):
        lite.score(paths, decode="gpu")
    # PIL input goes through the same preprocessing (no JPEG draft on decoded images)
    with Image.open(paths[0]) as im:
        pil = lite.score([im.copy()])[0]
    full = lite.score([paths[0]])[0]
    assert pil.status == "ok" and pil.path == "<image 0>"
    assert abs(pil.score - full.score) < 0.05


def test_cache_reused_and_duplicates_computed_once(tmp_path, lite):
    d = _folder(tmp_path, 6)
    shutil.copy(d / "p0000.jpg", d / "copy_of_p0000.jpg")
    paths = sorted(str(p) for p in d.iterdir())
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    first = lite.score(paths, cache=cache)
    s1 = first.stats
    assert (s1.scored, s1.computed, s1.cached) == (7, 7, 0)
    assert len(cache) == 6  # identical content stored once
    second = lite.score(paths, cache=cache)
    s2 = second.stats
    assert (s2.scored, s2.computed, s2.cached) == (7, 0, 7)
    from photocritic.features import hash_file

    for r in first + second:  # each ok row names the cache entry it came from
        assert r.content_hash == hash_file(r.path)
    np.testing.assert_allclose([r.score for r in first], [r.score for r in second], rtol=1e-6)
    by_name = {os.path.basename(r.path): r.score for r in first}
    assert by_name["copy_of_p0000.jpg"] == pytest.approx(by_name["p0000.jpg"])
    # bf16 is a different cache entry, with close scores
    lite.configure(precision="bf16")
    try:
        third = lite.score(paths, cache=cache)
        assert third.stats.computed == 7
        assert np.corrcoef([r.score for r in first], [r.score for r in third])[0, 1] > 0.95
    finally:
        lite.configure(precision="fp32")


def test_precision_round_trip_keeps_the_weights(lite):
    """bf16 and back to fp32 gives the fp32 scores exactly (the weights are
    loaded again, not cast back from their bf16 rounding)."""
    x = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = lite.embed(x)
    lite.configure(precision="bf16")
    try:
        assert np.abs(lite.embed(x) - before).max() > 1e-3
    finally:
        lite.configure(precision="fp32")
    np.testing.assert_array_equal(lite.embed(x), before)


def test_sigkill_then_rerun_computes_only_the_rest(tmp_path):
    d = _folder(tmp_path, 48, size=(640, 480))
    cache_file = tmp_path / "kill.sqlite"
    cmd = [sys.executable, "-m", "photocritic.cli", "score", str(d), "--batch-size", "4",
           "--workers", "1", "--cache", str(cache_file), "--output", str(tmp_path / "out.csv"), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done_before = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if cache_file.exists():
            try:
                con = sqlite3.connect(cache_file, timeout=1)
                done_before = con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                con.close()
            except sqlite3.Error:
                continue
            if done_before >= 8:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(30)
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"run was not killed mid-way (exit {proc.returncode}, {done_before} cached)")
    with EmbeddingCache(cache_file) as cache:
        kept = len(cache)
    assert 8 <= kept < 48
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"48 scored ({kept} from cache, {48 - kept} computed), 0 failed" in out.stderr


def test_two_threads_share_one_model(tmp_path):
    """The model object keeps no per-call state: two threads scoring at
    once with one model get what each would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import photo

    import photocritic

    paths = []
    for i in range(8):
        p = tmp_path / f"t{i}.jpg"
        photo(100 + i).save(p)
        paths.append(str(p))
    model = photocritic.load("lite", precision="fp32")
    alone = [[r.score for r in model.score(paths[:4])], [r.score for r in model.score(paths[4:])]]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda part: model.score(part, cache=tmp_path / f"c{part[0][-5]}.sqlite"),
                             [paths[:4], paths[4:]]))
    assert [[r.score for r in rows] for rows in runs] == alone
    assert [rows.stats.computed for rows in runs] == [4, 4]
