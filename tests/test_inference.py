"""In-process prediction (s2s_tasks.inference.Predictor): the answers ``s2s-tasks predict`` writes
for the same records, in input order, and clear errors for records it cannot answer."""

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from s2s_tasks.cli import main
from s2s_tasks.data.records import read_file
from s2s_tasks.inference import InvalidRecords, Predictor

TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
TASKS = ["translation", "summarization", "dialogue", "classification", "ner", "qa", "relation_extraction"]


def sample_records(task: str, count: int = 1000):
    """The first ``count`` records of the task's sample predict file, as field -> value."""
    sample = TASK_DIR / task / "sample"
    path = sample / "predict.txt" if (sample / "predict.txt").is_file() else sample / "predict.jsonl"
    table = read_file(str(path), "data.predict_file", "predict data")
    return [{name: table[name][i] for name in table.column_names} for i in range(min(count, len(table)))]


def cli_predictions(ckpt: str, path: str, tmp_path, *extra: str):
    out = tmp_path / "predictions.jsonl"
    main(["predict", "--ckpt_path", ckpt, "--data.predict_file", path, "--predictions.output_file", str(out),
          "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), *extra])
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("task", TASKS)
def test_predictor_answers_as_the_predict_command_does(task, tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint(task)
    records = sample_records(task)
    path = write_jsonl(tmp_path / "records.jsonl", records)  # the same records, as a predict file
    predictor = Predictor.from_checkpoint(ckpt, generation={"strategy": "greedy"} if task in TASKS[:3] else None)
    answers = predictor.predict(records)
    assert [a["index"] for a in answers] == list(range(len(records)))
    expected = cli_predictions(ckpt, path, tmp_path, *(["--model.generation.strategy", "greedy"] if task in TASKS[:3] else []))
    assert len(expected) == len(answers)
    for answer, written in zip(answers, expected):
        assert written.pop("index") == answer.pop("index") + 1  # the file's records are numbered from 1
        score, expected_score = answer.pop("score", None), written.pop("score", None)
        assert score == pytest.approx(expected_score, abs=1e-4)  # batches padded differently
        assert answer == written


def test_predictor_names_the_record_and_field_it_cannot_answer(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint("classification"))
    fields = predictor.input_fields()
    assert fields
    with pytest.raises(InvalidRecords) as err:
        predictor.predict([{fields[0]: "a fine film"}, {"no_such_field": "x"}])
    assert "record 2" in str(err.value) and repr(fields[0]) in str(err.value)
    with pytest.raises(InvalidRecords, match="record 1: a record is a JSON object"):
        predictor.predict(["just a string"])
    assert predictor.predict([]) == []
    with pytest.raises(ValueError, match="does not generate"):
        predictor.set_generation(beam_size=2)


def test_decoding_settings_change_and_are_checked(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint("translation"), generation={"beam_size": 2, "n_best": 2})
    (answer,) = predictor.predict([{"source": "The foxes were slow."}])
    assert len(answer["n_best"]) == 2
    with pytest.raises(ValueError, match="unknown decoding setting"):
        predictor.set_generation(beams=3)
    with pytest.raises(ValueError, match="beam_size"):
        predictor.set_generation(beam_size=0)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.ckpt"):
        Predictor.from_checkpoint(str(path))


MULTITASK_TINY = ("--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
                  "--model.num_decoder_layers", "1", "--data.tokenizer_vocab_size", "400")


@pytest.mark.usefixtures("single_thread")
def test_multitask_predictor_routes_each_record_to_its_task(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("multitask", *MULTITASK_TINY)
    predictor = Predictor.from_checkpoint(ckpt)
    assert predictor.input_fields()[0] == "task"
    records = [{"task": "ner", "tokens": ["Rosa", "Weller", "scored"]}, {"task": "classification", "text": "a fine film"},
               {"task": "translation", "source": "The foxes were slow."}]
    answers = predictor.predict(records)
    assert [a["task"] for a in answers] == ["ner", "classification", "translation"]
    assert len(answers[0]["tags"]) == 3 and "label" in answers[1] and isinstance(answers[2]["prediction"], str)
    expected = cli_predictions(ckpt, write_jsonl(tmp_path / "records.jsonl", records), tmp_path)
    for answer, written in zip(answers, expected):
        assert written.pop("index") == answer.pop("index") + 1
        answer.pop("score", None), written.pop("score", None)
        assert answer == written
    predictor.set_generation(max_length=2)  # the tasks that generate (translation here) take it
    assert predictor.model.task_modules["translation"].generation.max_length == 2
    assert isinstance(predictor.predict(records[2:])[0]["prediction"], str)
    with pytest.raises(InvalidRecords, match="unknown task 'qa'"):
        predictor.predict([{"task": "qa", "question": "?", "context": "."}])
