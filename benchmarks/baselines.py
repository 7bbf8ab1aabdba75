"""Trivial baselines of the real summarization and dialogue data, scored with the project's own
validation metrics, to show what a metric's scale means before a model is trained.

    python benchmarks/baselines.py --data-dir ../shared/data --json benchmarks/results/baselines.json

Summarization (AESLC; ``s2s_tasks.metrics.rouge_scores``: rouge-score F1, stemmed, the best of the
validation record's ``references``): the first k words of each source (the lead baseline), with k
the mean word count of the training targets, rounded; ``--lead-k`` adds more rows.

Dialogue (DailyDialog; ``s2s_tasks.metrics.bleu_n_scores``, ``sentence_bleu_n_means`` and
``distinct_n``: sacreBLEU corpus BLEU-1/2, the mean smoothed sentence-level BLEU-1/2 most
dialogue papers report, Distinct-2 in percent): the training file's most frequent reply for every context; the
context's last turn echoed; and a lookup in the training file (the reply to the same context if
it occurs there verbatim, else the reply to the same last turn, else the most frequent reply).
Also counts the validation contexts that occur verbatim in the training file.

Only the training file chooses anything (k, the replies); the validation file is only scored.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

from common import write_json

from s2s_tasks.metrics import bleu_n_scores, distinct_n, rouge_scores, sentence_bleu_n_means


def read_jsonl(path: Path, fields: Sequence[str]) -> List[Dict]:
    """The records of a jsonl file; each must have ``fields`` (else an error naming file, line and field)."""
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [name for name in fields if name not in record]
            if missing:
                raise SystemExit(f"{path}:{number}: the record has no {missing[0]!r} field (this script reads the "
                                 f"layout of ../shared/data: {', '.join(map(repr, fields))})")
            records.append(record)
    return records


def summarization(folder: Path, extra_k: List[int]) -> Dict:
    train = read_jsonl(folder / "train.jsonl", ("source", "target"))
    validation = read_jsonl(folder / "validation.jsonl", ("source", "references"))
    mean_words = statistics.mean(len(r["target"].split()) for r in train)
    k_train = max(1, round(mean_words))
    references = [r["references"] for r in validation]
    rows = []
    for k in sorted({k_train, *extra_k}):
        scores = rouge_scores([" ".join(r["source"].split()[:k]) for r in validation], references)
        label = f"lead {k} words" + (" (k from the training targets)" if k == k_train else "")
        rows.append({"baseline": label, **{m: round(scores[m], 2) for m in ("rouge1", "rouge2", "rougeL")}})
    return {"validation_records": len(validation), "train_target_mean_words": round(mean_words, 3), "rows": rows}


def last_turn(context: str, separator: str) -> str:
    return context.split(separator)[-1].strip()


def dialogue(folder: Path, separator: str) -> Dict:
    train = read_jsonl(folder / "train.jsonl", ("source", "target"))
    validation = read_jsonl(folder / "validation.jsonl", ("source", "target"))
    most_frequent = Counter(r["target"] for r in train).most_common(1)[0][0]
    by_context: Dict[str, str] = {}
    by_last_turn: Dict[str, str] = {}
    for r in train:
        by_context.setdefault(r["source"], r["target"])
        by_last_turn.setdefault(last_turn(r["source"], separator), r["target"])
    contexts = [r["source"] for r in validation]
    references = [r["target"] for r in validation]
    systems = {
        f"the most frequent training reply ({most_frequent!r})": [most_frequent] * len(contexts),
        "the last turn echoed": [last_turn(c, separator) for c in contexts],
        "lookup: the training reply to the same context, else to the same last turn": [
            by_context.get(c) or by_last_turn.get(last_turn(c, separator)) or most_frequent for c in contexts
        ],
    }
    rows = []
    # sacreBLEU warns that the references look tokenized: DailyDialog's are, as the task's validation sees them
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    for name, hypotheses in systems.items():
        bleu, _ = bleu_n_scores(hypotheses, references)
        sentence_bleu = sentence_bleu_n_means(hypotheses, references)
        rows.append({"baseline": name, "bleu1": round(bleu["bleu1"], 2), "bleu2": round(bleu["bleu2"], 2),
                     "sentence_bleu1": round(sentence_bleu["sentence_bleu1"], 2),
                     "sentence_bleu2": round(sentence_bleu["sentence_bleu2"], 2),
                     "distinct2": round(distinct_n(hypotheses, 2), 2)})
    return {
        "validation_records": len(validation),
        "contexts_in_training_file": sum(c in by_context for c in contexts),
        "last_turns_in_training_file": sum(last_turn(c, separator) in by_last_turn for c in contexts),
        "rows": rows,
    }


def print_table(title: str, rows: List[Dict]) -> None:
    keys = [k for k in rows[0] if k != "baseline"]
    print(f"\n{title}\n| baseline | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}")
    for row in rows:
        print(f"| {row['baseline']} | {' | '.join(f'{row[k]:.2f}' for k in keys)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="holds summarization/ and dialogue/, as ../shared/data")
    parser.add_argument("--lead-k", type=int, action="append", default=[], help="more lead lengths to score")
    parser.add_argument("--turn-separator", default=" </s> ", help="between the turns of a dialogue context")
    parser.add_argument("--json", default="benchmarks/results/baselines.json")
    args = parser.parse_args()
    result = {}
    if (args.data_dir / "summarization").is_dir():
        result["summarization"] = summarization(args.data_dir / "summarization", args.lead_k)
        print_table(f"AESLC validation ({result['summarization']['validation_records']} records), ROUGE F1",
                    result["summarization"]["rows"])
    if (args.data_dir / "dialogue").is_dir():
        result["dialogue"] = d = dialogue(args.data_dir / "dialogue", args.turn_separator)
        print_table(f"DailyDialog validation ({d['validation_records']} records; {d['contexts_in_training_file']} of "
                    f"the contexts occur verbatim in the training file)", d["rows"])
    if not result:
        parser.error(f"--data-dir {args.data_dir} has neither summarization/ nor dialogue/")
    write_json(args.json, {"data_dir": str(args.data_dir), **result})


if __name__ == "__main__":
    main()
