"""Decoding with and without each of its CPU speed-ups, side by side in one process.

    python benchmarks/decode_paths.py --threads 2 --json benchmarks/results/decode_paths.json

Other flags are ``benchmarks/speed.py``'s shape flags (``--d_model``, ``--vocab``, ...).

The speed-ups measured (each switched off by restoring the plain code it replaced):

* ``packed``: every linear layer (encoder, decoder and the vocabulary projection) through
  oneDNN (:mod:`s2s_tasks.nn.onednn_linear`), with weights packed once per search
  (:mod:`s2s_tasks.nn.packed_linear`), instead of ``F.linear`` (MKL);
* ``reorder``: beam search reordering only the filled positions of the self-attention cache,
  into spare buffers or in place (:func:`s2s_tasks.nn.types.reorder_kv_buffers`), instead of
  ``index_select`` on whole buffers into new ones;
* ``select``: beam search choosing each step's candidates through chunk maxima
  (``s2s_tasks.generation._best_candidates``) instead of ``topk`` over every beam's whole
  vocabulary (greedy search does not use it).

Variants: ``plain`` (all three off), each alone, ``all``, and all but each one (``no_packed``
...), so each speed-up is seen both from the plain code and from the fastest.

The model and shapes are those of ``benchmarks/speed.py`` part 1 (d_model 256, 3+3 layers, 4
heads, FFN 1024, vocabulary 8,000, 32 inputs of 64 tokens, 64 new tokens forced), for our
Transformer and our LSTM + Bahdanau model. Every variant runs once per round, the rounds
``--repeats`` times after a warm-up; reported: median seconds, each variant's speed-up over
``plain``, and ``all``'s over each ``no_*`` variant. Prints a table and writes JSON. Outputs are
checked to be the same tokens in every variant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch
from common import write_json

sys.path.insert(0, str(Path(__file__).parent))
import speed  # noqa: E402  (the shapes and adapters of the main speed benchmark)

from s2s_tasks import generation  # noqa: E402
from s2s_tasks.generation import GenerationConfig, generate  # noqa: E402
from s2s_tasks.nn import onednn_linear, packed_linear  # noqa: E402
from s2s_tasks.nn import types as cache_types  # noqa: E402


def _whole_buffer_reorder(cache: Dict[str, Any], rows: torch.Tensor, moves: Any = None) -> Dict[str, Any]:
    """The reorder before ``reorder_kv_buffers``: every buffer, whole, into a new one."""
    return {key: value.index_select(0, rows) if isinstance(value, torch.Tensor) else value
            for key, value in cache.items() if key != "spare"}


_REORDER = cache_types.reorder_kv_buffers


_CHUNK = generation.CANDIDATE_CHUNK
SPEEDUPS = ("packed", "reorder", "select")


def switch(packed: bool, reorder: bool, select: bool) -> None:
    packed_linear._AVAILABLE = packed and packed_linear._ops_available()
    onednn_linear.ENABLED = packed and packed_linear._ops_available()
    cache_types.reorder_kv_buffers = _REORDER if reorder else _whole_buffer_reorder
    generation.CANDIDATE_CHUNK = _CHUNK if select else 10**9  # no whole chunk: plain topk


VARIANTS = {
    "plain": (False, False, False),
    **{name: tuple(other == name for other in SPEEDUPS) for name in SPEEDUPS},
    "all": (True, True, True),
    **{f"no_{name}": tuple(other != name for other in SPEEDUPS) for name in SPEEDUPS},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/results/decode_paths.json")
    args, shape_flags = parser.parse_known_args()  # the rest: benchmarks/speed.py's shape flags
    torch.set_num_threads(args.threads)
    shapes = speed.parse_args(["--threads", str(args.threads), *shape_flags])
    batch = speed.synthetic_batch(shapes, torch.device("cpu"))
    results: Dict[str, Any] = {}
    print(f"{'model':<12}{'search':<8}" + "".join(f"{name:>11}" for name in VARIANTS) + f"{'all/plain':>11}"
          + "".join(f"{'all/no_' + name[:3]:>12}" for name in SPEEDUPS) + "   (median seconds; speed-ups)")
    for architecture in ("transformer", "rnn"):
        model = speed.OursAdapter(shapes, torch.device("cpu"), architecture=architecture).model.eval()
        for search, beam in (("greedy", 1), ("beam4", 4)):
            config = GenerationConfig(strategy="beam" if beam > 1 else "greedy", beam_size=beam,
                                      max_length=shapes.tgt_len - 1, min_length=shapes.tgt_len - 1, length_penalty=1.0)
            times: Dict[str, list] = {name: [] for name in VARIANTS}
            outputs: Dict[str, Any] = {}
            for round_ in range(args.repeats + 1):  # round 0 warms up
                for name, flags in VARIANTS.items():
                    switch(*flags)
                    start = time.perf_counter()
                    with torch.no_grad():
                        out = generate(model.decoder, model.encode(batch["src"], batch["mask"]), bos_id=speed.BOS,
                                       eos_id=speed.EOS, config=config)
                    if round_:
                        times[name].append(time.perf_counter() - start)
                    outputs[name] = out.tokens
            switch(True, True, True)
            same = all(outputs[name] == outputs["plain"] for name in VARIANTS)
            medians = {name: statistics.median(t) for name, t in times.items()}
            row = {"median_seconds": medians, "speedup_over_plain": {n: medians["plain"] / m for n, m in medians.items()},
                   "all_over_all_but": {n: medians[f"no_{n}"] / medians["all"] for n in SPEEDUPS},
                   "same_tokens": same}
            results[f"{architecture}/{search}"] = row
            print(f"{architecture:<12}{search:<8}" + "".join(f"{medians[n]:>11.3f}" for n in VARIANTS)
                  + f"{medians['plain'] / medians['all']:>10.2f}x"
                  + "".join(f"{row['all_over_all_but'][n]:>11.2f}x" for n in SPEEDUPS)
                  + ("" if same else "  (tokens differ!)"))
    write_json(args.json, {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
                           "shapes": vars(shapes), "results": results})


if __name__ == "__main__":
    main()
