"""Subword tokenizers built with Hugging Face ``tokenizers``.

The default is a BPE model (Sennrich et al. 2016) over a SentencePiece-style ``Metaspace``
pre-tokenizer, so decoding restores the original spacing exactly (detokenized text is what
sacreBLEU and ROUGE must see). Special token ids are fixed so every part of the project can rely
on them: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
TOKENIZER_KINDS = ("bpe", "unigram")


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    kind: str = "bpe",
    min_frequency: int = 2,
    lowercase: bool = False,
    extra_special_tokens: Sequence[str] = (),
) -> Tokenizer:
    """Train a subword tokenizer on ``texts``.

    Args:
        texts: training text (source and target together for a shared vocabulary).
        vocab_size: upper bound of the vocabulary, special tokens included (config ``data.vocab_size``).
        kind: ``bpe`` or ``unigram`` (Kudo 2018) (config ``data.tokenizer_kind``).
        min_frequency: minimum pair frequency for a BPE merge.
        lowercase: lowercase the text before everything else.
        extra_special_tokens: more tokens never split (e.g. turn separators), ids from 4 on.
    """
    specials = SPECIAL_TOKENS + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    if kind == "bpe":
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False
        )
    elif kind == "unigram":
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=UNK, show_progress=False)
    else:
        raise ValueError(f"data.tokenizer_kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    tokenizer = Tokenizer(model)
    norm = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(norm)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    check_special_tokens(tokenizer, "the trained tokenizer")
    return tokenizer


def check_special_tokens(tokenizer: Tokenizer, origin: str) -> None:
    """Raise if the special tokens do not have the ids the project relies on."""
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        actual = tokenizer.token_to_id(token)
        if actual != expected_id:
            raise ValueError(
                f"{origin}: special token {token!r} has id {actual}, expected {expected_id}. "
                f"Tokenizers used with s2s-tasks must define {SPECIAL_TOKENS} as ids 0-3; "
                "train one by leaving data.tokenizer_file unset."
            )


def check_extra_special_tokens(tokenizer: Tokenizer, tokens: Sequence[str], origin: str) -> None:
    """Raise unless each of ``tokens`` is a special token of ``tokenizer`` (in the vocabulary,
    never split when encoding and dropped when decoding).

    Args:
        origin: names the tokenizer in the message, e.g. ``"data.tokenizer_file tok.json"``.
    """
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    missing = [t for t in tokens if t not in special]
    if missing:
        raise ValueError(
            f"{origin}: the tokenizer lacks the special tokens {missing} that this task needs "
            f"(it must register {list(tokens)}). Leave data.tokenizer_file unset to train a tokenizer "
            "with them, or add them to yours as special tokens (tokenizer.add_special_tokens)."
        )


def tokenizer_from_json(text: str, origin: str) -> Tokenizer:
    """Build a tokenizer from its JSON serialisation (as saved in files and checkpoints)."""
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{origin} is not a valid tokenizers JSON file ({err}); check data.tokenizer_file") from None
    check_special_tokens(tokenizer, origin)
    return tokenizer


def load_tokenizer(path: str) -> Tokenizer:
    """Load a tokenizer from a ``tokenizers`` JSON file or from an s2s-tasks checkpoint (``.ckpt``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data.tokenizer_file: {path} does not exist or is not a file")
    if file.suffix == ".ckpt":
        from s2s_tasks.checkpoint import read_checkpoint_extras

        extras = read_checkpoint_extras(path)
        return tokenizer_from_json(extras["tokenizer"], f"the tokenizer stored in checkpoint {path}")
    return tokenizer_from_json(file.read_text(encoding="utf-8"), f"tokenizer file {path}")


def encode_batch(tokenizer: Tokenizer, texts: List[str]) -> List[List[int]]:
    """Token ids of each text (no special tokens added)."""
    return [enc.ids for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def decode_batch(tokenizer: Tokenizer, ids: Iterable[Sequence[int]]) -> List[str]:
    """Detokenized text of each id sequence, special tokens dropped."""
    return tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=True)


def iter_texts(columns: Iterable[Iterable[Optional[str]]]) -> Iterator[str]:
    """Flatten several text columns, skipping missing values."""
    for column in columns:
        for text in column:
            if text:
                yield text
