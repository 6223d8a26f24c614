"""Shared by the benchmark scripts: the machine line and the results file."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def machine_line() -> str:
    """One line naming the CPU, printed above every benchmark's figures."""
    from photocritic.device import cpu_info

    c = cpu_info()
    return (f"{c['cpu_model']} ({c['cpu_count']} CPUs, torch capability {c['cpu_capability']}, "
            f"native bf16: {'yes' if c['cpu_bf16_native'] else 'no'}), torch {torch.__version__}")


def world_summary(world: dict) -> dict:
    """What a results file records of the synthetic world a run used (its
    ``synthesize`` summary): size, sources, splits and generator version."""
    return {k: world[k] for k in ("images", "sources", "splits", "version")}


def write_results(path: str | Path, **fields) -> None:
    """The figures with the machine they were measured on: the CPU model,
    torch's CPU capability and whether the CPU does bf16 natively (bf16
    figures mean nothing without it)."""
    from photocritic.device import cpu_info

    info = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", **cpu_info(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(info, indent=2) + "\n")


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n distinct 1024x768 JPEGs: random crops of four real photos that scikit-image ships."""
    import skimage.data as sk

    sources = [Image.fromarray(getattr(sk, name)()).convert("RGB")
               for name in ("astronaut", "coffee", "chelsea", "rocket")]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        f = rng.uniform(0.7, 1.0)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((1024, 768), Image.Resampling.BICUBIC)
        p = folder / f"img{i:05d}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
    return paths


def photo_folder(prefix: str, n: int) -> tuple[Path, list[str]]:
    """Print the machine line; a new temp folder with ``n`` photos in ``photos/`` (:func:`make_jpegs`)."""
    import tempfile

    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix=prefix))
    return work, make_jpegs(work / "photos", n)
