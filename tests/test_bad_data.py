"""The bad-input matrix for data files: every row, for every task where it applies, ends in an
error naming the config key, the file, the line (or record), the field and the fix, or (where
the policy is to skip or clean) in a count that is reported."""

import builtins
import json
import logging
import os
import subprocess
import sys

import pytest

import s2s_tasks.data.records as records_module
from s2s_tasks.registry import SINGLE_TASKS, TASKS

#: one valid training record per task, the column that holds its main input text, and a second
#: column that every record needs
VALID = {
    "translation": {"source": "ein kleines Haus", "target": "a small house"},
    "summarization": {"source": "the council met on monday and approved the budget .", "target": "budget approved"},
    "dialogue": {"history": ["hello there", "hi , how can i help ?"], "response": "i need a table for two"},
    "classification": {"text": "a fine product", "label": "pos"},
    "ner": {"tokens": ["Anna", "visited", "Lisbon"], "tags": ["B-PER", "O", "B-LOC"]},
    "qa": {"context": "Anna Brandt lives in Lisbon since 1984 .", "question": "Where does Anna live ?",
           "answers": {"text": ["Lisbon"], "answer_start": [21]}},
    "relation_extraction": {"text": "the storm caused the flood .", "head": {"start": 4, "end": 9},
                            "tail": {"start": 21, "end": 26}, "relation": "Cause-Effect(e1,e2)"},
}
TEXT_COLUMN = {"translation": "source", "summarization": "source", "dialogue": "history", "classification": "text",
               "ner": "tokens", "qa": "context", "relation_extraction": "text"}
TEXT_KEY = {"translation": "data.source_column", "summarization": "data.source_column", "dialogue": "data.source_column",
            "classification": "data.text_column", "ner": "data.tokens_column", "qa": "data.context_column",
            "relation_extraction": "data.text_column"}
ALL = list(SINGLE_TASKS)  # a multi-task run reads its data through these tasks


def variants(task, n=6):
    """``n`` valid records of a task that differ a little (so a tokenizer can be trained)."""
    out = []
    for i in range(n):
        record = json.loads(json.dumps(VALID[task]))
        if task == "ner":
            record["tokens"][1] = ["visited", "saw", "met", "left", "liked", "called"][i % 6]
        elif task == "dialogue":
            record["history"][0] = f"hello there number {i}"
        elif task in ("qa", "relation_extraction"):
            record["question" if task == "qa" else "relation"] = (
                f"Where does Anna live {i} ?" if task == "qa" else ["Cause-Effect(e1,e2)", "Other"][i % 2])
        else:
            column = TEXT_COLUMN[task]
            record[column] = f"{record[column]} {i}"
        out.append(record)
    return out


def datamodule(task, tmp_path, **kwargs):
    _, data_class = TASKS[task].classes()
    return data_class(**kwargs)


def write_lines(path, lines, encoding="utf-8"):
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding) if isinstance(lines[0], str) else b"".join(lines))
    return str(path)


def jsonl(path, records):
    return write_lines(path, [json.dumps(r, ensure_ascii=False) for r in records])


def read_train(task, tmp_path, **kwargs):
    """Read (and check) the training split, as ``fit`` does first."""
    data = datamodule(task, tmp_path, **kwargs)
    return data.examples("train")


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("task", ALL)
def test_missing_file(task, tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=f"data.train_file: {missing} does not exist"):
        read_train(task, tmp_path, train_file=str(missing))


@pytest.mark.parametrize("task", ALL)
def test_directory_instead_of_file(task, tmp_path):
    folder = tmp_path / "train.jsonl"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"data.train_file: {folder} is a directory; give the path of a data file"):
        read_train(task, tmp_path, train_file=str(folder))


@pytest.mark.parametrize("task", ALL)
def test_unreadable_file(task, tmp_path, monkeypatch):
    path = jsonl(tmp_path / "train.jsonl", variants(task))
    if os.geteuid() != 0:  # root reads everything: simulate the permission error there
        os.chmod(path, 0)
    else:
        real_open = builtins.open

        def refuse(file, *args, **kwargs):
            if str(file) == path:
                raise PermissionError(13, "Permission denied", path)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(records_module, "open", refuse, raising=False)
    with pytest.raises(ValueError, match=f"data.train_file: {path} cannot be read \\(Permission denied\\); check its permissions"):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ALL)
def test_unknown_extension(task, tmp_path):
    path = jsonl(tmp_path / "train.xml", variants(task))
    with pytest.raises(ValueError, match=r"data.train_file: .*train.xml has an unknown extension '.xml'; supported: .jsonl, .json, .csv"):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ALL)
def test_malformed_json_line_names_the_line(task, tmp_path):
    lines = [json.dumps(r) for r in variants(task)]
    lines[2] = lines[2][:-1]  # the closing brace is lost
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(ValueError, match=r"data.train_file: .*train.jsonl, line 3, column \d+: malformed JSON .*one JSON object per line"):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ALL)
def test_json_line_that_is_not_an_object(task, tmp_path):
    lines = [json.dumps(r) for r in variants(task)] + ['["a", "list"]']
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(ValueError, match=r"train.jsonl, line 7: expected a JSON object .*got list"):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ["translation", "summarization", "classification"])
def test_csv_with_a_wrong_column_count_names_the_line(task, tmp_path):
    header = list(VALID[task])
    rows = [",".join(header)] + [",".join(f'"{r[c]}"' for c in header) for r in variants(task)]
    rows[4] = rows[4] + ",extra"
    path = write_lines(tmp_path / "train.csv", rows)
    with pytest.raises(ValueError, match=f"train.csv, line 5: 3 fields, but the header has 2 \\({', '.join(header)}\\). Quote fields"):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ALL)
def test_empty_file(task, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"data.train_file: {path} is empty; it needs at least one record"):
        read_train(task, tmp_path, train_file=str(path))
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match="has no records \\(only blank lines\\)"):
        read_train(task, tmp_path, train_file=str(path))


@pytest.mark.parametrize("task", ALL)
def test_file_with_only_a_header(task, tmp_path):
    path = write_lines(tmp_path / "train.csv", [",".join(VALID[task])])
    with pytest.raises(ValueError, match="train.csv has a header but no records; it needs at least one record"):
        read_train(task, tmp_path, train_file=path)


# ----------------------------------------------------------------------------- columns and fields
@pytest.mark.parametrize("task", ALL)
def test_missing_column_lists_the_columns_and_the_key(task, tmp_path):
    column = TEXT_COLUMN[task]
    records = [{("renamed" if k == column else k): v for k, v in r.items()} for r in variants(task)]
    path = jsonl(tmp_path / "train.jsonl", records)
    if task == "ner":  # NER accepts two layouts and names both
        match = r"found neither column 'tokens' \(data.tokens_column\) nor 'text' \(data.text_column\); the data has columns \['renamed', 'tags'\]"
    else:
        others = ", ".join(repr(c) if c != column else "'renamed'" for c in VALID[task])
        match = f"column '{column}' not found; the data has columns \\[{others}\\]. Set {TEXT_KEY[task]} to the column"
    with pytest.raises(ValueError, match=match):
        read_train(task, tmp_path, train_file=path)


@pytest.mark.parametrize("task", ALL)
def test_a_record_without_a_field(task, tmp_path):
    records = variants(task)
    del records[3][TEXT_COLUMN[task]]
    path = jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(ValueError, match=f"line 4, field '{TEXT_COLUMN[task]}' \\({TEXT_KEY[task]}\\): the record has no '{TEXT_COLUMN[task]}' field"):
        read_train(task, tmp_path, train_file=path)


#: task -> (field, bad value, what the message must say): a value of the wrong type or shape
WRONG_VALUES = [
    ("translation", "target", 42, r"field 'target' \(data.target_column\): expected the target as text, got int"),
    ("summarization", "source", ["a", "b"], r"field 'source' \(data.source_column\): expected the source as text, got list"),
    ("dialogue", "history", [1, 2], r"field 'history' \(data.source_column\): expected text or a list of texts"),
    ("classification", "text", ["a", "list"], r"field 'text' \(data.text_column\): expected text, got list"),
    ("classification", "label", {"a": 1}, r"field 'label' \(data.label_column\): expected a label \(a non-empty string or an integer\)"),
    ("ner", "tokens", "Anna visited Lisbon", r"field 'tokens' \(data.tokens_column\): expected a list of tokens, got str"),
    ("ner", "tags", ["B-PER", "O"], r"field 'tags' \(data.tags_column\): 2 tags for 3 tokens; give exactly one tag per token"),
    ("qa", "answers", {"text": ["Lisbon"], "answer_start": [3]}, r"field 'answers' \(data.answers_column\): answer 0: the context has 'a Bran' at answer_start=3, expected the answer text 'Lisbon'; the text occurs at offset\(s\) \[21\]"),
    ("qa", "question", 7, r"field 'question' \(data.question_column\): expected the question as text, got int"),
    ("relation_extraction", "tail", {"start": 21, "end": 99}, r"field 'tail' \(data.tail_column\): span \[21, 99\) is not a non-empty span inside the text of 28 characters"),
    ("relation_extraction", "head", "storm", r"field 'head' \(data.head_column\): expected an entity span, got str"),
]


@pytest.mark.parametrize("task, column, value, match", WRONG_VALUES)
def test_wrong_type_or_shape_names_line_field_and_key(task, column, value, match, tmp_path):
    records = variants(task)
    records[4][column] = value
    path = jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(ValueError, match=r"train data '.*train.jsonl', line 5, " + match):
        read_train(task, tmp_path, train_file=path)


def test_entity_span_outside_the_text(tmp_path):
    records = [{"text": "Anna visited Lisbon", "entities": [{"start": 0, "end": 4, "label": "PER"}]},
               {"text": "Bob left", "entities": [{"start": 4, "end": 40, "label": "PER"}]}]
    path = jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(ValueError, match=r"line 2, field 'entities' \(data.entities_column\): entity 0 has start=4, end=40, outside the text of 8 characters"):
        read_train("ner", tmp_path, train_file=path)


# ----------------------------------------------------------------------------- text content
@pytest.mark.parametrize("task", ALL)
@pytest.mark.parametrize("blank", ["", "   \t "])
def test_empty_or_whitespace_text_is_skipped_and_counted(task, blank, tmp_path, caplog):
    records = variants(task)
    column = TEXT_COLUMN[task]
    records[1][column] = [] if task == "ner" else ([blank, " "] if task == "dialogue" else blank)
    path = jsonl(tmp_path / "train.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        examples, numbers = read_train(task, tmp_path, train_file=path)
    assert len(examples) == 5 and 2 not in numbers
    assert "skipped 1 of 6 records: " in caplog.text


@pytest.mark.parametrize("task", ["translation", "summarization", "dialogue"])
def test_empty_target_is_skipped_and_counted(task, tmp_path, caplog):
    records = variants(task)
    target = "response" if task == "dialogue" else "target"
    records[0][target] = " "
    path = jsonl(tmp_path / "train.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        examples, numbers = read_train(task, tmp_path, train_file=path)
    assert numbers == [2, 3, 4, 5, 6]
    assert "skipped 1 of 6 records: empty or whitespace-only target" in caplog.text


@pytest.mark.parametrize("task", ALL)
def test_invalid_utf8_names_line_and_byte(task, tmp_path):
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in variants(task)]
    lines[3] = lines[3].replace(b"a", "\u00e4".encode("latin-1"), 1)  # a latin-1 byte in a UTF-8 file
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    byte = lines[3].index(b"\xe4") + 1
    with pytest.raises(ValueError, match=f"train.jsonl, line 4: byte {byte} of the line .* is not valid UTF-8 .*iconv -f latin1 -t utf-8"):
        read_train(task, tmp_path, train_file=str(path))


@pytest.mark.parametrize("task", ALL)
def test_control_characters_are_replaced_and_reported(task, tmp_path, caplog):
    records = variants(task)
    column = TEXT_COLUMN[task]
    if task == "ner":
        records[2]["tokens"][1] = "vis\u0007ited"  # inside a token: replaced, then rejected as whitespace
    elif task == "dialogue":
        records[2]["history"][1] = "hi\u0000 , how\u001b can i help ?"
    else:
        records[2][column] = records[2][column].replace(" ", "\u0007", 1)
    path = jsonl(tmp_path / "train.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        if task == "ner":
            with pytest.raises(ValueError, match=r"line 3, field 'tokens'.*token 1 is 'vis ited'"):
                read_train(task, tmp_path, train_file=path)
        else:
            examples, _ = read_train(task, tmp_path, train_file=path)
            assert not any(c in json.dumps(e, ensure_ascii=False) for e in examples for c in "\u0000\u0007\u001b")
    assert f"1 of 6 records had control characters (first: U+00{'07' if task != 'dialogue' else '00'} in field '{column}' on line 3)" in caplog.text


@pytest.mark.parametrize("task", ALL)
def test_a_single_one_megabyte_line_is_read_and_cut_to_fit(task, tmp_path, caplog):
    records = variants(task)
    record = records[0]
    words = [f"word{i % 1000}" for i in range(130_000)]
    text = " ".join(words)
    if task == "ner":
        record["tokens"], record["tags"] = words + record["tokens"], ["O"] * len(words) + record["tags"]
    elif task == "dialogue":
        record["history"][0] = text
    elif task == "qa":
        record["context"] = record["context"] + " " + text
    elif task == "relation_extraction":
        record["text"] = record["text"] + " " + text
    else:
        record[TEXT_COLUMN[task]] = text
    path = jsonl(tmp_path / "train.jsonl", records)
    assert os.path.getsize(path) > 1_000_000
    data = datamodule(task, tmp_path, train_file=path, tokenizer_vocab_size=300, max_source_tokens=64,
                      **({"doc_stride": 16, "max_question_tokens": 16} if task == "qa" else {}))
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        encoded = data.encode_split("train")
    assert max(len(ids) for ids in encoded.src_ids) <= 64
    assert any(word in caplog.text for word in ("truncated", "windows", "cut", "lost their oldest turns"))


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("task, column, value", [
    ("classification", "label", "neutral"), ("ner", "tags", ["B-PER", "O", "B-ORG"]),
    ("relation_extraction", "relation", "Member-Collection(e2,e1)"),
])
def test_a_validation_label_unseen_in_training(task, column, value, tmp_path):
    train = jsonl(tmp_path / "train.jsonl", variants(task))
    validation = variants(task, 3)
    validation[2][column] = value
    valid_path = jsonl(tmp_path / "validation.jsonl", validation)
    data = datamodule(task, tmp_path, train_file=train, validation_file=valid_path)
    with pytest.raises(ValueError, match=r"validation data '.*validation.jsonl', line 3: label '[^']+' is not in the label set .*list every label in data.labels"):
        data.examples("validation")


@pytest.mark.parametrize("task", ["classification", "ner", "relation_extraction"])
def test_an_empty_label_set(task, tmp_path):
    with pytest.raises(ValueError, match=r"data.labels must list distinct labels, got \[\]"):
        datamodule(task, tmp_path, labels=[])
    if task == "classification":  # multi-label data in which no text has a label
        records = [{"text": f"text {i}", "label": []} for i in range(4)]
        path = jsonl(tmp_path / "train.jsonl", records)
        data = datamodule(task, tmp_path, train_file=path, multi_label=True)
        with pytest.raises(ValueError, match=r"train data '.*train.jsonl': no labels found; set data.labels or fix the label column"):
            data.label_names


# ----------------------------------------------------------------------------- through the console
CONSOLE = "import sys; from s2s_tasks.cli import main; sys.argv = ['s2s-tasks', *sys.argv[1:]]; sys.exit(main())"


def test_console_reports_a_bad_predict_file_in_one_paragraph_and_keeps_the_old_output(tmp_path):
    """A data error ends the run with exit status 2 and one paragraph, and a predictions file
    written before is left as it was."""
    output = tmp_path / "predictions.jsonl"
    output.write_text('{"prediction": "from an earlier run"}\n', encoding="utf-8")
    before = output.read_bytes()
    bad = tmp_path / "inputs.txt"
    bad.write_bytes(b"ein Haus\nein \xe4 Baum\n")
    args = ["predict", "--task", "translation", "--data.predict_file", str(bad), "--predictions.output_file", str(output),
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]
    result = subprocess.run([sys.executable, "-c", CONSOLE, *args], capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("s2s-tasks: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"data.predict_file: {bad}, line 2: byte 5 of the line" in errors[0] and "UTF-8" in errors[0]
    assert output.read_bytes() == before


@pytest.mark.parametrize("task, file_text, message", [
    ("classification", '{"sentence": "fine", "label": "pos"}\n',
     "column 'text' not found; the data has columns ['sentence', 'label']. Set data.text_column"),
    ("ner", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["b"], "tags": \n',
     "train.jsonl, line 2, column 27: malformed JSON (Expecting value)"),
])
def test_console_reports_bad_training_data_in_one_paragraph(task, file_text, message, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(file_text, encoding="utf-8")
    args = ["fit", "--task", task, "--data.train_file", str(train), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]
    result = subprocess.run([sys.executable, "-c", CONSOLE, *args], capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("s2s-tasks: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert message in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))
