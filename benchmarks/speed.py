"""Speed: our Transformer against a Hugging Face BART of the same size, side by side in one process.

    pip install -e ".[bench]"            # transformers, for the side-by-side part
    python benchmarks/speed.py --threads 2 --json benchmarks/results/speed.json

Part 1 (synthetic, every shape a flag): a randomly initialised encoder-decoder of d_model 256,
3+3 layers, 4 heads, FFN 1024, vocabulary 8000, batch 32, source and target 64 tokens, built
twice: ours (:func:`s2s_tasks.nn.seq2seq.build_seq2seq`) and ``transformers``'
``BartForConditionalGeneration`` with the same sizes, activation, dropout and tied embeddings.
Measured interleaved (ours, HF, ours, HF ...), each ``--repeats`` times after a warm-up, with
the thread count fixed:

* ``train_fp32`` / ``train_bf16``: one training step (forward, label-smoothed cross-entropy,
  backward, AdamW), in float32 and under ``torch.autocast(bfloat16)``; each side computes the
  loss and steps the optimizer its own way: ours as our training step does (the output
  projection fused with the loss, :mod:`s2s_tasks.nn.linear_cross_entropy`; torch's fused AdamW
  kernel, :func:`s2s_tasks.optim.adamw`), HF from its logits with ``F.cross_entropy`` (as its
  Trainer's label smoother does) and ``torch.optim.AdamW``'s default implementation (a plain
  loop). Our float32 linear layers run in oneDNN (:mod:`s2s_tasks.nn.onednn_linear`), HF's in
  ``F.linear`` (MKL). ``--ours_loss logits``, ``--ours_adamw default`` and ``--ours_linear mkl``
  measure these choices' shares;
* ``eval``: teacher-forced forward and loss without gradients (the same two loss paths);
* ``greedy`` / ``beam4``: generation forced to exactly ``--tgt_len`` new tokens (EOS banned
  before, and forced or cut after), ours through :func:`s2s_tasks.generation.generate`, HF
  through ``generate(min_new_tokens=max_new_tokens)``.

Reported per measurement: target tokens/s (min and median time of the repeats), the ratio
ours / HF of the median times, model-FLOPs utilisation against a GEMM peak measured in the same
run (FLOPs counted analytically, see :func:`forward_flops`) and the peak memory growth of one
call over the state kept between calls (model, optimizer state, batch). On CUDA that is the
allocator's peak; on the CPU each implementation and measurement runs once more in a fresh
process whose freed memory goes back to the system (:data:`_PROBE_ENV`), with the resident set
sampled every 2 ms (in the timing process, memory freed by one measurement is reused by the
next, which then shows no growth; so the timing process samples nothing beside its timed calls).

Part 2: our RNN (LSTM encoder, LSTM decoder with Bahdanau attention) at the same sizes,
training and beam throughput, for the record.

Part 3 (when ``--data`` holds Multi30k as ``train.jsonl``/``validation.jsonl``, by default
``../shared/data/translation``): joint BPE of ``--bpe_vocab`` on the lowercased tokenized
columns, then the share of padding per epoch with our token-budget buckets against fixed-size
random batches of the same mean size, the wall time of one training epoch of each at the joeynmt
model size, training throughput in target tokens/s on that data, and the time to decode the
first 1,000 validation sentences with beam 5 and with greedy search, with the weights of that
one epoch: once with every output held to its reference's length (a one-epoch model rarely
stops by itself yet; a trained one produces about those lengths) and once up to our translation
config's limit, ``1.5 * source + 10`` tokens (the worst case).

Prints a table per part and writes one JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cpu_description, write_json  # noqa: E402

from s2s_tasks.generation import GenerationConfig, beam_search, generate, greedy_search  # noqa: E402
from s2s_tasks.nn import onednn_linear, packed_linear  # noqa: E402
from s2s_tasks.nn.linear_cross_entropy import decoder_losses  # noqa: E402
from s2s_tasks.nn.seq2seq import build_seq2seq  # noqa: E402
from s2s_tasks.optim import adamw  # noqa: E402

PAD, BOS, EOS, FIRST_WORD = 0, 1, 2, 4
LABEL_SMOOTHING = 0.1


# ------------------------------------------------------------------------------------------ helpers


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each measurement")
    p.add_argument("--bf16_repeats", type=int, default=None,
                   help="repeats of train_bf16 (default --repeats; lower it on CPUs without native bf16, where "
                        "PyTorch's bf16 matrix products are slow)")
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--layers", type=int, default=3, help="encoder and decoder layers each")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src_len", type=int, default=64)
    p.add_argument("--tgt_len", type=int, default=64)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--ours_loss", choices=["fused", "logits"], default="fused",
                   help="how our training and eval steps compute the loss: 'fused' (what Seq2SeqModule does) or "
                        "'logits' (logits, then F.cross_entropy like HF), to measure the fused loss's share")
    p.add_argument("--ours_adamw", choices=["fused", "default"], default="fused",
                   help="our optimizer: 'fused' (what every task trains with, s2s_tasks.optim.adamw) or "
                        "'default' (torch.optim.AdamW's default implementation, like HF's side), to measure its share")
    p.add_argument("--ours_linear", choices=["onednn", "mkl"], default="onednn",
                   help="our float32 CPU linear layers: 'onednn' (what every task runs, s2s_tasks.nn.onednn_linear and "
                        "the packed weights of nn.packed_linear) or 'mkl' (F.linear, like HF's side), to measure their share")
    p.add_argument("--only", action="append", default=None,
                   choices=["train_fp32", "train_bf16", "eval", "greedy", "beam"], help="run only these measurements")
    p.add_argument("--parts", default="1,2,3", help="which parts to run (default 1,2,3)")
    p.add_argument("--no_hf", action="store_true", help="ours only (no transformers needed)")
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "translation"),
                   help="Multi30k directory for part 3 (skipped when missing; '' to skip)")
    p.add_argument("--bpe_vocab", type=int, default=8000)
    p.add_argument("--max_tokens", type=int, default=4096, help="token budget of a real-data batch")
    p.add_argument("--real_batches", type=int, default=0,
                   help="train on at most this many batches per epoch in part 3 (0: the whole epoch)")
    p.add_argument("--decode_sentences", type=int, default=1000)
    p.add_argument("--padding_only", action="store_true", help="part 3: the padding shares only (seconds, no training)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory_probe", choices=["ours", "hf", "rnn"], default=None,
                   help=argparse.SUPPRESS)  # internal: one measurement's peak memory, in a fresh process
    p.add_argument("--json", default="benchmarks/results/speed.json")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory growth (MiB) over a block: RSS sampled every 2 ms on the CPU, the allocator's
    peak on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = self._peak = self._rss() if os.path.exists("/proc/self/statm") else 0
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        if self._start:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._start:
                self._thread.join()
                self._peak = max(self._peak, self._rss())
            peak = self._peak
        self.peak_mib = max(0.0, (peak - self._start) / 2**20)


#: glibc: every allocation of 64 KiB or more mapped on its own and unmapped when freed, so that the
#: resident set follows the live tensors (by default freed memory stays with the process, and a
#: measurement after another one shows no growth at all)
_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def probe_peak_memory(impl: str, kind: str, argv: List[str]) -> Optional[float]:
    """Peak memory growth (MiB) of one ``kind`` call of ``impl`` over the state between calls
    (model, optimizer state, batch), measured in a fresh process (:data:`_PROBE_ENV`) after two
    warm-up calls; ``None`` if the probe fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory_probe", impl, "--only", kind, "--parts", "1"]
    proc = subprocess.run(cmd, env={**os.environ, **_PROBE_ENV}, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PEAK_MIB "):
            return float(line.split()[1])
    print(f"  memory probe {impl} {kind} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}", flush=True)
    return None


def _without_options(argv: List[str], names: Tuple[str, ...]) -> List[str]:
    """``argv`` without the options ``names`` and their values (``--x v`` or ``--x=v``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(name + "=") for name in names):
            out.append(arg)
    return out


def run_memory_probe(a: argparse.Namespace, device: torch.device) -> None:
    """The child side of :func:`probe_peak_memory`: prints ``PEAK_MIB <value>``."""
    adapter = {"ours": lambda: OursAdapter(a, device), "hf": lambda: HFAdapter(a, device),
               "rnn": lambda: OursAdapter(a, device, architecture="rnn")}[a.memory_probe]()
    call = measurements(adapter, synthetic_batch(a, device), a, device)[a.only[0]]
    call()
    call()
    with PeakMemory(device) as memory:
        call()
    print(f"PEAK_MIB {memory.peak_mib:.1f}", flush=True)


def gemm_peak(dtype: torch.dtype, device: torch.device, a: argparse.Namespace, repeats: int = 5) -> float:
    """Best GFLOP/s of matrix products in ``dtype``: a 1024-cubed one and the model's FFN shape
    (batch x target rows times ``d_model x ffn``), through torch's own product and, on the CPU,
    oneDNN's too. Kernels differ a lot by shape where a dtype has no hardware support (bf16 on
    AVX2 CPUs), and by library (MKL's float32 products on AMD CPUs reach less than half of
    oneDNN's: :mod:`s2s_tasks.nn.onednn_linear`), so one shape or one library would understate
    the peak and overstate the utilisation."""
    rows = a.batch * a.tgt_len
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (rows, a.d_model, a.ffn)):
        x = torch.randn(m, k, device=device).to(dtype)
        w = torch.randn(n, k, device=device).to(dtype)
        # both layouts: x @ w^T as nn.Linear computes it, and x @ w with w stored (k, n)
        products = [lambda: F.linear(x, w), lambda w_kn=w.t().contiguous(): x @ w_kn]
        if device.type == "cpu" and packed_linear._ops_available():
            products.append(lambda: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""))
        for product in products:
            product()
            fastest = math.inf
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                product()
                sync(device)
                fastest = min(fastest, time.perf_counter() - start)
            best = max(best, 2 * m * k * n / fastest / 1e9)
    return best


def forward_flops(a: argparse.Namespace, new_tokens_only: bool = False, rows: Optional[int] = None) -> float:
    """Model FLOPs (multiply-add = 2) of one forward pass of the Transformer.

    Per layer and token: attention projections ``4 d^2`` (decoder self) plus ``2 d^2`` (cross
    query/output) and ``2 d^2`` per source token (cross keys/values), FFN ``2 d f``, attention
    scores and weighted sum ``2 L d`` over the ``L`` keys (counted in full, as is usual for MFU);
    output projection ``d V`` per target token. ``new_tokens_only``: incremental decoding of
    ``tgt_len`` tokens over ``rows`` rows, with the encoder and the cross keys/values once per
    source row.
    """
    d, f, v, layers, s, t = a.d_model, a.ffn, a.vocab, a.layers, a.src_len, a.tgt_len
    b = a.batch
    enc = b * s * layers * (4 * d * d + 2 * d * f + 2 * s * d)
    cross_kv = b * s * layers * 2 * d * d
    rows = rows or b
    if new_tokens_only:
        mean_keys = (t + 1) / 2
        dec = rows * t * (layers * (6 * d * d + 2 * d * f + 2 * mean_keys * d + 2 * s * d) + d * v)
    else:
        dec = b * t * (layers * (6 * d * d + 2 * d * f + 2 * t * d + 2 * s * d) + d * v)
    return 2.0 * (enc + cross_kv + dec)


def timed(fn: Callable[[], Any], device: torch.device, memory: bool = True) -> Tuple[float, float]:
    """(seconds, peak memory MiB) of one call; with ``memory`` false, no memory is measured (0.0):
    on the CPU that would run a sampling thread beside the timed call."""
    with (PeakMemory(device) if memory else contextlib.nullcontext()) as mem:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, mem.peak_mib if memory else 0.0


# ------------------------------------------------------------------------------------------ models


class OursAdapter:
    """Our :class:`~s2s_tasks.nn.seq2seq.Seq2Seq` behind the benchmark's four calls."""

    name = "ours"

    def __init__(self, a: argparse.Namespace, device: torch.device, architecture: str = "transformer") -> None:
        torch.manual_seed(0)
        self.model = build_seq2seq(
            vocab_size=a.vocab, pad_id=PAD, architecture=architecture, d_model=a.d_model,
            num_encoder_layers=a.layers, num_decoder_layers=a.layers, num_heads=a.heads, ffn_dim=a.ffn,
            dropout=a.dropout, max_positions=max(a.src_len, a.tgt_len) + 2, tie_embeddings=True, share_embeddings=True,
        ).to(device)
        self.optimizer = ours_optimizer(self.model, a, lr=1e-4)
        self.a = a

    def logits(self, src: torch.Tensor, mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.model(src, mask, tgt_in)

    def loss(self, src: torch.Tensor, mask: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        """The mean label-smoothed loss the way our training step computes it: the output projection
        fused with the loss (what ``Seq2SeqModule`` does for this model); with ``--ours_loss
        logits``, from the logits as HF's side does."""
        return ours_loss(self.model, self.a, src, mask, tgt_in, tgt_out)

    def generate(self, src: torch.Tensor, mask: torch.Tensor, beam: int, new_tokens: int) -> List[List[int]]:
        """The best hypothesis of each row (token ids)."""
        # EOS is banned for new_tokens - 1 tokens and forced as the new_tokens-th: new_tokens steps.
        config = GenerationConfig(
            strategy="beam" if beam > 1 else "greedy", beam_size=beam, max_length=new_tokens - 1,
            min_length=new_tokens - 1, length_penalty=1.0,
        )
        with packed_linear.packed_projections():  # as Seq2SeqModule.decode: the encoder's products packed too
            enc_out = self.model.encode(src, mask)
            out = generate(self.model.decoder, enc_out, bos_id=BOS, eos_id=EOS, config=config)
        assert all(len(h[0]) == new_tokens - 1 for h in out.tokens)
        return [h[0] for h in out.tokens]


class HFAdapter:
    """``transformers``' BART with our sizes: same activation (ReLU), dropout on the same places,
    tied input/output embeddings, sinusoidal-free learned positions (BART's own)."""

    name = "hf"

    def __init__(self, a: argparse.Namespace, device: torch.device) -> None:
        from transformers import BartConfig, BartForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        config = BartConfig(
            vocab_size=a.vocab, d_model=a.d_model, encoder_layers=a.layers, decoder_layers=a.layers,
            encoder_attention_heads=a.heads, decoder_attention_heads=a.heads, encoder_ffn_dim=a.ffn,
            decoder_ffn_dim=a.ffn, max_position_embeddings=max(a.src_len, a.tgt_len) + 2, activation_function="relu",
            dropout=a.dropout, attention_dropout=a.dropout, activation_dropout=a.dropout,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
            forced_bos_token_id=None, forced_eos_token_id=None, scale_embedding=True, tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        self.model = BartForConditionalGeneration(config).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.a = a

    def logits(self, src: torch.Tensor, mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in, use_cache=False).logits

    def loss(self, src: torch.Tensor, mask: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        """The logits, then ``F.cross_entropy`` with label smoothing (what HF's Trainer computes)."""
        return loss_of(self.logits(src, mask, tgt_in), tgt_out)

    def generate(self, src: torch.Tensor, mask: torch.Tensor, beam: int, new_tokens: int) -> None:
        out = self.model.generate(
            input_ids=src, attention_mask=mask.long(), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            num_beams=beam, do_sample=False, length_penalty=1.0, early_stopping=False,
            no_repeat_ngram_size=0, use_cache=True,
        )
        assert out.size(1) == new_tokens + 1  # decoder start token + new tokens


def ours_optimizer(model: torch.nn.Module, a: argparse.Namespace, **kwargs: Any) -> torch.optim.Optimizer:
    """Our AdamW: torch's fused kernel as every task's ``configure_optimizers`` picks it
    (``--ours_adamw fused``), or ``torch.optim.AdamW``'s default (``--ours_adamw default``)."""
    if a.ours_adamw == "fused":
        return adamw(model.parameters(), **kwargs)
    return torch.optim.AdamW(model.parameters(), **kwargs)


def ours_loss(model: torch.nn.Module, a: argparse.Namespace, src: torch.Tensor, mask: torch.Tensor,
              tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    """Our mean training loss: fused with the projection (``--ours_loss fused``) or from the logits."""
    if a.ours_loss == "logits":
        return loss_of(model(src, mask, tgt_in), tgt_out)
    fused = decoder_losses(model.decoder, model.encode(src, mask), tgt_in, tgt_out, pad_id=PAD,
                           label_smoothing=LABEL_SMOOTHING)
    assert fused is not None
    loss, _, tokens = fused
    return loss / max(tokens, 1)


def loss_of(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt_out.reshape(-1), ignore_index=PAD,
                           label_smoothing=LABEL_SMOOTHING)


def measurements(adapter: Any, batch: Dict[str, torch.Tensor], a: argparse.Namespace, device: torch.device) -> Dict[str, Callable[[], None]]:
    src, mask, tgt_in, tgt_out = batch["src"], batch["mask"], batch["tgt_in"], batch["tgt_out"]
    model, optimizer = adapter.model, adapter.optimizer

    def train(bf16: bool) -> Callable[[], None]:
        def step() -> None:
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = adapter.loss(src, mask, tgt_in, tgt_out)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        adapter.loss(src, mask, tgt_in, tgt_out)

    def decode(beam: int) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            with torch.no_grad():
                adapter.generate(src, mask, beam, a.tgt_len)
        return run

    return {
        "train_fp32": train(False), "train_bf16": train(True), "eval": evaluate,
        "greedy": decode(1), "beam": decode(a.beam),
    }


def synthetic_batch(a: argparse.Namespace, device: torch.device) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(FIRST_WORD, a.vocab, (a.batch, a.src_len), generator=g)
    tgt = torch.randint(FIRST_WORD, a.vocab, (a.batch, a.tgt_len), generator=g)
    tgt_in = torch.cat([torch.full((a.batch, 1), BOS), tgt[:, :-1]], dim=1)
    return {"src": src.to(device), "mask": (src != PAD).to(device), "tgt_in": tgt_in.to(device), "tgt_out": tgt.to(device)}


def flops_of(kind: str, a: argparse.Namespace) -> float:
    if kind.startswith("train"):
        return 3 * forward_flops(a)
    if kind == "eval":
        return forward_flops(a)
    return forward_flops(a, new_tokens_only=True, rows=a.batch * (a.beam if kind == "beam" else 1))


def run_side_by_side(adapters: List[Any], a: argparse.Namespace, device: torch.device, kinds: List[str],
                     peaks: Dict[str, float], count_flops: bool = True) -> Dict[str, Dict[str, Any]]:
    batch = synthetic_batch(a, device)
    calls = {ad.name: measurements(ad, batch, a, device) for ad in adapters}
    tokens = a.batch * a.tgt_len
    results: Dict[str, Dict[str, Any]] = {}
    for kind in kinds:
        repeats = a.bf16_repeats if kind == "train_bf16" and a.bf16_repeats else a.repeats
        times: Dict[str, List[float]] = {ad.name: [] for ad in adapters}
        memory: Dict[str, float] = {ad.name: 0.0 for ad in adapters}
        for ad in adapters:  # warm-up (allocator, oneDNN primitive caches, lazy inits)
            calls[ad.name][kind]()
        # On the CPU the memory probes measure memory in fresh processes (below): the timing
        # process runs no RSS-sampling thread, which took the GIL and a core every 2 ms beside
        # the timed call: our greedy decode took 0.234 s with it against 0.221 without, beam 4
        # 0.611 against 0.577 (medians of 6 alternating calls in one process, 2-core AMD EPYC)
        probes = device.type == "cpu" and getattr(a, "probe_argv", None) is not None
        for _ in range(repeats):
            for ad in adapters:
                seconds, mib = timed(calls[ad.name][kind], device, memory=not probes)
                times[ad.name].append(seconds)
                memory[ad.name] = max(memory[ad.name], mib)
            print(f"  {kind:<11} " + "  ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()), flush=True)
        if probes:  # RSS growth in this process says little (see _PROBE_ENV)
            for ad in adapters:
                memory[ad.name] = probe_peak_memory(getattr(ad, "probe_name", ad.name), kind, a.probe_argv)
        peak = peaks["bf16" if kind == "train_bf16" else "fp32"]
        row: Dict[str, Any] = {}
        for name, ts in times.items():
            median, best = statistics.median(ts), min(ts)
            row[name] = {
                "seconds": ts, "tokens": tokens, "tokens_per_s_median": tokens / median, "tokens_per_s_best": tokens / best,
                "mfu": flops_of(kind, a) / median / 1e9 / peak if count_flops else None, "peak_memory_mib": memory[name],
            }
        if "hf" in times:
            row["ratio_median"] = statistics.median(times["hf"]) / statistics.median(times["ours"])
            row["ratio_best"] = min(times["hf"]) / min(times["ours"])
        results[kind] = row
    return results


def print_side_by_side(results: Dict[str, Dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    head = f"{'measurement':<12}{'impl':<6}{'tok/s med':>11}{'tok/s best':>11}{'MFU':>7}{'peak MiB':>10}{'ours/HF':>9}"
    print(head + "\n" + "-" * len(head))
    for kind, row in results.items():
        for name in ("ours", "hf"):
            if name not in row:
                continue
            r = row[name]
            ratio = f"{row['ratio_median']:>8.2f}x" if name == "ours" and "ratio_median" in row else ""
            mfu = f"{100 * r['mfu']:>6.1f}%" if r["mfu"] is not None else f"{'-':>7}"
            mib = f"{r['peak_memory_mib']:>10.0f}" if r["peak_memory_mib"] is not None else f"{'-':>10}"
            print(f"{kind:<12}{name:<6}{r['tokens_per_s_median']:>11.0f}{r['tokens_per_s_best']:>11.0f}{mfu}{mib}{ratio}")


# ------------------------------------------------------------------------------------------ real data


def real_data(a: argparse.Namespace, device: torch.device) -> Optional[Dict[str, Any]]:
    from s2s_tasks.data.datamodule import Seq2SeqCollator
    from s2s_tasks.data.sampler import TokenBudgetBatchSampler
    from s2s_tasks.tasks.translation.data import TranslationDataModule

    root = Path(a.data) if a.data else None
    if root is None or not (root / "train.jsonl").is_file():
        print(f"\n(part 3 skipped: no Multi30k train.jsonl in --data {a.data!r})")
        return None
    dm = TranslationDataModule(
        train_file=str(root / "train.jsonl"), validation_file=str(root / "validation.jsonl"),
        source_column="source_lc_tok", target_column="target_lc_tok", tokenizer_vocab_size=a.bpe_vocab,
        max_tokens=a.max_tokens,
    )
    start = time.perf_counter()
    train, valid = dm.encode_split("train"), dm.encode_split("validation")
    prepare_s = time.perf_counter() - start
    pairs = train.tie_lengths()  # (source, target) lengths: <s> y  /  y </s>
    collate = Seq2SeqCollator(train, PAD)

    ours = TokenBudgetBatchSampler(train.lengths(), max_tokens=a.max_tokens, shuffle=True, seed=1, tie_lengths=pairs)
    ours_batches = list(ours)
    # the same buckets ordered by cost alone: what the (source, target) tie order buys
    untied_batches = list(TokenBudgetBatchSampler(train.lengths(), max_tokens=a.max_tokens, shuffle=True, seed=1))
    mean_size = round(len(train) / len(ours_batches))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()
    random_batches = [order[i : i + mean_size] for i in range(0, len(order), mean_size)]

    def padding(batches: List[List[int]]) -> Dict[str, float]:
        real = padded = 0
        for b in batches:
            real += sum(sum(pairs[i]) for i in b)
            padded += len(b) * (max(pairs[i][0] for i in b) + max(pairs[i][1] for i in b))
        return {"padding_share": 1 - real / padded, "batches": len(batches)}

    stats = {"ours_buckets": padding(ours_batches), "fixed_random": padding(random_batches)}
    stats["fixed_random"]["batch_size"] = mean_size
    untied = padding(untied_batches)["padding_share"]
    print(f"  padding: buckets {100 * stats['ours_buckets']['padding_share']:.1f}% (ordered by cost alone "
          f"{100 * untied:.1f}%), fixed-size random batches {100 * stats['fixed_random']['padding_share']:.1f}%", flush=True)
    if a.padding_only:
        return {"pairs": len(train), "vocab": dm.vocab_size, "padding_share": {
            "ours_buckets": stats["ours_buckets"]["padding_share"], "buckets_by_cost_alone": untied,
            "fixed_random": stats["fixed_random"]["padding_share"]}}
    stats["ours_buckets"]["padding_share_by_cost_alone"] = untied
    vocab = dm.vocab_size

    def epoch(batches: List[List[int]]) -> Tuple[Dict[str, float], Any]:
        torch.manual_seed(0)
        model = build_seq2seq(vocab_size=vocab, pad_id=PAD, d_model=a.d_model, num_encoder_layers=a.layers,
                              num_decoder_layers=a.layers, num_heads=a.heads, ffn_dim=a.ffn, dropout=a.dropout).to(device)
        optimizer = ours_optimizer(model, a, lr=5e-4, betas=(0.9, 0.98))
        model.train()
        if a.real_batches:
            batches = batches[: a.real_batches]
        target_tokens = 0
        sync(device)
        start = time.perf_counter()
        for indices in batches:
            batch = collate(indices)
            tgt_out = batch["tgt_out"].to(device)
            loss = ours_loss(model, a, batch["src_ids"].to(device), batch["src_mask"].to(device),
                             batch["tgt_in"].to(device), tgt_out)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            target_tokens += int((tgt_out != PAD).sum())
        sync(device)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "batches": len(batches), "target_tokens": target_tokens,
                "target_tokens_per_s": target_tokens / seconds, "last_loss": float(loss.detach())}, model

    print(f"\nPart 3: Multi30k ({len(train)} training pairs, BPE vocabulary {vocab}, prepared in {prepare_s:.1f} s)", flush=True)
    fixed, _ = epoch(random_batches)
    stats["fixed_random"].update(fixed)
    print(f"  fixed-size epoch {fixed['seconds']:.1f} s", flush=True)
    bucketed, model = epoch(ours_batches)  # these weights decode below
    stats["ours_buckets"].update(bucketed)
    print(f"  bucketed epoch {bucketed['seconds']:.1f} s", flush=True)
    model.eval()

    n = min(a.decode_sentences, len(valid))
    vcollate = Seq2SeqCollator(valid, PAD)
    lengths = [len(s) for s in valid.src_ids[:n]]
    batches = list(TokenBudgetBatchSampler(lengths, max_tokens=a.max_tokens, shuffle=False))
    decode: Dict[str, Any] = {"sentences": n}
    # A one-epoch model rarely stops by itself yet, so it is decoded twice: with each output held
    # to its reference's length (forced EOS there: the lengths a trained model produces) and up to
    # our translation config's limit, 1.5 * source + 10 (the worst case).
    runs = (
        ("beam5", "beam", 5, "reference"), ("greedy", "greedy", 1, "reference"),
        ("beam5_limit", "beam", 5, "config"), ("greedy_limit", "greedy", 1, "config"),
    )
    for name, strategy, beam, lengths_from in runs:
        config = GenerationConfig(strategy=strategy, beam_size=beam, max_length=128, max_length_a=1.5, max_length_b=10)
        out_tokens = 0
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), packed_linear.packed_projections():  # as Seq2SeqModule.decode
            for indices in batches:
                batch = vcollate(indices)
                enc = model.encode(batch["src_ids"].to(device), batch["src_mask"].to(device))
                if lengths_from == "reference":
                    limits = torch.tensor([len(valid.tgt_ids[i]) for i in indices], device=device)
                    search = beam_search if beam > 1 else greedy_search
                    extra = {"beam_size": beam} if beam > 1 else {}
                    out = search(model.decoder, enc, bos_id=BOS, eos_id=EOS, max_lengths=limits, **extra)
                else:
                    out = generate(model.decoder, enc, bos_id=BOS, eos_id=EOS, config=config)
                out_tokens += sum(len(h[0]) + 1 for h in out.tokens)
        sync(device)
        seconds = time.perf_counter() - start
        decode[name] = {"seconds": seconds, "output_tokens": out_tokens, "lengths": lengths_from}
        print(f"  {name} decoding of {n} sentences: {seconds:.1f} s ({out_tokens} tokens)", flush=True)
    return {"pairs": len(train), "vocab": vocab, "batching": stats, "decode": decode}


def print_real(res: Dict[str, Any]) -> None:
    print("\nPart 3: Multi30k, one epoch at the joeynmt size (fp32)")
    head = f"{'batching':<14}{'padding':>9}{'batches':>9}{'epoch s':>9}{'tgt tok/s':>11}"
    print(head + "\n" + "-" * len(head))
    for name, r in res["batching"].items():
        print(f"{name:<14}{100 * r['padding_share']:>8.1f}%{r['batches']:>9}{r['seconds']:>9.1f}{r['target_tokens_per_s']:>11.0f}")
    d = res["decode"]
    print(f"decoding {d['sentences']} validation sentences, outputs as long as their references: beam 5 "
          f"{d['beam5']['seconds']:.1f} s, greedy {d['greedy']['seconds']:.1f} s; up to 1.5 * source + 10 tokens: "
          f"beam 5 {d['beam5_limit']['seconds']:.1f} s, greedy {d['greedy_limit']['seconds']:.1f} s")


# ------------------------------------------------------------------------------------------ main


def main(argv: Optional[List[str]] = None) -> None:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.ours_linear == "mkl":
        onednn_linear.ENABLED = packed_linear._AVAILABLE = False
    if a.memory_probe:
        run_memory_probe(a, device)
        return
    a.probe_argv = _without_options(raw_argv, ("--only", "--parts", "--json"))  # the shape flags, for the memory probes
    kinds = a.only or ["train_fp32", "train_bf16", "eval", "greedy", "beam"]
    peaks = {"fp32": gemm_peak(torch.float32, device, a), "bf16": gemm_peak(torch.bfloat16, device, a)}
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
           "cpu": cpu_description(), "gemm_peak_gflops": peaks}
    print(f"torch {torch.__version__}, {a.threads} threads, GEMM peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    parts = {int(x) for x in a.parts.split(",") if x.strip()}
    result: Dict[str, Any] = {"args": vars(a), "env": env}
    if 1 in parts:
        result.update(side_by_side(a, device, kinds, peaks, env))
    if 2 in parts:
        rnn_kinds = [k for k in kinds if k in ("train_fp32", "greedy", "beam")]
        rnn = OursAdapter(a, device, architecture="rnn")
        rnn.probe_name = "rnn"
        result["rnn"] = run_side_by_side([rnn], a, device, rnn_kinds, peaks, count_flops=False)
        print_side_by_side(result["rnn"], "Part 2: our LSTM + Bahdanau attention, same sizes")
    real = real_data(a, device) if 3 in parts else None
    if real is not None:
        result["multi30k"] = real
        if not a.padding_only:
            print_real(real)
    write_json(a.json, result)


def side_by_side(a: argparse.Namespace, device: torch.device, kinds: List[str], peaks: Dict[str, float],
                 env: Dict[str, Any]) -> Dict[str, Any]:
    adapters: List[Any] = [OursAdapter(a, device)]
    if not a.no_hf:
        try:
            adapters.append(HFAdapter(a, device))
            import transformers
            env["transformers"] = transformers.__version__
        except ImportError:
            print("transformers is not installed (pip install -e '.[bench]'): ours only")
    params = {ad.name: sum(p.numel() for p in ad.model.parameters()) for ad in adapters}
    print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items()), flush=True)
    results = run_side_by_side(adapters, a, device, kinds, peaks)
    print_side_by_side(results, "Part 1: Transformer, ours against HF BART (target tokens/s)")
    return {"parameters": params, "transformer": results}


if __name__ == "__main__":
    main()
