"""Data for dialogue: a multi-turn history as the source, the next turn as the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Tuple

from s2s_tasks.data.datamodule import Seq2SeqDataModule
from s2s_tasks.data.tokenizer import EOS_ID, encode_batch


TURN = "<turn>"
SPEAKERS = ("<spk1>", "<spk2>")


def split_turns(value: Any, separator: str) -> List[str]:
    """The turns of one history, oldest first, stripped, empty turns dropped.

    Args:
        value: a list of turns, or one string with the turns joined by ``separator``.
        separator: ``data.turn_separator``; a string history is split at the separator with
            its surrounding whitespace ignored (``" </s> "`` also splits ``"a</s>b"``), or at
            the separator itself when it is all whitespace (e.g. ``"\\t"``).
    """
    if value is None:
        return []
    if isinstance(value, str):
        mark = separator.strip() or separator
        value = value.split(mark)
    return [turn.strip() for turn in value if turn and turn.strip()]


def fit_history(turn_ids: List[List[int]], budget: int, markers: List[List[int]]) -> Tuple[List[int], bool, bool]:
    """Keep the most recent turns that fit ``budget`` tokens, dropping from the oldest.

    Args:
        turn_ids: token ids of each turn, oldest first (``N`` turns).
        budget: room for the history (``max_source_tokens - 1``: ``</s>`` follows).
        markers: the special-token ids put before each turn (``N`` lists: ``<turn>`` and an
            optional speaker token).

    Returns:
        ``(ids, dropped, truncated)``: ``<turn> [<spk>] turn ...`` of the kept turns in order;
        whether older turns were dropped; whether even the newest turn alone did not fit (it is
        then cut at its start, keeping its end, the words closest to the response).
    """
    kept: List[List[int]] = []
    used = 0
    for ids, marks in zip(reversed(turn_ids), reversed(markers)):
        piece = marks + ids
        if used + len(piece) > budget:
            break
        kept.append(piece)
        used += len(piece)
    truncated = False
    if not kept and turn_ids:
        marks, ids = markers[-1], turn_ids[-1]
        room = max(budget - len(marks), 0)
        kept = [(marks + ids[len(ids) - room :] if room else marks)[:budget]]
        truncated = True
    dropped = len(kept) < len(turn_ids)
    return [i for piece in reversed(kept) for i in piece], dropped, truncated


class DialogueDataModule(Seq2SeqDataModule):
    """Dialogue histories (``data.source_column``) and next turns (``data.target_column``).

    A history is a list of turns (a jsonl list field) or one string whose turns are joined by
    ``data.turn_separator``. Each turn is encoded separately and preceded by ``<turn>`` (and,
    with ``data.speaker_tokens``, by ``<spk1>``/``<spk2>``: counted back from the newest
    turn, which is always ``<spk2>``, so the response always belongs to ``<spk1>``); these are
    special tokens of the tokenizer, never split. The encoded source is
    ``<turn> [<spk>] turn_1 ... <turn> [<spk>] turn_k </s>``: the most recent turns that fit
    ``data.max_source_tokens``; how many records lost older turns is reported.

    Without files or a dataset it uses the embedded sample: templated multi-turn exchanges
    (bookings, orders, shopping, small talk ...) made by ``sample_data.py`` (deterministic, seeded).

    Args:
        turn_separator: the separator of string histories (default ``" </s> "``, as in
            DailyDialog-style files).
        speaker_tokens: add alternating speaker tokens to the turns (``validate``/``test``/``predict``
            with ``--ckpt_path`` default to the checkpoint's setting, like every data setting).
        source_column, target_column: default ``history`` and ``response``.
        **kwargs: the arguments of :class:`Seq2SeqDataModule`.
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    special_tokens: ClassVar[Tuple[str, ...]] = (TURN, *SPEAKERS)
    list_sources: ClassVar[bool] = True
    source_flags: ClassVar[Dict[str, str]] = {
        "src_turns_dropped": "lost their oldest turns to fit data.max_source_tokens={max_source_tokens}",
        "src_truncated": "kept only the end of their newest turn: it alone exceeds data.max_source_tokens={max_source_tokens}",
    }

    def __init__(
        self,
        turn_separator: str = " </s> ",
        speaker_tokens: bool = False,
        source_column: str = "history",
        target_column: str = "response",
        **kwargs: Any,
    ) -> None:
        if not turn_separator:
            raise ValueError("data.turn_separator must not be empty")
        super().__init__(source_column=source_column, target_column=target_column, **kwargs)

    @classmethod
    def source_segments(cls, value: Any, hparams: Mapping[str, Any]) -> List[str]:
        """The turns of a history (see :func:`split_turns`)."""
        return split_turns(value, hparams["turn_separator"])

    @classmethod
    def encode_sources(cls, values: List[Any], tokenizer, hparams: Mapping[str, Any]) -> Dict[str, list]:
        """``<turn> [<spk>] turn ... </s>`` per history, oldest turns dropped to fit (see :func:`fit_history`)."""
        histories = [split_turns(v, hparams["turn_separator"]) for v in values]
        flat = encode_batch(tokenizer, [turn for turns in histories for turn in turns])
        turn_id = tokenizer.token_to_id(TURN)
        speaker_ids = [tokenizer.token_to_id(s) for s in SPEAKERS]
        budget = hparams["max_source_tokens"] - 1
        out: Dict[str, list] = {"src_ids": [], "src_turns_dropped": [], "src_truncated": []}
        start = 0
        for turns in histories:
            turn_ids, start = flat[start : start + len(turns)], start + len(turns)
            n = len(turns)
            # speakers counted back from the newest turn (<spk2>), so the response is <spk1>'s
            markers = [[turn_id] + ([speaker_ids[(n - k) % 2]] if hparams["speaker_tokens"] else []) for k in range(n)]
            ids, dropped, truncated = fit_history(turn_ids, budget, markers)
            out["src_ids"].append(ids + [EOS_ID])
            out["src_turns_dropped"].append(dropped)
            out["src_truncated"].append(truncated)
        return out
