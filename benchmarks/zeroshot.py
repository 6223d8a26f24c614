"""Zero-shot scoring speed: photocritic against torchmetrics' CLIP-IQA.

Both score the same folder of JPEGs (1024x768, made from real photos that
scikit-image ships) with the same random-weight CLIP ViT-B/32 saved locally
and the same antonym pair ("Good photo." / "Bad photo."), in one run:

* photocritic: `photocritic.load(dir, prompts=...)` then `.score(paths)` with
  an empty cache (cold), fp32 and bf16;
* torchmetrics: `CLIPImageQualityAssessment` fed the way its documentation
  shows - batches of uint8 image tensors (N, 3, H, W) - after decoding each
  JPEG with PIL, in batches of the same size.

Each side's model is built before the clock starts. The model's logit scale is
set to 100 (as in trained CLIPs, and as torchmetrics assumes) so that both
compute the same quantity; how far their probabilities differ (photocritic
decodes JPEGs at reduced size and resamples only the crop) is recorded
beside images/s and the ratio, printed and written to
benchmarks/results/zeroshot.json.
Usage: python benchmarks/zeroshot.py [--images 200]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import photocritic  # noqa: E402
from _common import machine_line, write_results  # noqa: E402
from photocritic.compat import torchmetrics_clip_loader  # noqa: E402
from photocritic.encoders.tiny import save_random_clip  # noqa: E402
from photocritic.features import EmbeddingCache  # noqa: E402
from photocritic.metrics import srcc  # noqa: E402
from photocritic.methods.zeroshot import PromptSet  # noqa: E402
from throughput import make_jpegs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "zeroshot.json"
PAIR = ("Good photo.", "Bad photo.")


def torchmetrics_metric(model_dir: Path):
    from torchmetrics.multimodal import CLIPImageQualityAssessment

    return CLIPImageQualityAssessment(model_name_or_path=torchmetrics_clip_loader(model_dir),
                                      prompts=(PAIR,))


def run_torchmetrics(metric, paths: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = []
    for start in range(0, len(paths), batch_size):
        batch = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]]
        imgs = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # uint8 (N, 3, H, W)
        out.append(metric(imgs).reshape(-1))
    return time.perf_counter() - t0, torch.cat(out).numpy()


def run_photocritic(model_dir: Path, paths: list[str], batch_size: int, precision: str,
                    tmp: Path) -> tuple[float, np.ndarray]:
    critic = photocritic.load(str(model_dir), precision=precision,
                              prompts=PromptSet("clipiqa-good-bad", "antonym", pairs=[list(PAIR)]))
    critic.encoder  # build the model before the clock starts, like the metric's constructor
    cache = EmbeddingCache(tmp / f"cold-{precision}-{time.time_ns()}.sqlite")
    t0 = time.perf_counter()
    rows = critic.score(paths, batch_size=batch_size, cache=cache)
    seconds = time.perf_counter() - t0
    cache.close()
    assert all(r.status == "ok" for r in rows)
    return seconds, (np.array([r.score for r in rows]) - 1.0) / 9.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="photocritic vs torchmetrics zero-shot speed")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="photocritic-zs-"))
    atexit.register(shutil.rmtree, tmp, True)  # leave no temp files behind
    paths = make_jpegs(tmp / "jpegs", args.images, seed=1)
    # logit scale 100, as trained CLIPs have and torchmetrics assumes, so the scores agree
    model_dir = save_random_clip(tmp / "clip-vit-b-32-random", size="vit-b-32", kind="clip",
                                 logit_scale=100.0)

    metric = torchmetrics_metric(model_dir)
    run_torchmetrics(metric, paths[:args.batch_size], args.batch_size)  # warm-up
    tm_s, tm_p = run_torchmetrics(metric, paths, args.batch_size)
    run_photocritic(model_dir, paths[:args.batch_size], args.batch_size, "fp32", tmp)  # warm-up
    results = {"torchmetrics_fp32": {"seconds": round(tm_s, 2), "img_s": round(len(paths) / tm_s, 2)}}
    for precision in ("fp32", "bf16"):
        pc_s, pc_p = run_photocritic(model_dir, paths, args.batch_size, precision, tmp)
        results[f"photocritic_{precision}"] = {
            "seconds": round(pc_s, 2), "img_s": round(len(paths) / pc_s, 2),
            "speedup_over_torchmetrics_fp32": round(tm_s / pc_s, 2),
            "max_abs_diff_of_probabilities": float(np.abs(pc_p - tm_p).max()),
            "srcc_with_torchmetrics": srcc(pc_p, tm_p)}
    print(f"{'':<22} {'img/s':>8} {'speedup':>8}")
    print(f"{'torchmetrics fp32':<22} {results['torchmetrics_fp32']['img_s']:>8.1f} {'1.00x':>8}")
    for precision in ("fp32", "bf16"):
        r = results[f"photocritic_{precision}"]
        print(f"{'photocritic ' + precision:<22} {r['img_s']:>8.1f} {r['speedup_over_torchmetrics_fp32']:>7.2f}x"
              f"   (max |dp| {r['max_abs_diff_of_probabilities']:.2e})")
    write_results(args.output, images=len(paths), jpeg_size="1024x768", batch_size=args.batch_size,
                  model="random-weight CLIP ViT-B/32 (logit scale 100), local directory",
                  prompts=list(PAIR), results=results)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
