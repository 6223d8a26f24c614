"""The token store: fp16 shards + an SQLite index, through the pipeline."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import torch

from photocritic.features import TokenStore


def _rows(k: int, t: int = 7, c: int = 16) -> np.ndarray:
    return np.random.default_rng(k).normal(size=(t, c)).astype(np.float16)


def test_round_trip_and_shards(tmp_path):
    store = TokenStore(tmp_path / "s", shard_bytes=2000)  # a new shard every few rows
    store.put_many([(f"h{k}", _rows(k)) for k in range(10)], "v")
    store.put_many([("other", _rows(99, 3, 5))], "v2")
    got = store.get_many([f"h{k}" for k in range(10)] + ["nope"], "v")
    assert sorted(got) == [f"h{k}" for k in range(10)]
    for k in range(10):
        np.testing.assert_array_equal(got[f"h{k}"], _rows(k))
    assert store.get_many(["h1"], "v2") == {}  # keys are per view
    assert len(list((tmp_path / "s").glob("shard-*.f16"))) > 1
    store.close()
    again = TokenStore(tmp_path / "s")
    np.testing.assert_array_equal(again.get_many(["other"], "v2")["other"], _rows(99, 3, 5))


def test_survives_sigkill_mid_run(tmp_path):
    code = textwrap.dedent(f"""
        import numpy as np, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_token_store import _rows
        from photocritic.features import TokenStore
        s = TokenStore({str(tmp_path / 's')!r}, shard_bytes=1 << 16)
        k = 0
        while True:
            s.put_many([(f"h{{k + j}}", _rows(k + j, 50, 64)) for j in range(5)], "v")
            k += 5
            print(k, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    for _ in range(30):
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = TokenStore(tmp_path / "s", shard_bytes=1 << 16)
    n = len(store)
    assert n >= 150 and n % 5 == 0
    got = store.get_many([f"h{k}" for k in range(n + 50)], "v")
    assert sorted(got, key=lambda h: int(h[1:])) == [f"h{k}" for k in range(n)]
    for k in (0, n // 2, n - 1):
        np.testing.assert_array_equal(got[f"h{k}"], _rows(k, 50, 64))
    store.put_many([("after", _rows(1000, 50, 64))], "v")  # appends after any torn bytes
    np.testing.assert_array_equal(store.get_many(["after"], "v")["after"], _rows(1000, 50, 64))


def test_reads_are_memory_mapped(tmp_path):
    store = TokenStore(tmp_path / "s")
    for start in range(0, 3000, 500):  # 3000 x 49 x 256 fp16 = 75 MB on disk
        store.put_many([(f"h{k}", np.full((49, 256), k % 7, np.float16)) for k in range(start, start + 500)], "v")
    store.close()
    store = TokenStore(tmp_path / "s")
    tracemalloc.start()
    views = store.get_many([f"h{k}" for k in range(3000)], "v")
    total = sum(float(views[f"h{k}"][0, 0]) for k in range(3000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == sum(k % 7 for k in range(3000))
    assert peak < 16 << 20, peak  # the 75 MB are mapped, never copied


def test_token_view_through_the_pipeline(tmp_path):
    from conftest import photo

    import photocritic

    paths = []
    for i in range(5):
        p = tmp_path / f"t{i}.jpg"
        photo(200 + i).save(p)
        paths.append(str(p))
    critic = photocritic.load("lite", precision="fp32").with_view("image.tokens")
    with TokenStore(tmp_path / "tok") as store:
        rows, tokens = critic.embed_paths(paths, store)
        assert tokens.shape == (5, 49, 1280) and rows.stats.computed == 5
        rows2, tokens2 = critic.embed_paths(paths, store)
        assert rows2.stats.cached == 5
    np.testing.assert_array_equal(tokens, tokens2)
    enc = critic.encoder
    from photocritic.data.images import decode_for

    px = torch.from_numpy(np.stack([decode_for(open(p, "rb").read(), enc.preprocess) for p in paths]))
    with torch.inference_mode():
        direct = enc.encode(enc.preprocess.normalize(px)).tokens.float().numpy()
    np.testing.assert_allclose(tokens, direct.astype(np.float16), rtol=1e-3, atol=1e-3)


def _open_at_once(kind, path, barrier):
    from photocritic.features import EmbeddingCache

    barrier.wait()
    try:
        (TokenStore if kind == "tokens" else EmbeddingCache)(path).close()
        return "ok"
    except Exception as exc:  # reported back to the test, not raised in the pool
        return repr(exc)


def test_processes_opening_a_new_store_at_once(tmp_path):
    """torchrun's processes open the same new store together; the switch to
    WAL answers "locked" at once rather than waiting (a CI failure, unretried)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        for i in range(15):
            for kind, name in (("tokens", f"s{i}.tokens"), ("cache", f"c{i}.sqlite")):
                barrier = manager.Barrier(2)
                got = pool.starmap(_open_at_once, [(kind, str(tmp_path / name), barrier)] * 2)
                assert got == ["ok", "ok"], (kind, i, got)
