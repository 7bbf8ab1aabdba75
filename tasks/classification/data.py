"""Data for text classification: a text column and a label column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

from s2s_tasks.data.structured import RecordError, SkipRecord, StructuredDataModule
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, encode_batch


class ClassificationExample(NamedTuple):
    text: str
    label: Optional[str]


class ClassificationDataModule(StructuredDataModule):
    """Texts (``data.text_column``) with one label each (``data.label_column``: a string, or an
    integer that is used as its decimal string). Records with empty text are skipped and counted.

    Encoder head: ``<s> text </s>`` (the ``<s>`` state is what ``model.pooling: first`` reads) and
    the label id. Generate head: the text -> the label name.

    Without files or a dataset it uses the embedded sample: synthetic product reviews labelled
    negative / neutral / positive, made by ``sample_data.py``.

    Args:
        text_column, label_column: the columns of the text and the label.
        **kwargs: see :class:`~s2s_tasks.data.structured.StructuredDataModule`.
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    tensor_fields = ("label",)

    def __init__(self, text_column: str = "text", label_column: str = "label", **kwargs: Any) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records the columns too

    def columns(self, split: str, column_names: List[str]) -> Dict[str, str]:
        hp = self.hparams
        if split == "predict":
            return {"data.text_column": hp.text_column}
        return {"data.text_column": hp.text_column, "data.label_column": hp.label_column}

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> ClassificationExample:
        hp = self.hparams
        text = record[hp.text_column]
        if text is not None and not isinstance(text, str):
            raise RecordError(hp.text_column, f"expected text, got {type(text).__name__} ({str(text)[:60]!r})")
        if not text or not text.strip():
            raise SkipRecord("empty or whitespace-only text")
        label = None
        if with_gold:
            label = record[hp.label_column]
            if isinstance(label, bool) or not isinstance(label, (str, int)) or (isinstance(label, str) and not label.strip()):
                raise RecordError(hp.label_column, f"expected a label (a non-empty string or an integer), got {label!r}")
            label = str(label).strip()
        return ClassificationExample(text=text, label=label)

    def example_labels(self, example: ClassificationExample) -> Iterable[str]:
        return (example.label,) if example.label is not None else ()

    def source_text(self, example: ClassificationExample) -> str:
        return example.text

    def target_text(self, example: ClassificationExample) -> str:
        return example.label

    def gold(self, example: ClassificationExample) -> str:
        return example.label

    def encode_examples(self, examples, tokenizer, with_gold: bool, origin: str) -> List[Dict[str, Any]]:
        limit = self.hparams.max_source_tokens - 2
        ids = encode_batch(tokenizer, [e.text for e in examples])
        self.report(origin, sum(len(i) > limit for i in ids), len(ids),
                    f"texts truncated to data.max_source_tokens={self.hparams.max_source_tokens} tokens")
        label_ids = self.label_to_id
        features = []
        for n, (example, token_ids) in enumerate(zip(examples, ids)):
            feature = {"src_ids": [BOS_ID] + token_ids[:limit] + [EOS_ID], "example": n}
            if with_gold:
                feature["label"] = label_ids[example.label]
            features.append(feature)
        return features
