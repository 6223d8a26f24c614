"""Scale check of "bad input never stops a run", and of resuming after SIGKILL.

Builds a folder of N valid JPEGs plus 20 broken files covering every error
kind that a file in a folder can have, three links whose target has gone
(``missing``: files that vanish after the folder is listed), a FIFO and a
link to /dev/zero (``unreadable``: only regular files are read), then:

1. runs `photocritic score` on it and checks that every valid JPEG is scored
   and every broken file has its own status and a message naming it;
2. runs it again on a new cache, kills it with SIGKILL once about half the
   embeddings are committed, re-runs, and checks that the re-run takes the
   committed ones from the cache and computes only the remainder.

Prints what it found and writes benchmarks/results/robustness.json.
Usage: python benchmarks/robustness.py [--images 1000]
"""

from __future__ import annotations

import argparse
import atexit
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"


def make_folder(root: Path, n: int) -> tuple[list[str], dict[str, str]]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((640, 480), Image.Resampling.BICUBIC)
        im.save(root / f"ok_{i:05d}.jpg", quality=85)
    good = (root / "ok_00000.jpg").read_bytes()
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png, "PNG")
    png = png.getvalue()
    bomb = io.BytesIO()
    Image.new("1", (16000, 16000)).save(bomb, "PNG")  # 256 Mpixel, a few kB on disk
    makers = {
        "empty": lambda: b"",
        "truncated": lambda: good[: len(good) // 3],
        "corrupt": lambda: good[:20] + bytes(range(256)) * 30,
        "not_image": lambda: b"%PDF-1.4 this is not a photo\n" * 20,
        "too_large": lambda: bomb.getvalue(),
    }
    expected = {}
    kinds = list(makers) + ["unreadable"]
    for k in range(20):
        kind = kinds[k % len(kinds)]
        path = root / f"broken_{k:02d}_{kind}.{'png' if kind == 'too_large' else 'jpg'}"
        if kind == "unreadable":
            # A link to itself: opening it fails with ELOOP. (Permission bits
            # would do for ordinary users, but root reads through them.)
            os.symlink(path.name, path)
        else:
            path.write_bytes(makers[kind]())
        expected[str(path)] = kind
    # files that vanish after the folder is listed: links whose target is gone
    # (a path named on the command line that does not exist is a usage error)
    for k in range(3):
        v = root / f"vanished_{k}.jpg"
        os.symlink(f"gone_{k}.jpg", v)
        expected[str(v)] = "missing"
    # special files are read as nothing: a FIFO would block, /dev/zero never ends
    os.mkfifo(root / "special_fifo.jpg")
    expected[str(root / "special_fifo.jpg")] = "unreadable"
    os.symlink("/dev/zero", root / "special_zero.jpg")
    expected[str(root / "special_zero.jpg")] = "unreadable"
    return [str(root)], expected


def cache_count(path: Path) -> int:
    try:
        con = sqlite3.connect(path, timeout=1)
        n = con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="bad-input and SIGKILL-resume check at scale")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="photocritic-robust-"))
    atexit.register(shutil.rmtree, tmp, True)  # leave no temp files behind
    inputs, expected = make_folder(tmp / "photos", args.images)
    base = [sys.executable, "-m", "photocritic.cli", "score", *inputs, "-q"]
    report = {"valid_images": args.images, "broken_files": len(expected)}

    # 1. a complete run
    out_csv = tmp / "full.csv"
    t0 = time.perf_counter()
    run = subprocess.run(base + ["--cache", str(tmp / "full.sqlite"), "--output", str(out_csv)],
                         capture_output=True, text=True)
    report["full_run_seconds"] = round(time.perf_counter() - t0, 1)
    report["full_run_exit_code"] = run.returncode
    report["full_run_summary"] = run.stderr.strip().splitlines()[-1]
    rows = {r["path"]: r for r in csv.DictReader(open(out_csv))}
    ok = [p for p, r in rows.items() if Path(p).name.startswith("ok_") and r["status"] == "ok"]
    wrong = {}
    for p, k in expected.items():
        r = rows.get(p)
        if r is None or r["status"] != k or Path(p).name not in r["error"]:
            wrong[p] = {"expected": k, "got": None if r is None else r["status"],
                        "error": None if r is None else r["error"]}
    report["valid_scored"] = len(ok)
    report["broken_with_right_status_and_message"] = len(expected) - len(wrong)
    report["broken_mismatches"] = wrong
    report["broken_examples"] = {rows[p]["status"]: rows[p]["error"] for p in expected if p in rows}

    # 2. SIGKILL half-way, then resume
    kill_cache = tmp / "kill.sqlite"
    cmd = base + ["--cache", str(kill_cache), "--output", str(tmp / "resume.csv")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and cache_count(kill_cache) < args.images // 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = cache_count(kill_cache)
    report["killed_with_sigkill"] = proc.returncode == -signal.SIGKILL
    report["embeddings_kept_after_kill"] = kept
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    summary = rerun.stderr.strip().splitlines()[-1]
    report["rerun_summary"] = summary
    report["rerun_computed_only_remainder"] = (
        f"{args.images} scored ({kept} from cache, {args.images - kept} computed)" in summary)

    passed = (run.returncode == 0 and len(ok) == args.images and not wrong
              and report["killed_with_sigkill"] and report["rerun_computed_only_remainder"]
              and rerun.returncode == 0)
    report["passed"] = passed
    write_results(args.output, **report)
    print(json.dumps(report, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
