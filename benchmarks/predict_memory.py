"""Peak memory of ``s2s-tasks predict`` as the input file grows: it should stay flat.

Trains a tiny translation model for a few steps on the embedded sample data (the weights do not
matter here), writes prediction inputs of ``--sizes`` lines (default 20,000 and 200,000), and
runs ``s2s-tasks predict`` on each in a fresh process, reading that process's peak resident
memory (``ru_maxrss``). For reference it also measures a process that only reads and tokenizes
the largest file into memory at once (what predict did before it streamed). Prints a table and
writes ``benchmarks/results/predict_memory.json``.

    python benchmarks/predict_memory.py [--sizes 20000 200000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_json

HERE = Path(__file__).resolve().parent
TINY = ["--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
        "--model.num_decoder_layers", "1", "--model.generation.max_length", "8", "--model.log_examples", "0"]
WORDS = "ein kleines Haus steht am Fluss und der alte Mann sieht einen roten Hund im Garten".split()


def child(args: list, report: str) -> None:
    """Run ``s2s-tasks`` (or the in-memory reference) in this process and record its peak RSS."""
    start = time.perf_counter()
    if args[0] == "--in-memory":
        from s2s_tasks.tasks.translation.data import TranslationDataModule

        data = TranslationDataModule(predict_file=args[1], tokenizer_file=args[2])
        count = len(data.encode_split("predict"))
    else:
        from s2s_tasks.cli import main

        sys.argv = sys.argv[:1]  # main() is given the arguments
        main(args)
        count = None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(report).write_text(json.dumps({"peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - start, "count": count}))


def run_child(args: list) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = handle.name
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    subprocess.run([sys.executable, str(Path(__file__)), "--child", report, "--", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    result = json.loads(Path(report).read_text())
    os.unlink(report)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--out", default=str(HERE / "results" / "predict_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(rest[1:] if rest and rest[0] == "--" else rest, args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="predict_memory_"))
    common = ["--task", "translation", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(work)]
    run_child(["fit", *common, *TINY, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0.5",
               "--trainer.enable_checkpointing", "true"])
    ckpt = next(work.rglob("*.ckpt"))
    rows = []
    for size in args.sizes:
        inputs = work / f"inputs_{size}.txt"
        with open(inputs, "w", encoding="utf-8") as handle:
            for i in range(size):
                handle.write(" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4 + i % 9)) + f" {i}\n")
        output = work / f"predictions_{size}.jsonl"
        result = run_child(["predict", *common, "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs),
                            "--predictions.output_file", str(output), "--data.eval_max_tokens", "8192",
                            "--model.generation.strategy", "greedy"])  # memory is measured here, not decoding
        written = sum(1 for _ in open(output, encoding="utf-8"))
        assert written == size, f"{written} predictions for {size} inputs"
        rows.append({"mode": "predict (streamed)", "lines": size, "file_mib": inputs.stat().st_size / 2**20, **result,
                     "lines_per_s": size / result["seconds"]})
    largest = max(args.sizes)
    reference = run_child(["--in-memory", str(work / f"inputs_{largest}.txt"), str(ckpt)])
    rows.append({"mode": "read + tokenize all at once (reference)", "lines": largest,
                 "file_mib": (work / f"inputs_{largest}.txt").stat().st_size / 2**20, **reference, "lines_per_s": None})

    print(f"\n{'mode':42} {'lines':>9} {'file MiB':>9} {'peak MiB':>9} {'seconds':>8}")
    for row in rows:
        print(f"{row['mode']:42} {row['lines']:>9} {row['file_mib']:>9.1f} {row['peak_mib']:>9.0f} {row['seconds']:>8.1f}")
    streamed = [r for r in rows if r["mode"].startswith("predict")]
    growth = streamed[-1]["peak_mib"] / streamed[0]["peak_mib"]
    print(f"\npeak memory, {streamed[-1]['lines']:,} vs {streamed[0]['lines']:,} lines: x{growth:.2f} "
          f"(the file is x{streamed[-1]['lines'] / streamed[0]['lines']:.0f})")
    write_json(args.out, {"rows": rows, "peak_growth": growth, "torch_threads": os.environ.get("OMP_NUM_THREADS", "2")})


if __name__ == "__main__":
    main()
