"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple


def split_passthrough(argv: List[str]) -> Tuple[List[str], List[str]]:
    """(the script's own arguments, the ``s2s-tasks`` arguments after ``--``)."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def validation_metrics(cli) -> Dict[str, float]:
    """The ``val/*`` metrics a LightningCLI run logged last."""
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}


def write_json(path: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` as JSON, with the CPU it was measured on under ``"cpu"``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_description(), **payload}, indent=2) + "\n")
    print(f"\nwrote {out}")


def cpu_description() -> Dict[str, Any]:
    """The CPU a benchmark ran on: model name, logical CPUs, and which of the instruction sets that
    decide float32 and bfloat16 matrix speed it has (read from ``/proc/cpuinfo``; ``model`` only
    elsewhere). The machines of one class differ between sessions, so every result records this."""
    description: Dict[str, Any] = {"model": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return description
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    description["model"] = fields.get("model name", description["model"])
    description["isa"] = [isa for isa in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if isa in flags]
    return description


def _seconds_per_call(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def interleaved_medians(calls: Dict[str, Callable[[], object]], repeats: int, budget: float = 0.05) -> Dict[str, float]:
    """Median seconds per call of each of ``calls``, measured interleaved (one repeat of each in
    turn, ``repeats`` times); each repeat loops a call for about ``budget`` seconds."""
    numbers = {}
    for name, call in calls.items():
        call()
        numbers[name] = max(1, int(budget / max(_seconds_per_call(call, 1), 1e-6)))
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(_seconds_per_call(call, numbers[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}
