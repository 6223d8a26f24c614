import csv
import json
import os
import subprocess
import sys

import pytest

from photocritic.cli import main

from conftest import REPO, jpeg_bytes, photo


def _run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "photocritic.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_shared_photos_scored_then_cached(shared_images, tmp_path):
    env = {**os.environ, "PHOTOCRITIC_CACHE": str(tmp_path / "c.sqlite")}
    out = tmp_path / "s.csv"
    first = _run("score", shared_images, "--recursive", "--output", out, env=env)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert all(1 <= float(r["score"]) <= 10 for r in rows)
    assert "10 scored (0 from cache, 10 computed), 0 failed" in first.stderr
    second = _run("score", shared_images, "--recursive", "--output", out, env=env)
    assert second.returncode == 0
    assert "10 scored (10 from cache, 0 computed), 0 failed" in second.stderr
    again = list(csv.DictReader(open(out)))
    assert [r["score"] for r in again] == [r["score"] for r in rows]


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_output_formats_agree(tmp_path, ext, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (d / "bad.jpg").write_bytes(b"nope")
    out = tmp_path / f"o{ext}"
    assert main(["score", str(d), "--output", str(out), "-q", "--no-cache"]) == 0
    if ext == ".csv":
        rows = list(csv.DictReader(open(out)))
        scores = {r["path"]: (float(r["score"]) if r["score"] else None, r["status"]) for r in rows}
    elif ext == ".jsonl":
        rows = [json.loads(line) for line in open(out)]
        scores = {r["path"]: (r["score"], r["status"]) for r in rows}
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out).to_pylist()
        scores = {r["path"]: (r["score"], r["status"]) for r in t}
    assert len(scores) == 4
    assert scores[str(d / "bad.jpg")] == (None, "not_image")
    ref = {r.path: r.score for r in __import__("photocritic").load("lite").score(
        [str(d / f"{i}.jpg") for i in range(3)])}
    for p, s in ref.items():
        assert scores[p][0] == pytest.approx(s, abs=1e-5)


def test_table_is_ranked(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    assert main(["score", str(d), "-q", "--no-cache"]) == 0
    captured = capsys.readouterr()
    lines = [line.split() for line in captured.out.splitlines()[1:] if line.strip()]
    scores = [float(parts[1]) for parts in lines]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert "4 scored" in captured.err


def test_usage_errors_are_clear(tmp_path, capsys):
    assert main(["score", str(tmp_path), "-q"]) == 2
    assert "no image files found" in capsys.readouterr().err
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(photo(0)))
    assert main(["score", str(tmp_path), "--output", str(tmp_path / "x.xlsx")]) == 2
    assert "unknown extension" in capsys.readouterr().err
    assert main(["score", str(tmp_path), "--model", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path), "--precision", "fp8"])
    assert e.value.code == 2


def test_unusable_cache_or_output_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(photo(0)))
    not_a_db = tmp_path / "junk.sqlite"
    not_a_db.write_bytes(b"this is not an sqlite database" * 100)
    assert main(["score", str(tmp_path / "a.jpg"), "--cache", str(not_a_db), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(not_a_db) in err and "--no-cache" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = _run("score", tmp_path / "a.jpg", "--no-cache", "-q", "--output", blocker / "out.csv")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"--output {blocker / 'out.csv'}: cannot write there" in out.stderr


def test_missing_hub_model_says_how_to_get_it(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(photo(0)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = _run("score", tmp_path, "--model", "openai/clip-vit-base-patch32", "--no-cache", env=env)
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert "openai/clip-vit-base-patch32" in out.stderr and "download" in out.stderr.lower()


def test_make_run_prints_the_readme_ranking(tmp_path):
    """`make run` scores examples/ with lite; its ranking is the one the README shows."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("`make run` writes"):]
    block = block[block.index("```") + 4:]
    block = block[:block.index("```")]
    want = [(line.split()[2], float(line.split()[1])) for line in block.splitlines()[1:] if line.strip()]
    assert len(want) == 6
    env = {**os.environ, "PHOTOCRITIC_CACHE": str(tmp_path / "c.sqlite")}
    out = _run("score", "examples", "--model", "lite", "--output", tmp_path / "examples.csv", "--table",
               env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    got = [(line.split()[2], float(line.split()[1])) for line in out.stdout.splitlines()[1:] if line.strip()]
    # precision auto: fp32 or bf16 by CPU, so the second decimal may differ; images whose
    # README scores are that close may swap places, no other pair may
    assert sorted(p for p, _ in got) == sorted(p for p, _ in want)
    got_score = dict(got)
    for path, w in want:
        assert abs(got_score[path] - w) < 0.15, path
    for (p1, w1), (p2, w2) in [(a, b) for i, a in enumerate(want) for b in want[i + 1:]]:
        if w1 - w2 >= 0.15:
            assert got_score[p1] > got_score[p2], (p1, p2)
