"""A pretrained model's tokenizer, laid out for s2s-tasks (``--model.pretrained``).

Every part of the project relies on ``<pad> <unk> <s> </s>`` being ids 0-3
(:mod:`s2s_tasks.data.tokenizer`). A Hugging Face tokenizer has its own ids (BERT: ``[PAD]`` 0,
``[CLS]`` 101; T5: ``<pad>`` 0, ``</s>`` 1, no ``<s>``; BART: ``<s>`` 0, ``<pad>`` 1 ...), so its
vocabulary is permuted: :func:`vocabulary_layout` puts our four special tokens first (adding the
ones it lacks at the end) and the task's extra special tokens (entity markers ...) after the
model's vocabulary. The tokenizer keeps its normalizer, pre-tokenizer, model and decoder, so text
is split exactly as the pretrained model expects; its post-processor goes (the data modules add
``<s>`` / ``</s>`` themselves).

The network side (:mod:`s2s_tasks.nn.pretrained`) maps our ids back onto the model's embedding
rows with the same layout (:func:`vocabulary_layout` again, given only the model's tokenizer and
our vocabulary size), so a checkpoint needs nothing but the tokenizer it stores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

from tokenizers import Tokenizer

from s2s_tasks.data.tokenizer import SPECIAL_TOKENS, check_special_tokens

log = logging.getLogger(__name__)

#: what a gap in the model's id range is called in the layout (never produced by the tokenizer)
UNUSED = "<s2s-unused-{}>"


class PretrainedUnavailable(ValueError):
    """``model.pretrained`` names neither a local directory nor a model that can be fetched."""


def offline_message(name: str, err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"model.pretrained {name!r} is not a local directory, and it could not be loaded from the Hugging Face hub "
        f"({first}). Without network access, hub names cannot be resolved: download the model where there is "
        f"network (e.g. `hf download {name} --local-dir DIR`, or `AutoModel.from_pretrained(...).save_pretrained(DIR)` "
        "with its tokenizer) and pass the directory: --model.pretrained DIR"
    )


def check_pretrained_name(name: str) -> bool:
    """Whether ``name`` is a local directory; a path that does not exist is an error here (it is
    not a hub name, which has the form ``org/model`` or ``model``)."""
    if Path(name).expanduser().is_dir():
        return True
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"model.pretrained {name}: there is no such directory; pass a directory written by "
                                "save_pretrained (model and tokenizer), or a hub name such as google-t5/t5-small when online")
    return False


def load_hf_tokenizer(name: str):
    """The ``transformers`` fast tokenizer of a local directory or hub name (errors name the fix)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ImportError("model.pretrained needs the Hugging Face backend: pip install 's2s-tasks[hf]' (transformers)") from err
    local = check_pretrained_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True, local_files_only=local)
    except (OSError, ValueError) as err:
        if local:
            raise ValueError(f"model.pretrained {name}: the directory holds no usable tokenizer ({err}); save the "
                             "model's tokenizer there too (tokenizer.save_pretrained(DIR))") from err
        raise PretrainedUnavailable(offline_message(name, err)) from err
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model.pretrained {name}: only models with a fast (Rust `tokenizers`) tokenizer are supported")
    return tokenizer


def _hf_vocabulary(data: Dict[str, Any]) -> Dict[str, int]:
    """token -> id of a tokenizer's JSON (the model's vocabulary and its added tokens)."""
    model = data["model"]
    if model["type"] == "Unigram":
        vocab = {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        vocab = dict(model["vocab"])
    for added in data.get("added_tokens") or []:
        vocab.setdefault(added["content"], added["id"])
    return vocab


def vocabulary_layout(hf_vocab: Dict[str, int], extra_tokens: Sequence[str]) -> List[str]:
    """Our tokens in id order: the model's tokens by their ids (gaps as :data:`UNUSED`), then our
    special tokens it lacks, then the extra tokens it lacks; finally our four special tokens are
    swapped into ids 0-3. Deterministic, so the network can rebuild it."""
    size = max(hf_vocab.values()) + 1 if hf_vocab else 0
    tokens = [UNUSED.format(i) for i in range(size)]
    for token, i in hf_vocab.items():
        tokens[i] = token
    present = set(hf_vocab)
    for token in [*SPECIAL_TOKENS, *extra_tokens]:
        if token not in present:
            tokens.append(token)
            present.add(token)
    position = {token: i for i, token in enumerate(tokens)}
    for k, token in enumerate(SPECIAL_TOKENS):
        j = position[token]
        tokens[k], tokens[j] = tokens[j], tokens[k]
        position[tokens[j]], position[token] = j, k
    return tokens


def pretrained_tokenizer(hf_tokenizer, extra_special_tokens: Sequence[str] = ()) -> Tokenizer:
    """Our ``tokenizers.Tokenizer`` from a ``transformers`` fast tokenizer (see the module docstring)."""
    data = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    hf_vocab = _hf_vocabulary(data)
    tokens = vocabulary_layout(hf_vocab, extra_special_tokens)
    new_id = {token: i for i, token in enumerate(tokens)}
    model = data["model"]
    if model["type"] == "Unigram":
        scores = {piece: score for piece, score in model["vocab"]}
        floor = min(scores.values()) - 10.0 if scores else 0.0  # new pieces are never chosen by the Unigram model
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
        model["vocab"] = [[token, scores.get(token, floor)] for token in tokens]
        model["unk_id"] = new_id[unk] if unk is not None else None
    elif model["type"] in ("BPE", "WordPiece", "WordLevel"):
        model["vocab"] = {token: i for i, token in enumerate(tokens)}
    else:
        raise ValueError(f"model.pretrained: tokenizer model type {model['type']!r} is not supported (BPE, WordPiece, "
                         "WordLevel and Unigram are)")
    added = []
    seen = set()
    for entry in data.get("added_tokens") or []:
        added.append({**entry, "id": new_id[entry["content"]]})
        seen.add(entry["content"])
    for token in [*SPECIAL_TOKENS, *extra_special_tokens]:
        if token in seen:
            for entry in added:
                if entry["content"] == token:
                    entry["special"] = True  # dropped when decoding, never split
            continue
        added.append({"id": new_id[token], "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    data["added_tokens"] = sorted(added, key=lambda entry: entry["id"])
    # the data modules add <s> ... </s> themselves, and pad and cut by their own settings
    data["post_processor"] = None
    data["padding"] = None
    data["truncation"] = None
    tokenizer = Tokenizer.from_str(json.dumps(data))
    check_special_tokens(tokenizer, "the pretrained model's tokenizer")
    return tokenizer
