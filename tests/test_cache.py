import multiprocessing as mp
import sqlite3

import numpy as np

from photocritic.features import EmbeddingCache, content_hash, hash_file


def test_round_trip_and_keys(tmp_path):
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:
        a, b = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
        cache.put_many([("h1", a), ("h2", b)], "enc|pre|fp32")
        got = cache.get_many(["h1", "h2", "h3"], "enc|pre|fp32")
        assert set(got) == {"h1", "h2"}
        np.testing.assert_array_equal(got["h1"], a)
        # another encoder key or preprocessing is another entry
        assert cache.get_many(["h1"], "enc|other|fp32") == {}
    with EmbeddingCache(path) as again:  # persisted
        np.testing.assert_array_equal(again.get_many(["h2"], "enc|pre|fp32")["h2"], b)


def test_content_hash_matches_streaming(tmp_path):
    data = bytes(range(256)) * 10000
    f = tmp_path / "x.bin"
    f.write_bytes(data)
    assert content_hash(data) == hash_file(f, chunk=4096)
    assert content_hash(data) != content_hash(data[:-1])


def _writer(path, worker, n):
    cache = EmbeddingCache(path)
    for start in range(0, n, 10):
        items = [(f"w{worker}-{i}", np.full(8, worker * 1000 + i, np.float32)) for i in range(start, start + 10)]
        items.append(("shared", np.full(8, 7, np.float32)))
        cache.put_many(items, "k")
    cache.close()


def test_two_processes_writing_at_once(tmp_path):
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 300)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with EmbeddingCache(path) as cache:
        assert len(cache) == 601
        keys = [f"w{w}-{i}" for w in (1, 2) for i in range(300)]
        got = cache.get_many(keys, "k")
        assert len(got) == 600
        assert all(got[f"w{w}-{i}"][0] == w * 1000 + i for w in (1, 2) for i in range(300))
