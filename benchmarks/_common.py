"""Shared by the benchmark scripts: the machine line and the results file."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def write_results(path: str | Path, **fields) -> None:
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(info, indent=2) + "\n")
