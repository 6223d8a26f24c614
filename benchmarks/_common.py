"""Shared by the benchmark scripts: the machine line and the results file."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def machine_line() -> str:
    """One line naming the CPU, printed above every benchmark's figures."""
    from photocritic.device import cpu_info

    c = cpu_info()
    return (f"{c['cpu_model']} ({c['cpu_count']} CPUs, torch capability {c['cpu_capability']}, "
            f"native bf16: {'yes' if c['cpu_bf16_native'] else 'no'}), torch {torch.__version__}")


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
