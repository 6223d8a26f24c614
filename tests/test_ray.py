"""`photocritic score --engine ray`: equal to local scoring, resumable after a kill, tar and list inputs."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from photocritic.cli import main

from conftest import REPO, jpeg_bytes, photo, write_broken_files

pytest.importorskip("ray", reason="Ray is not installed (pip install 'photocritic[ray]')")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (its address: a second driver connects
    to it with --ray-address), shut down after."""
    import ray

    from photocritic.engine_ray import init_ray

    init_ray(None, quiet=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-inputs")
    for k in range(48):
        (d / f"p{k:03d}.jpg").write_bytes(jpeg_bytes(photo(100 + k, (200, 150))))
    write_broken_files(d)
    return d


def _parts(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}


def test_ray_equals_local_and_a_killed_run_resumes(folder, lite, ray_session, tmp_path, capsys):
    """Kill a run (a second driver on the module's cluster, --ray-address)
    after its first shards are written; the re-run computes only the missing
    shards, and every row (bad files included) equals the local pipeline's."""
    from photocritic.data.images import list_images
    from photocritic.engine_ray import read_shards

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "photocritic", "score", str(folder), "--engine", "ray", "--output", str(out),
           "--shard-size", "4", "--batch-size", "4", "--model", "lite", "--precision", "fp32", "-q",
           "--ray-address", ray_session]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    deadline = time.monotonic() + 240
    while not _parts(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver; its job's actors go with it
    proc.wait(30)
    before = _parts(out)
    total = -(-len(list_images([str(folder)])) // 4)
    assert 1 <= len(before) < total, f"{len(before)} of {total} shards before the kill"

    capsys.readouterr()
    assert main(cmd[3:]) == 0
    err = capsys.readouterr().err
    assert f"{total - len(before)} shards computed" in err and f"{len(before)} already complete" in err
    after = _parts(out)
    assert len(after) == total and all(after[name] == t for name, t in before.items())  # not rewritten

    rows = read_shards(out)
    ref = lite.score(list_images([str(folder)]))
    assert [r["path"] for r in rows] == [r.path for r in ref]
    assert [r["status"] for r in rows] == [r.status for r in ref]
    assert [r["error"] for r in rows] == [r.error for r in ref]
    assert sum(r.status != "ok" for r in ref) >= 6
    ok = [k for k, r in enumerate(ref) if r.status == "ok"]
    np.testing.assert_allclose([rows[k]["score"] for k in ok], [ref[k].score for k in ok], atol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total"] == len(ref) and manifest["scored"] == len(ok) and len(manifest["shards"]) == total


def test_ray_reads_tar_shards_and_path_lists(lite, ray_session, tmp_path, capsys):
    """A WebDataset-style .tar (image members scored without unpacking, a
    broken member reported, other members ignored) and a text list of paths."""
    from photocritic.engine_ray import read_shards

    ims = [photo(300 + k, (180, 140)) for k in range(3)]
    files = []
    for k, im in enumerate(ims):
        files.append(tmp_path / f"f{k}.jpg")
        files[-1].write_bytes(jpeg_bytes(im))
    tar = tmp_path / "shard-000.tar"
    with tarfile.open(tar, "w") as tf:
        for k, f in enumerate(files):
            tf.add(f, arcname=f"{k:04d}.jpg")
            meta = json.dumps({"k": k}).encode()
            info = tarfile.TarInfo(f"{k:04d}.json")
            info.size = len(meta)
            tf.addfile(info, io.BytesIO(meta))
        bad = b"garbage, not a jpeg" * 3
        info = tarfile.TarInfo("0003.jpg")
        info.size = len(bad)
        tf.addfile(info, io.BytesIO(bad))
    listing = tmp_path / "list.txt"
    listing.write_text("# a list of paths\n" + "".join(f"{f}\n" for f in files[:2]))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["score", str(tar), str(listing), "--engine", "ray", "--output", str(out), "--model", "lite",
                 "--precision", "fp32", "-q"]) == 0
    rows = read_shards(out)
    assert [r["path"] for r in rows] == [f"{tar}/{k:04d}.jpg" for k in range(4)] + [str(f) for f in files[:2]]
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["not_image"] + ["ok"] * 2
    assert rows[3]["error"].startswith(f"{tar}/0003.jpg: ")
    ref = [r.score for r in lite.score([str(f) for f in files])]
    np.testing.assert_allclose([r["score"] for r in rows if r["status"] == "ok"], ref + ref[:2], atol=1e-4)
    # --output must be a folder; a missing input is a usage error (exit 2)
    assert main(["score", str(tar), "--engine", "ray", "--output", str(tmp_path / "x.csv"), "-q"]) == 2
    assert main(["score", str(tmp_path / "nope"), "--engine", "ray", "--output", str(out), "-q"]) == 2


def test_ray_fills_the_feature_store_for_training(folder, ray_session, tmp_path):
    """`train --engine ray`'s extraction: the embeddings Ray stores are the
    local pipeline's, under its key, so the local pass finds them all."""
    from photocritic.data.images import list_images
    from photocritic.engine_ray import embed_into_store
    from photocritic.features import EmbeddingCache, gather
    from photocritic.models import Critic
    from photocritic.scoremap import ScoreMap

    files = list_images([str(folder)])[:20]
    critic = Critic({"type": "efficientnet-lite0"}, None, ScoreMap()).configure(precision="fp32")
    critic = critic.with_view("image.prelogits")
    with EmbeddingCache(tmp_path / "store.sqlite") as store:
        got = embed_into_store(critic, files, store)
        rows = critic.score(files, cache=store)
        assert rows.stats.computed == 0 and rows.stats.cached == got["computed"] == sum(r.status == "ok" for r in rows)
        ray_emb = gather(store, critic.encoder_key(), [r.content_hash for r in rows if r.status == "ok"], None)
        assert embed_into_store(critic, files, store)["computed"] == 0  # all there now
    local = EmbeddingCache(None)
    rows = critic.score(files, cache=local)
    local_emb = gather(local, critic.encoder_key(), [r.content_hash for r in rows if r.status == "ok"], None)
    np.testing.assert_allclose(ray_emb, local_emb, atol=1e-5)
