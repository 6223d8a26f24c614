"""Training on a CUDA GPU with bf16: `finetune` and `vila-r` on random CLIPs
(the tiny one the tests use, and one of ViT-B/32's shape), through the same
`train` as on CPU; images per second for feature extraction and for
training, with the device's name; and `accelerate launch` on the GPU.

    python benchmarks/gpu.py [--n 1200] [--output benchmarks/results/gpu.json]

The synthetic world is made where this runs (scikit-image's photos when no
Debian wallpapers are installed, as on a bare GPU machine). It needs a
CUDA GPU and exits 2 without one.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, write_results  # noqa: E402

from photocritic.data.synthetic import find_sources, synthesize  # noqa: E402
from photocritic.encoders.tiny import save_random_clip  # noqa: E402
from photocritic.training.run import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
DEVICE = "cuda"  # --device cpu: a dry run of this script on a machine without a GPU


def held_out(model_dir: Path, world: Path, cache: Path) -> dict:
    """SRCC/PLCC of the trained model on the world's test split, scored on the GPU."""
    import photocritic
    from photocritic.data.datasets import load_dataset
    from photocritic.evaluation import compute_metrics
    from photocritic.features import EmbeddingCache

    test = load_dataset(world).split("test")[0]
    model = photocritic.load(model_dir, device=DEVICE, precision="bf16")
    with EmbeddingCache(cache) as store:
        rows = model.score(test.image_paths(), cache=store)
    ok = [i for i, r in enumerate(rows) if r.status == "ok"]
    m = compute_metrics(np.array([rows[i].score for i in ok]), test.mean[ok], True, n_boot=0)
    return {"n": len(ok), "srcc": round(float(m["srcc"]), 4), "plcc": round(float(m["plcc"]), 4)}


def run_vila_r(backbone: Path, world: Path, tmp: Path, name: str) -> dict:
    """Extraction (the image tower on the GPU, bf16) and the head's fit."""
    res = train({"method": "vila-r", "backbone": str(backbone), "dataset": str(world), "split": "train",
                 "val_split": "val", "device": DEVICE, "precision": "bf16", "quiet": True,
                 "cache": str(tmp / f"{name}.sqlite"), "output": str(tmp / f"{name}-vila-r"),
                 "extract_batch_size": 128}, log=lambda m: print("  " + m))
    m = res.metrics
    computed = m["train_images"]["computed"] + m["val_images"]["computed"]
    seconds = m["train_images"]["seconds"] + m["val_images"]["seconds"]
    return {"extract_images": computed, "extract_seconds": round(seconds, 3),
            "extract_img_per_s": round(computed / seconds, 1), "fit_seconds": m["fit_seconds"],
            "val_srcc": m["final_val"].get("srcc"), "test": held_out(tmp / f"{name}-vila-r", world,
                                                                      tmp / f"{name}.sqlite")}


def run_finetune(backbone: Path, world: Path, tmp: Path, name: str, epochs: int) -> dict:
    """The whole image tower + EMD head, bf16 autocast, the real data loader."""
    res = train({"method": "finetune", "backbone": str(backbone), "dataset": str(world), "split": "train",
                 "val_split": "val", "device": DEVICE, "precision": "bf16", "quiet": True,
                 "epochs": epochs, "output": str(tmp / f"{name}-finetune"), "no_cache": True},
                log=lambda m: print("  " + m))
    m = res.metrics
    rows = m["epochs"]
    used = m["train_images"]["used"]
    steady = rows[1:] or rows  # the first epoch includes CUDA warm-up
    t = sum(r["train_seconds"] for r in steady)
    return {"precision": m["precision"], "epochs": len(rows), "train_images": used,
            "train_img_per_s": round(used * len(steady) / t, 1),
            "first_epoch_img_per_s": round(used / rows[0]["train_seconds"], 1),
            "val_img_per_s": round(m["val_images"]["used"] * len(rows) / sum(r["val_seconds"] for r in rows), 1),
            "seconds": m["seconds"], "best_epoch": m["best_epoch"],
            "val": {k: rows[-1][k] for k in ("srcc", "emd")},
            "test": held_out(tmp / f"{name}-finetune", world, tmp / f"{name}-eval.sqlite")}


def accelerate_launch(backbone: Path, world: Path, tmp: Path) -> dict:
    """`accelerate launch -m photocritic train finetune … --device cuda` on the one GPU."""
    out = tmp / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *(["--cpu"] if DEVICE == "cpu" else []),
           "--num_processes", "1", "--mixed_precision", "bf16", "-m", "photocritic",
           "train", "finetune", "--backbone", str(backbone), "--dataset", str(world), "--split", "train",
           "--val-split", "val", "--device", DEVICE, "--precision", "bf16", "--epochs", "1", "--no-cache",
           "--output", str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return {"command": " ".join(["accelerate", "launch", "--num_processes", "1", "--mixed_precision", "bf16",
                                 "-m", "photocritic", "train", "finetune", "…", "--device", DEVICE]),
            "exit": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "model_written": (out / "config.json").exists(), "stderr_tail": p.stderr[-600:]}


def guarded(fn, *args) -> dict:
    """``fn(*args)``, or the error it raised (the other runs still happen)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the results, and the run fails at the end
        import traceback

        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--sizes", default="tiny,vit-b-32", help="random CLIP sizes (encoders/tiny.py SIZES)")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script, no figures kept")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU; none is available here", file=sys.stderr)
        return 2
    print(machine_line())
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)"
    print("GPU:", gpu, "CUDA", torch.version.cuda)
    tmp = Path(tempfile.mkdtemp(prefix="pc-gpubench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    sources = find_sources()
    t0 = time.perf_counter()
    info = synthesize(tmp / "world", args.n, seed=0, sources=sources, min_sources=min(8, len(sources)))
    print(f"world: {args.n} images from {len(sources)} photos in {time.perf_counter() - t0:.1f} s")
    out = {"device": gpu, "cuda": torch.version.cuda, "precision": "bf16",
           "world": {"images": args.n, "sources": len(sources), "splits": info.get("splits")},
           "runs": {}}
    for size in args.sizes.split(","):
        backbone = save_random_clip(tmp / f"clip-{size}", size=size, logit_scale=100.0)
        name = f"random CLIP ({size})"
        print(name)
        r = {"vila-r": guarded(run_vila_r, backbone, tmp / "world", tmp, size)}
        print("  vila-r:", r["vila-r"])
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r["finetune"] = guarded(run_finetune, backbone, tmp / "world", tmp, size, args.finetune_epochs)
        if DEVICE == "cuda":
            r["finetune"]["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        print("  finetune:", r["finetune"])
        out["runs"][name] = r
    out["accelerate_launch"] = accelerate_launch(tmp / "clip-tiny", tmp / "world", tmp)
    print("accelerate launch:", {k: v for k, v in out["accelerate_launch"].items() if k != "stderr_tail"})
    if DEVICE != "cuda":
        print("dry run: no results written")
        return 0
    write_results(args.output, **out)
    print(f"wrote {args.output}")
    failed = [f"{n}: {m}" for n, r in out["runs"].items() for m, v in r.items() if "error" in v]
    return 0 if out["accelerate_launch"]["exit"] == 0 and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
