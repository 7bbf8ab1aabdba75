"""Data for text classification: a text column and a label column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Tuple, Union

from s2s_tasks.data.structured import RecordError, StructuredDataModule, read_text
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, encode_batch


#: the generate head's target for a multi-label example with no label
NO_LABELS = "[NONE]"
#: separates labels in the generate head's multi-label targets
LABEL_SEPARATOR = " ; "


class ClassificationExample(NamedTuple):
    """``label``: the label (single-label), or the tuple of labels (``data.multi_label``);
    ``None`` at predict time."""

    text: str
    label: Union[str, Tuple[str, ...], None]


class ClassificationDataModule(StructuredDataModule):
    """Texts (``data.text_column``) with one label each (``data.label_column``: a string, or an
    integer that is used as its decimal string). Records with empty text are skipped and counted.

    With ``multi_label: true`` each record has a list of labels (possibly empty; a plain string
    is one label) and the model predicts each label independently.

    Encoder head: ``<s> text </s>`` (the ``<s>`` state is what ``model.pooling: first`` reads) and
    the label id (multi-label: a 0/1 vector over the label set). Generate head: the text -> the
    label name (multi-label: the labels in label-set order joined by ``" ; "``, ``[NONE]`` for none).

    Without files or a dataset it uses the embedded sample: synthetic product reviews labelled
    negative / neutral / positive, made by ``sample_data.py``.

    Args:
        text_column, label_column: the columns of the text and the label(s).
        multi_label: several labels per text (the CLI passes it on to ``model.multi_label``).
        **kwargs: see :class:`~s2s_tasks.data.structured.StructuredDataModule`.
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    tensor_fields = ("label",)
    model_links = ("multi_label",)

    def __init__(self, text_column: str = "text", label_column: str = "label", multi_label: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records the columns too

    def columns(self, split: str, column_names: List[str]) -> Dict[str, str]:
        hp = self.hparams
        if split == "predict":
            return {"data.text_column": hp.text_column}
        return {"data.text_column": hp.text_column, "data.label_column": hp.label_column}

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> ClassificationExample:
        hp = self.hparams
        text = read_text(record, hp.text_column)
        label = None
        if with_gold:
            value = record[hp.label_column]
            if hp.multi_label:
                values = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
                if not isinstance(values, (list, tuple)):
                    raise RecordError(hp.label_column, f"expected a list of labels (data.multi_label is true), got {value!r}")
                label = tuple(sorted({self._label(v, hp.label_column) for v in values}))
            else:
                if isinstance(value, (list, tuple)):
                    raise RecordError(hp.label_column, f"expected one label, got a list {value!r}; set data.multi_label true for several labels per text")
                label = self._label(value, hp.label_column)
        return ClassificationExample(text=text, label=label)

    @staticmethod
    def _label(value: Any, column: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
            raise RecordError(column, f"expected a label (a non-empty string or an integer), got {value!r}")
        return str(value).strip()

    def example_labels(self, example: ClassificationExample) -> Iterable[str]:
        if example.label is None:
            return ()
        return example.label if isinstance(example.label, tuple) else (example.label,)

    def source_text(self, example: ClassificationExample) -> str:
        return example.text

    def target_text(self, example: ClassificationExample) -> str:
        if not self.hparams.multi_label:
            return example.label
        order = self.label_to_id
        return LABEL_SEPARATOR.join(sorted(example.label, key=order.__getitem__)) or NO_LABELS

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
            if with_gold and self.hparams.multi_label:
                feature["label"] = [int(label in example.label) for label in self.label_names]
            elif with_gold:
                feature["label"] = label_ids[example.label]
            features.append(feature)
        return features
