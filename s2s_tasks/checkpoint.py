"""Reading what s2s-tasks stores inside a Lightning checkpoint, without executing code from it.

A checkpoint is self-contained: besides the weights and Lightning's own state it holds, under
the ``"s2s_tasks"`` key, the tokenizer JSON, the task name, label maps and the data settings, so
``predict`` needs nothing but the ``.ckpt`` file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Dict

import torch

EXTRAS_KEY = "s2s_tasks"


def load_checkpoint(path: str) -> Dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs) and a clear error."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file (check --ckpt_path)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is several paragraphs and suggests weights_only=False: keep the cause only
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        cause = f"it refers to {found.group(1)}" if found else str(err).strip().splitlines()[0]
        raise ValueError(
            f"{path} could not be read as a checkpoint: it holds objects that are not safe to load ({cause}); "
            "s2s-tasks reads only tensors and plain data from checkpoints (torch.load weights_only=True). "
            "Pass a checkpoint written by s2s-tasks with --ckpt_path."
        ) from None
    except Exception as err:
        raise ValueError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}: {str(err).strip().splitlines()[0]}). "
            "It may be truncated (half-written) or not a checkpoint; pass another file with --ckpt_path."
        ) from None


def read_checkpoint_extras(path: str) -> Dict[str, Any]:
    """The s2s-tasks section of a checkpoint (tokenizer JSON, task name, label maps ...)."""
    checkpoint = load_checkpoint(path)
    extras = checkpoint.get(EXTRAS_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(extras, dict):
        raise ValueError(f"{path} is not an s2s-tasks checkpoint: it has no '{EXTRAS_KEY}' section")
    return extras
