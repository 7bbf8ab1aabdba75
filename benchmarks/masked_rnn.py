"""Recurrent layers over padded batches: packed sequences against :func:`s2s_tasks.nn.masked_rnn.run_masked`.

    python benchmarks/masked_rnn.py --threads 2 --json benchmarks/results/masked_rnn.json
    python benchmarks/masked_rnn.py --device cuda --json benchmarks/results/masked_rnn_cuda.json

Times forward + backward of one bidirectional layer over right-padded rows (lengths drawn
uniformly from a third of ``--length`` to ``--length``, one full row), LSTM and GRU, float32 and
bf16 autocast, the two paths interleaved ``--repeats`` times (on CUDA, each timing ends with a
synchronize, and the packed path is cuDNN's). The default shape is a QA
``--preset real`` batch (35 windows of 231 tokens, 256 features, 2x128 units). Prints the median
milliseconds and the ratio packed / ours, checks the two give the same outputs, and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_json
from torch import nn

from s2s_tasks.nn.masked_rnn import run_masked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=35)
    parser.add_argument("--length", type=int, default=231)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256, help="both directions together")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default="benchmarks/results/masked_rnn.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    lengths = torch.randint(args.length // 3, args.length + 1, (args.batch,))
    lengths[0] = args.length
    mask = (torch.arange(args.length)[None] < lengths[:, None]).to(device)
    padding = 1.0 - mask.float().mean().item()
    results = {}
    print(f"padding share {padding:.1%}")
    print(f"{'layer':<16}{'packed ms':>12}{'ours ms':>12}{'packed / ours':>15}{'max |diff|':>12}")
    for cell in (nn.LSTM, nn.GRU):
        rnn = cell(args.features, args.hidden // 2, batch_first=True, bidirectional=True).to(device)
        for precision in ("float32", "bf16 autocast"):
            inputs = torch.randn(args.batch, args.length, args.features, device=device, requires_grad=True)
            times = {True: [], False: []}
            for _ in range(args.repeats + 1):  # the first round warms up
                for packed in times:
                    sync()
                    start = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "float32"):
                        outputs = run_masked(rnn, inputs, mask, packed=packed)[0]
                    outputs.float().pow(2).sum().backward()
                    sync()
                    times[packed].append(time.perf_counter() - start)
            with torch.no_grad():
                diff = (run_masked(rnn, inputs, mask, packed=True)[0] - run_masked(rnn, inputs, mask, packed=False)[0]).abs().max().item()
            med = {("packed" if k else "ours"): 1000 * statistics.median(v[1:]) for k, v in times.items()}
            key = f"{cell.__name__} {precision}"
            results[key] = {"median_ms": med, "ratio": med["packed"] / med["ours"], "max_abs_diff_float32": diff}
            print(f"{key:<16}{med['packed']:>12.1f}{med['ours']:>12.1f}{results[key]['ratio']:>14.2f}x{diff:>12.1e}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    write_json(args.json, {"args": vars(args), "torch": torch.__version__, "device": device_name,
                           "padding_share": padding, "results": results})


if __name__ == "__main__":
    main()
