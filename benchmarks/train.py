"""Speed of training: feature extraction against the scoring pipeline, a
second `train` on stored features, the fine-tuning data loader against
in-memory tensors, and the linear probe on 250,000 x 768 features.

    python benchmarks/train.py [--n 400]

Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, write_results  # noqa: E402

import photocritic  # noqa: E402
from photocritic.data.datasets import load_dataset  # noqa: E402
from photocritic.data.synthetic import find_sources, synthesize  # noqa: E402
from photocritic.device import resolve_precision  # noqa: E402
from photocritic.features import EmbeddingCache  # noqa: E402
from photocritic.training.run import DEFAULTS, extract, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"


ROUNDS = 3


def extraction(ds, precision: str, tmp: Path) -> dict:
    """End-to-end img/s, weights loading included in both: `score` with a
    freshly loaded lite (no cache) vs training extraction into a fresh store
    (memory-mapped features); the median of 3 interleaved rounds."""
    paths = ds.image_paths()
    photocritic.load("lite", precision=precision).score(paths[:32])  # warm-up: threads, file cache
    cfg = {**DEFAULTS, "precision": precision, "quiet": True}
    score_rates, extract_rates = [], []
    for r in range(ROUNDS):
        t0 = time.perf_counter()
        photocritic.load("lite", precision=precision).score(paths)
        score_rates.append(len(paths) / (time.perf_counter() - t0))
        with EmbeddingCache(tmp / f"extract{r}.sqlite") as store:
            t0 = time.perf_counter()
            _, _, info, _ = extract(cfg, {"type": "efficientnet-lite0"}, ds, "image.pooled", store, None,
                                    to=tmp / f"features{r}.npy")
            extract_rates.append(info["used"] / (time.perf_counter() - t0))
    s, e = float(np.median(score_rates)), float(np.median(extract_rates))
    return {"images": len(paths), "rounds": ROUNDS, "score_img_per_s": round(s, 2),
            "extract_img_per_s": round(e, 2), "ratio": round(e / s, 3)}


def second_train(world: Path, tmp: Path, precision: str) -> dict:
    """A second `train vila-r` on the same data: the share of its time spent
    on input (hashing the files, reading the stored features)."""
    common = {"method": "vila-r", "backbone": "efficientnet-lite0", "dataset": str(world), "split": "train",
              "val_split": "val", "cache": str(tmp / "second.sqlite"), "quiet": True, "precision": precision}
    train({**common, "output": str(tmp / "first")}, log=lambda m: None)
    t0 = time.perf_counter()
    res = train({**common, "output": str(tmp / "second")}, log=lambda m: None)
    total = time.perf_counter() - t0
    m = res.metrics
    inp = m["train_images"]["seconds"] + m["val_images"]["seconds"]
    return {"total_seconds": round(total, 3), "input_seconds": round(inp, 3),
            "input_share": round(inp / total, 4), "images_decoded": m["train_images"]["computed"]
            + m["val_images"]["computed"], "fit_seconds": m["fit_seconds"]}


def loader_vs_memory(ds, precision: str, steps: int = 12, batch: int = 32) -> dict:
    """finetune's training step: images through finetune's loader (a
    persistent decoding worker, with the shared cache of decoded images,
    timed after the pass that fills it; and the same loader without the
    cache, decoding every epoch) vs the same step on pre-decoded tensors in
    memory."""
    from accelerate import Accelerator

    from photocritic.losses import emd
    from photocritic.methods.finetune import SoftmaxHead
    from photocritic.models import build_encoder
    from photocritic.training.pixelcache import EpochLoader, PixelCache
    from photocritic.training.trainer import FinetuneNet, ImageRatings, collate

    acc = Accelerator(cpu=True, mixed_precision="bf16" if precision == "bf16" else "no")
    enc = build_encoder({"type": "efficientnet-lite0"})
    tower = enc.tower().float()
    net = FinetuneNet(tower, SoftmaxHead(tower.dim))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-4, momentum=0.5)
    net, opt = acc.prepare(net, opt)
    pre = enc.preprocess
    paths = ds.image_paths()[:steps * batch]
    order = [list(range(k, min(k + batch, len(paths)))) for k in range(0, len(paths), batch)]
    workers = min(4, max(1, (os.cpu_count() or 2) // 2))
    cache = PixelCache(len(paths), pre, 2048)
    loaders, epochs = {}, {"loader": 0, "decoding": 0}
    for name, pixels in (("loader", cache), ("decoding", None)):
        data = ImageRatings(paths, ds.distribution[:len(paths)], pre, pixels=pixels)
        loaders[name] = EpochLoader(data, collate, workers, in_process_when_cached=True)

    def loader(name):
        epochs[name] += 1
        return loaders[name].epoch(epochs[name], order)

    def step(pixels, q):
        opt.zero_grad()
        with acc.autocast():
            loss = emd(net(pre.normalize(pixels)).float(), q)
        acc.backward(loss)
        opt.step()

    net.train()
    batches = list(loader("loader"))  # decodes, fills the cache, starts the worker
    list(loader("decoding"))  # starts that loader's worker
    step(batches[0][0], batches[0][1])  # warm-up
    rates = {"memory": [], "loader": [], "decoding": []}
    for _ in range(ROUNDS):  # interleaved; the median of each
        t0 = time.perf_counter()
        for pixels, q, _ in batches:
            step(pixels, q)
        rates["memory"].append(len(batches) / (time.perf_counter() - t0))
        for name in ("loader", "decoding"):
            t0 = time.perf_counter()
            for pixels, q, _ in loader(name):
                step(pixels, q)
            rates[name].append(len(batches) / (time.perf_counter() - t0))
    cache.close()
    mem, real, dec = (float(np.median(rates[k])) for k in ("memory", "loader", "decoding"))
    return {"batch": batch, "steps": len(batches), "rounds": ROUNDS, "loader_workers": workers,
            "loader_in_process": loaders["loader"].in_process(),
            "in_memory_steps_per_s": round(mem, 4), "loader_steps_per_s": round(real, 4),
            "ratio": round(real / mem, 3),
            "ratio_rounds": [round(a / b, 3) for a, b in zip(rates["loader"], rates["memory"])],
            "decoding_steps_per_s": round(dec, 4), "decoding_ratio": round(dec / mem, 3),
            "decoding_ratio_rounds": [round(a / b, 3) for a, b in zip(rates["decoding"], rates["memory"])]}


def linear_fit(n: int = 250_000, d: int = 768) -> dict:
    from photocritic.methods.base import Targets
    from photocritic.methods.linear import LinearProbe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x[:, :10].sum(1) + rng.normal(size=n)
    t0 = time.perf_counter()
    LinearProbe().fit({"image.prelogits": x}, Targets(y))
    return {"n": n, "d": d, "seconds": round(time.perf_counter() - t0, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    print(machine_line())
    precision = resolve_precision(args.precision, "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="pc-trainbench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    synthesize(tmp / "world", args.n, seed=1, sources=find_sources(), min_sources=8)
    ds = load_dataset(tmp / "world")
    out = {"precision": precision}
    out["extraction"] = extraction(ds, precision, tmp)
    print("extraction:", out["extraction"])
    out["second_train"] = second_train(tmp / "world", tmp, precision)
    print("second train on stored features:", out["second_train"])
    out["finetune_loader"] = loader_vs_memory(ds, precision)
    print("finetune loader:", out["finetune_loader"])
    out["linear_250k"] = linear_fit()
    print("linear probe on 250,000 x 768:", out["linear_250k"])
    write_results(RESULTS, **out)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
