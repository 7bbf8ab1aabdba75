"""``predict`` streams its input: a chunk of records at a time is read, encoded, predicted and
written, in input order, and a failed run leaves an earlier predictions file as it was.
(The peak memory on a 200,000-line file is measured by ``benchmarks/predict_memory.py``.)"""

import json
import logging

import pytest

from helpers import quiet_trainer

import s2s_tasks.data.streaming as streaming
from s2s_tasks.callbacks import PredictionWriter
from s2s_tasks.tasks.qa.data import QADataModule
from s2s_tasks.tasks.qa.model import QAModule
from s2s_tasks.tasks.translation.data import TranslationDataModule
from s2s_tasks.tasks.translation.model import TranslationModule

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_translation(data):
    return TranslationModule(vocab_size=data.vocab_size, pad_id=data.pad_id, d_model=32, ffn_dim=64, num_heads=2,
                             num_encoder_layers=1, num_decoder_layers=1, dropout=0.0, log_examples=0,
                             generation={"max_length": 6})


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    TranslationDataModule(tokenizer_vocab_size=300).tokenizer.save(str(path))
    return str(path)


def test_the_stream_reads_one_chunk_ahead_at_most(tokenizer_file, tmp_path, monkeypatch):
    lines = [f"ein Haus Nummer {i}" for i in range(1000)]
    path = tmp_path / "inputs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    consumed = []
    real = streaming.iter_file

    def counting(*args, **kwargs):
        for chunk in real(*args, **kwargs):
            consumed.append(len(chunk))
            yield chunk

    monkeypatch.setattr(streaming, "iter_file", counting)
    data = TranslationDataModule(predict_file=str(path), tokenizer_file=tokenizer_file, eval_max_tokens=200)
    stream = streaming.PredictStream(data, str(path), "data.predict_file", max_tokens=200, max_batch_size=None,
                                     chunk_records=50)
    batches = iter(stream)
    first = next(batches)
    assert sum(consumed) == 50  # one chunk read, not the file
    seen = list(first["index"].tolist())
    for batch in batches:
        seen += batch["index"].tolist()
        assert sum(consumed) <= (max(seen) // 50 + 1) * 50
    assert sorted(seen) == list(range(1, 1001))


def test_predict_writes_every_input_in_order_across_chunks(tokenizer_file, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 7)
    lines = [f"ein {'kleines ' * (i % 5)}Haus {i}" for i in range(40)]
    lines[9] = "   "  # skipped and counted; the other outputs keep their record numbers
    path = tmp_path / "inputs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = TranslationDataModule(predict_file=str(path), tokenizer_file=tokenizer_file, eval_max_tokens=64)
    out = tmp_path / "predictions.jsonl"
    trainer = quiet_trainer(tmp_path, callbacks=[PredictionWriter(str(out))])
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        trainer.predict(tiny_translation(data), datamodule=data, return_predictions=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == [i for i in range(1, 41) if i != 10]
    assert [r["source"] for r in records] == [line for i, line in enumerate(lines) if i != 9]
    assert "skipped 1 of 40 records: empty or whitespace-only source" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


def test_qa_windows_of_a_question_stay_together_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 3)
    context = " ".join(f"fact {i} is about person {i} ." for i in range(30))
    records = [{"id": f"q{i}", "context": context, "question": f"what is fact {i} about ?"} for i in range(8)]
    path = tmp_path / "predict.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({**records[0], "answers": {"text": ["person 0"], "answer_start": [context.index("person 0")]}}) + "\n")
    data = QADataModule(train_file=str(train), predict_file=str(path), tokenizer_vocab_size=120, max_source_tokens=32,
                        doc_stride=8, max_question_tokens=10, eval_max_tokens=256)
    model = QAModule(vocab_size=data.vocab_size, pad_id=data.pad_id, d_model=32, ffn_dim=64, num_heads=2,
                     num_encoder_layers=1, dropout=0.0, log_examples=0)
    out = tmp_path / "predictions.jsonl"
    trainer = quiet_trainer(tmp_path, callbacks=[PredictionWriter(str(out))])
    trainer.predict(model, datamodule=data, return_predictions=False)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in written] == [r["id"] for r in records]  # one record per question, many windows each
    for record in written:
        assert record["answer"] == context[record["start_char"] : record["end_char"]]


def test_a_failing_predict_keeps_the_previous_output(tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 5)
    path = tmp_path / "inputs.jsonl"
    good = [json.dumps({"source": f"ein Haus {i}"}) for i in range(12)]
    path.write_text("\n".join(good + ['{"source": "kaputt"']) + "\n", encoding="utf-8")  # line 13 is broken
    out = tmp_path / "predictions.jsonl"
    out.write_text("earlier results\n", encoding="utf-8")
    data = TranslationDataModule(predict_file=str(path), tokenizer_file=tokenizer_file, eval_max_tokens=64)
    trainer = quiet_trainer(tmp_path, callbacks=[PredictionWriter(str(out))])
    with pytest.raises(ValueError, match=r"inputs.jsonl, line 13, column \d+: malformed JSON"):
        trainer.predict(tiny_translation(data), datamodule=data, return_predictions=False)
    assert out.read_text(encoding="utf-8") == "earlier results\n"
    assert not list(tmp_path.glob("*.tmp"))
