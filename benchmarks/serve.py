"""Load test of `photocritic serve` on loopback.

A real server process (`photocritic serve --model lite`) and 16 concurrent
clients for a bounded time (--seconds, after --warmup-seconds of the same
load that is not counted), each sending one photo per request
(1024x768 JPEGs made from real photos, as benchmarks/throughput.py makes
them). One request in ten is bad, in turn: a file that is not an image, a
truncated JPEG, an upload over the server's size limit, and an image over
its pixel limit; each must be answered 4xx.

Reports p50/p99 latency and img/s of the valid requests, against offline
scoring of the same files (`model.score(paths)`, no cache, model loaded
before the clock) in the same session; counts 4xx and 5xx; samples the
server's resident memory every second (first and last quarter compared);
and checks every valid upload's score against the CLI's score of that file.

Usage: python benchmarks/serve.py [--seconds 120] [--warmup-seconds 30] [--clients 16] [--images 256]
Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

import photocritic
from _common import photo_folder, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def bad_uploads(max_upload: int) -> list[tuple[str, bytes, str]]:
    good = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 120, 150)).save(good, "JPEG")
    huge = io.BytesIO()  # 25 MP, tiny on the wire (flat colour), over a 16 MP pixel limit
    Image.new("RGB", (5000, 5000), (10, 10, 10)).save(huge, "PNG")
    return [("text.jpg", b"this is not a photo\n" * 50, "not an image"),
            ("truncated.jpg", good.getvalue()[: len(good.getvalue()) // 3], "truncated JPEG"),
            ("oversize.jpg", b"\xff\xd8\xff" + os.urandom(max_upload + 1024), "over the upload limit"),
            ("huge.png", huge.getvalue(), "over the pixel limit")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup-seconds", type=float, default=30.0,
                    help="the same load first, not counted (memory is compared after it)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--model", default="lite")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    import httpx

    work, paths = photo_folder("pc-serve-", args.images)
    data = {p: Path(p).read_bytes() for p in paths}

    # offline reference: the same files, no cache, the model loaded first
    model = photocritic.load(args.model)
    model.score(paths[:4])
    t0 = time.perf_counter()
    ref_rows = model.score(paths, batch_size=args.batch_size)
    offline = len(paths) / (time.perf_counter() - t0)
    ref = {Path(r.path).name: r.score for r in ref_rows}
    print(f"offline scoring: {offline:.1f} img/s ({len(paths)} files, precision {model.precision})")
    del model

    max_upload = 4 << 20
    port = free_port()
    env = {**os.environ, "PHOTOCRITIC_CACHE": str(work / "unused.sqlite")}
    server = subprocess.Popen([sys.executable, "-m", "photocritic", "serve", "--model", args.model, "--port",
                               str(port), "--log-level", "warning", "--batch-size", str(args.batch_size),
                               "--max-upload-size", str(max_upload), "--max-pixels", "16000000",
                               "--max-in-flight", str(4 * args.clients)],
                              env=env, stderr=open(work / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start: " + (work / "server.log").read_text()[-2000:])
        with httpx.Client(timeout=60) as c:  # warm-up
            for p in paths[:8]:
                c.post(url + "/score", files={"files": (Path(p).name, data[p], "image/jpeg")})

        bad = bad_uploads(max_upload)
        lock = threading.Lock()
        memory = []

        def client(k: int, stop_at: float, records: list) -> None:
            rng = random.Random(k)
            n = 0
            with httpx.Client(timeout=120) as c:
                while time.monotonic() < stop_at:
                    n += 1
                    if n % 10 == k % 10:  # one in ten is bad
                        name, body, what = bad[rng.randrange(len(bad))]
                        kind = "bad"
                    else:
                        p = paths[rng.randrange(len(paths))]
                        name, body, kind = Path(p).name, data[p], "good"
                    t = time.perf_counter()
                    try:
                        r = c.post(url + "/score", files={"files": (name, body, "image/jpeg")})
                        status, js = r.status_code, r.json()
                    except (httpx.HTTPError, ValueError) as exc:
                        status, js = 599, {"error": str(exc)}
                    dt = time.perf_counter() - t
                    score = js["rows"][0]["score"] if status == 200 and js.get("rows") else None
                    with lock:
                        records.append((kind, status, dt, name, score))

        def sampler(stop_at: float) -> None:
            t_start = time.monotonic()
            while time.monotonic() < stop_at:
                memory.append((time.monotonic() - t_start, rss_mb(server.pid)))
                time.sleep(1.0)

        def load(seconds: float, records: list, sample: bool) -> float:
            stop_at = time.monotonic() + seconds
            threads = [threading.Thread(target=client, args=(k, stop_at, records)) for k in range(args.clients)]
            if sample:
                threads.append(threading.Thread(target=sampler, args=(stop_at,)))
            t0 = time.perf_counter()
            [t.start() for t in threads]
            [t.join() for t in threads]
            return time.perf_counter() - t0

        warm = []  # the same load, not counted: the allocator and thread pools reach their size
        load(args.warmup_seconds, warm, sample=False)
        rss_after_warmup = rss_mb(server.pid)
        records = []  # (kind, status, latency, name, score)
        elapsed = load(args.seconds, records, sample=True)
        health = httpx.get(url + "/healthz").json()
    finally:
        server.terminate()
        server.wait(30)

    good = [r for r in records if r[0] == "good"]
    badr = [r for r in records if r[0] == "bad"]
    lat = np.array([r[2] for r in good]) * 1000
    ok = [r for r in good if r[1] == 200]
    served = len(ok) / elapsed
    mismatches = sum(abs(r[4] - ref[r[3]]) > 1e-4 for r in ok)
    five = sum(r[1] >= 500 for r in records)
    bad_4xx = sum(400 <= r[1] < 500 for r in badr)
    q = max(1, len(memory) // 4)
    mem_first, mem_last = float(np.mean([m for _, m in memory[:q]])), float(np.mean([m for _, m in memory[-q:]]))
    out = {
        "model": args.model, "clients": args.clients, "seconds": round(elapsed, 1), "files": len(paths),
        "requests": len(records), "valid_requests": len(good), "valid_200": len(ok),
        "bad_requests": len(badr), "bad_answered_4xx": bad_4xx, "responses_5xx": five,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
        "served_img_per_s": round(served, 2), "offline_img_per_s": round(offline, 2),
        "served_over_offline": round(served / offline, 3),
        "score_mismatches_vs_cli": int(mismatches),
        "warmup_seconds": args.warmup_seconds, "warmup_requests": len(warm),
        "warmup_5xx": sum(r[1] >= 500 for r in warm), "server_rss_mb_after_warmup": round(rss_after_warmup, 1),
        "server_rss_mb_first_quarter": round(mem_first, 1), "server_rss_mb_last_quarter": round(mem_last, 1),
        "server_rss_mb_max": round(max(m for _, m in memory), 1),
        "server_batches": health["batches"], "server_images": health["images"],
        "mean_batch": round(health["images"] / max(1, health["batches"]), 1),
        "server_rss_mb_every_5s": [round(m, 1) for _, m in memory[::5]],
        "status_counts": {str(s): sum(r[1] == s for r in records) for s in sorted({r[1] for r in records})},
    }
    print(f"{len(records)} requests in {elapsed:.0f} s from {args.clients} clients: valid {len(good)} "
          f"({len(ok)} answered 200), bad {len(badr)} ({bad_4xx} answered 4xx), 5xx: {five}")
    print(f"latency p50 {out['latency_ms_p50']} ms, p99 {out['latency_ms_p99']} ms; "
          f"{served:.1f} img/s served vs {offline:.1f} img/s offline = {served / offline:.2f}x; "
          f"mean batch {out['mean_batch']}")
    print(f"server memory: {mem_first:.0f} MB (first quarter) -> {mem_last:.0f} MB (last quarter), "
          f"max {out['server_rss_mb_max']:.0f} MB; scores differing from the CLI's: {mismatches}")
    write_results(args.output, **out)


if __name__ == "__main__":
    main()
