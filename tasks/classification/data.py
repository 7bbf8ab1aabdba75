"""Data for text classification: a text column and a label column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Tuple, Union

from s2s_tasks.data.records import Records
from s2s_tasks.data.schema import Field
from s2s_tasks.data.structured import StructuredDataModule
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
    integer: its ``datasets`` ``ClassLabel`` name where the column has one, else its decimal string). Records with empty text are skipped and counted.

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

    def fields(self, split: str, records: Records) -> List[Field]:
        hp = self.hparams
        fields = [Field(hp.text_column, "data.text_column", "text")]
        if split != "predict":
            kind = "labels" if hp.multi_label else "label"
            names = records.class_names(hp.label_column)
            fields.append(Field(hp.label_column, "data.label_column", kind, "label", names=tuple(names) if names else None))
        return fields

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> ClassificationExample:
        hp = self.hparams
        label = record[hp.label_column] if with_gold else None
        return ClassificationExample(text=record[hp.text_column], label=label)

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
