"""benchmarks/baselines.py on tiny made-up files: the lead baseline's k comes from the training
targets, the dialogue lookup finds replies in the training file, and both are scored with the
project's metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BASELINES = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"


def _write(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_baselines_score_the_lead_and_the_training_file_lookup(tmp_path):
    # training subjects of 2 words -> the lead baseline takes each email's first 2 words
    _write(tmp_path / "summarization" / "train.jsonl",
           [{"source": "budget meeting moved to friday", "target": "meeting moved"},
            {"source": "new desk arrives", "target": "new desk"}])
    _write(tmp_path / "summarization" / "validation.jsonl",
           [{"source": "lunch order for today", "target": "x", "references": ["lunch order", "food"]},
            {"source": "quarterly report attached here", "target": "x", "references": ["report", "the report"]}])
    _write(tmp_path / "dialogue" / "train.jsonl",
           [{"source": "hi </s> how are you ?", "target": "fine , thanks ."},
            {"source": "where is the bank ?", "target": "next to the station ."},
            {"source": "thanks", "target": "you are welcome ."},
            {"source": "thank you", "target": "you are welcome ."}])
    _write(tmp_path / "dialogue" / "validation.jsonl",
           [{"source": "hi </s> how are you ?", "target": "fine , thanks ."},          # whole context seen in training
            {"source": "hello </s> where is the bank ?", "target": "next to the station ."}])  # last turn seen
    out = tmp_path / "baselines.json"
    proc = subprocess.run([sys.executable, str(BASELINES), "--data-dir", str(tmp_path), "--lead-k", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())

    summarization = result["summarization"]
    assert summarization["train_target_mean_words"] == 2.0
    lead1, lead2 = summarization["rows"]
    assert "k from the training targets" in lead2["baseline"] and "k from" not in lead1["baseline"]
    # lead 2 = "lunch order" (exactly the first reference) and "quarterly report" (F1 2/3 against "report")
    assert lead2["rouge1"] == round(100 * (1.0 + 2 / 3) / 2, 2)
    assert lead2["rouge2"] == 50.0

    dialogue = result["dialogue"]
    assert dialogue["contexts_in_training_file"] == 1 and dialogue["last_turns_in_training_file"] == 2
    constant, echo, lookup = dialogue["rows"]
    assert "you are welcome ." in constant["baseline"]
    assert lookup["bleu2"] == 100.0  # both replies found in the training file, word for word
    assert echo["bleu2"] < lookup["bleu2"] and constant["bleu2"] < lookup["bleu2"]
    # nltk's smoothing method 7 lets a word-for-word reply score above 100 (s2s_tasks.metrics)
    assert lookup["sentence_bleu2"] == round(100 * (4 / 3 * 10 / 9) ** 0.5, 2)
    assert echo["sentence_bleu2"] < lookup["sentence_bleu2"]


def test_baselines_say_what_the_data_dir_lacks(tmp_path):
    proc = subprocess.run([sys.executable, str(BASELINES), "--data-dir", str(tmp_path), "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "has neither summarization/ nor dialogue/" in proc.stderr


def test_baselines_name_the_file_line_and_field_of_a_bad_record(tmp_path):
    _write(tmp_path / "summarization" / "train.jsonl", [{"source": "a b", "target": "a"}])
    _write(tmp_path / "summarization" / "validation.jsonl", [{"source": "a b", "references": ["a"]}, {"source": "c d"}])
    proc = subprocess.run([sys.executable, str(BASELINES), "--data-dir", str(tmp_path), "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{tmp_path / 'summarization' / 'validation.jsonl'}:2: the record has no 'references' field" in proc.stderr
