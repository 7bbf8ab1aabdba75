"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple


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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}")
