"""Reading what s2s-tasks stores inside a Lightning checkpoint, without executing code from it.

A checkpoint is self-contained: besides the weights and Lightning's own state it holds, under
the ``"s2s_tasks"`` key, the tokenizer JSON, the task name, label maps and the data settings, so
``predict`` needs nothing but the ``.ckpt`` file.

:func:`check_checkpoint` compares a checkpoint with the run it is given to (task, tokenizer,
labels) before anything is built, so a mismatch is reported in one sentence that names the fix.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

EXTRAS_KEY = "s2s_tasks"


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return re.split(r"(?<=[.!])\s", line, maxsplit=1)[0]


def _not_readable(path: str, file: Path) -> Optional[str]:
    """Why ``file`` cannot be a checkpoint, judged from its bytes (None when it may be one)."""
    size = file.stat().st_size
    if size == 0:
        return f"{path} could not be read as a checkpoint (the file is empty): it may be truncated (half-written); pass another file with --ckpt_path."
    with open(file, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):  # torch.save writes a zip archive
        if not zipfile.is_zipfile(file):
            return (
                f"{path} could not be read as a checkpoint (its zip archive ends early, after {size} bytes): the file is "
                "truncated (half-written or cut off while copying). Pass a complete checkpoint with --ckpt_path, "
                "e.g. another one from the same checkpoints directory."
            )
        return None
    if head[:1] == b"\x80":  # a pickle: the legacy torch.save format
        return None
    return (
        f"{path} could not be read as a checkpoint: it is not a PyTorch checkpoint (it starts with {head!r}; "
        "a checkpoint is a zip archive written by torch.save). Pass a .ckpt file written by s2s-tasks fit with --ckpt_path."
    )


def load_checkpoint(path: str) -> Dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs) and a clear error."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file (check --ckpt_path)")
    problem = _not_readable(path, file)
    if problem:
        raise ValueError(problem)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is several paragraphs and suggests weights_only=False: keep the cause only
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if not found:
            raise ValueError(
                f"{path} could not be read as a checkpoint: it is not a PyTorch checkpoint, or it is damaged "
                f"({_first_sentence(str(err).split('WeightsUnpickler error:')[-1]) or 'unreadable pickle'}). "
                "Pass a .ckpt file written by s2s-tasks fit with --ckpt_path."
            ) from None
        raise ValueError(
            f"{path} could not be read as a checkpoint: it holds objects that are not safe to load (it refers to {found.group(1)}); "
            "s2s-tasks reads only tensors and plain data from checkpoints (torch.load weights_only=True). "
            "Pass a checkpoint written by s2s-tasks with --ckpt_path."
        ) from None
    except Exception as err:
        raise ValueError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}: {_first_sentence(str(err))}). "
            "It may be truncated (half-written) or not a checkpoint; pass another file with --ckpt_path."
        ) from None


def checkpoint_extras(checkpoint: Any, path: str) -> Dict[str, Any]:
    """The s2s-tasks section of a loaded checkpoint."""
    extras = checkpoint.get(EXTRAS_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(extras, dict):
        raise ValueError(
            f"{path} is not an s2s-tasks checkpoint: it has no '{EXTRAS_KEY}' section (the tokenizer and task that "
            "s2s-tasks stores with the weights). Pass a checkpoint written by s2s-tasks fit with --ckpt_path."
        )
    return extras


def read_checkpoint_extras(path: str) -> Dict[str, Any]:
    """The s2s-tasks section of a checkpoint (tokenizer JSON, task name, label maps ...)."""
    return checkpoint_extras(load_checkpoint(path), path)


def _vocabulary_difference(given: Dict[str, int], stored: Dict[str, int]) -> str:
    if len(given) != len(stored):
        return f"{len(given)} tokens against the checkpoint's {len(stored)}"
    differing = sorted(set(given.items()) ^ set(stored.items()))
    if differing:
        return f"both have {len(given)} tokens but they differ (e.g. {differing[0][0]!r})"
    return "they differ"


def check_checkpoint(
    checkpoint: Dict[str, Any],
    path: str,
    task: Optional[str] = None,
    tokenizer_file: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Raise ``ValueError`` when the checkpoint at ``path`` cannot serve this run; return its extras.

    Args:
        checkpoint: the loaded checkpoint (:func:`load_checkpoint`).
        task: the task the run is for; the checkpoint must have been trained for it.
        tokenizer_file: ``data.tokenizer_file`` when given: its vocabulary must be the checkpoint's.
        labels: ``data.labels`` when given: they must be the checkpoint's, in the same order.
    """
    extras = checkpoint_extras(checkpoint, path)
    stored_task = extras.get("task")
    if task is not None and stored_task is not None and stored_task != task:
        raise ValueError(
            f"checkpoint {path} was trained for task {stored_task!r}, not for task {task!r} asked for here. "
            f"Run with --task {stored_task}, or leave --task out (the task is then read from --ckpt_path)."
        )
    from s2s_tasks.data.tokenizer import load_tokenizer, tokenizer_from_json

    if "tokenizer" not in extras:
        raise ValueError(f"checkpoint {path} holds no tokenizer (its '{EXTRAS_KEY}' section lacks 'tokenizer'); pass a checkpoint written by s2s-tasks fit")
    stored = tokenizer_from_json(extras["tokenizer"], f"the tokenizer stored in checkpoint {path}")
    stored_vocab = stored.get_vocab()
    if tokenizer_file is not None and str(tokenizer_file) != str(path):
        given_vocab = load_tokenizer(str(tokenizer_file)).get_vocab()
        if given_vocab != stored_vocab:
            raise ValueError(
                f"data.tokenizer_file {tokenizer_file} does not match the tokenizer stored in checkpoint {path}: "
                f"{_vocabulary_difference(given_vocab, stored_vocab)}, and the weights only work with the vocabulary "
                "they were trained with. Drop --data.tokenizer_file: the checkpoint carries its own tokenizer."
            )
    state_dict = checkpoint.get("state_dict") or {}
    embeddings = {k: v for k, v in state_dict.items() if k.endswith("embed.token.weight") and hasattr(v, "shape")}
    for name, weight in embeddings.items():
        if weight.shape[0] != len(stored_vocab):
            raise ValueError(
                f"checkpoint {path} is inconsistent: its weights ({name}) are for a vocabulary of {weight.shape[0]} "
                f"tokens but the tokenizer stored in it has {len(stored_vocab)}, so it was modified or assembled from "
                "different runs. Pass a checkpoint written by s2s-tasks fit with --ckpt_path."
            )
    stored_labels = (extras.get("label_maps") or {}).get("labels")
    if labels is not None and stored_labels and list(labels) != list(stored_labels):
        raise ValueError(
            f"data.labels {list(labels)} differ from the labels checkpoint {path} was trained with {list(stored_labels)} "
            "(their order gives the label ids). Drop --data.labels: the checkpoint carries its own."
        )
    return extras
