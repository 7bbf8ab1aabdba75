"""Tests of s2s_tasks.generation against tiny deterministic toy decoders.

The toy decoders implement only the search interface (``step`` and ``reorder_cache``). Their
logits depend on the position, on the whole prefix (through a hash kept in the cache, so a
wrongly reordered cache changes the result) and, optionally, on the source (so expanding the
encoder output per beam and dropping finished rows must keep rows aligned).
"""

from __future__ import annotations

import itertools
import math
from typing import List, Optional

import pytest
import torch
from torch import nn

from s2s_tasks import generation
from s2s_tasks.generation import (
    GenerationConfig,
    GenerationOutput,
    beam_search,
    generate,
    greedy_search,
    sample,
    top_k_top_p_filter,
)
from s2s_tasks.nn.types import EncoderOutput, reorder_cache

BOS, EOS = 0, 1
HASH = 1009


class ToyDecoder(nn.Module):
    """``logits = table[pos, last] + hist[hash(prefix)] + src_weight * states[:, 0] (+ eos_bias)``."""

    def __init__(
        self,
        vocab: int,
        *,
        seed: int = 0,
        max_pos: int = 16,
        scale: float = 2.0,
        history: bool = True,
        src_weight: float = 0.0,
        eos_bias: float = 0.0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab, self.max_pos = vocab, max_pos
        self.register_buffer("table", torch.randn(max_pos, vocab, vocab, generator=g) * scale)
        hist = torch.randn(HASH, vocab, generator=g) * scale
        self.register_buffer("hist", hist if history else torch.zeros_like(hist))
        self.src_weight, self.eos_bias = src_weight, eos_bias
        self.n_steps = 0
        self.n_reorders = 0

    def step(self, last_tokens, enc_out: EncoderOutput, cache: Optional[dict]):
        batch = last_tokens.size(0)
        assert enc_out.states.size(0) == batch, "encoder output not aligned with the running batch"
        if cache is None:
            cache = {"pos": torch.zeros(batch, dtype=torch.long), "hash": torch.zeros(batch, dtype=torch.long)}
        assert cache["pos"].size(0) == batch and cache["hash"].size(0) == batch
        pos, prefix_hash = cache["pos"], (cache["hash"] * 31 + last_tokens + 1) % HASH
        logits = self.table[pos.clamp(max=self.max_pos - 1), last_tokens] + self.hist[prefix_hash]
        logits = logits + self.src_weight * enc_out.states[:, 0, : self.vocab]
        logits[:, EOS] += self.eos_bias
        self.n_steps += 1
        return logits, {"pos": pos + 1, "hash": prefix_hash}

    def reorder_cache(self, cache, index):
        self.n_reorders += 1
        return reorder_cache(cache, index)


class TableDecoder(ToyDecoder):
    """Handcrafted log-probs ``logp[pos][last]``; no history, no source."""

    def __init__(self, logp: torch.Tensor) -> None:
        super().__init__(logp.size(-1), max_pos=logp.size(0), history=False)
        self.table.copy_(logp)


def make_enc(batch: int, vocab: int, *, seed: int = 0, src_len: int = 6, lengths=None) -> EncoderOutput:
    g = torch.Generator().manual_seed(1000 + seed)
    states = torch.randn(batch, src_len, max(vocab, 8), generator=g) * 2
    mask = torch.ones(batch, src_len, dtype=torch.bool)
    if lengths is not None:
        mask = torch.arange(src_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return EncoderOutput(states=states, mask=mask, final_state=states[:, 0])


def row(enc: EncoderOutput, b: int) -> EncoderOutput:
    return enc.index_select(torch.tensor([b]))


def rescore(decoder, enc_row: EncoderOutput, tokens: List[int]) -> float:
    """Sum of log-probs of ``tokens + [EOS]`` computed from scratch, batch 1, no reordering."""
    cache, last, total = None, torch.tensor([BOS]), 0.0
    for tok in tokens + [EOS]:
        logits, cache = decoder.step(last, enc_row, cache)
        total += torch.log_softmax(logits.float(), -1)[0, tok].item()
        last = torch.tensor([tok])
    return total


def lengths(max_lengths, batch):
    return torch.as_tensor(max_lengths if isinstance(max_lengths, list) else [max_lengths] * batch)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(beam_size=0), "model.generation.beam_size"),
        (dict(strategy="topk"), "model.generation.strategy"),
        (dict(strategy="beam", beam_size=2, n_best=3), "model.generation.n_best"),
        (dict(n_best=2), "model.generation.n_best"),  # greedy
        (dict(max_length=-1), "model.generation.max_length"),
        (dict(min_length=-1), "model.generation.min_length"),
        (dict(temperature=0.0), "model.generation.temperature"),
        (dict(top_k=-1), "model.generation.top_k"),
        (dict(top_p=0.0), "model.generation.top_p"),
        (dict(top_p=1.5), "model.generation.top_p"),
        (dict(no_repeat_ngram_size=-1), "model.generation.no_repeat_ngram_size"),
    ],
)
def test_config_validation_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        GenerationConfig(**kwargs)


def test_config_defaults_and_sample_n_best_are_valid():
    GenerationConfig()
    GenerationConfig(strategy="sample", n_best=8, top_k=5, top_p=0.9, seed=3)
    GenerationConfig(strategy="beam", beam_size=4, n_best=4)


def test_beam_search_rejects_n_best_above_beam_size():
    dec, enc = ToyDecoder(6), make_enc(1, 6)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(dec, enc, bos_id=BOS, eos_id=EOS, beam_size=2, n_best=3, max_lengths=lengths(4, 1))


def test_per_example_max_lengths_fairseq_style():
    enc = make_enc(3, 6, src_len=10, lengths=[2, 5, 10])
    cfg = GenerationConfig(max_length=20, max_length_a=1.5, max_length_b=2)
    assert generation.per_example_max_lengths(enc, cfg).tolist() == [5, 9, 17]
    cfg = GenerationConfig(max_length=8, max_length_a=1.5, max_length_b=2)
    assert generation.per_example_max_lengths(enc, cfg).tolist() == [5, 8, 8]
    assert generation.per_example_max_lengths(enc, GenerationConfig(max_length=7)).tolist() == [7, 7, 7]


# --------------------------------------------------------------------------------------------
# Greedy and beam search
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_length", [0, 3])
def test_beam_size_one_equals_greedy(seed, min_length):
    vocab, batch = 7, 5
    dec = ToyDecoder(vocab, seed=seed, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=seed)
    max_lengths = lengths([1, 4, 6, 9, 12], batch)
    greedy = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=max_lengths, min_length=min_length)
    for lp in (0.0, 1.0):
        beam = beam_search(
            dec, enc, bos_id=BOS, eos_id=EOS, beam_size=1, max_lengths=max_lengths,
            min_length=min_length, length_penalty=lp,
        )
        assert beam.tokens == greedy.tokens
        if lp == 0.0:
            torch.testing.assert_close(beam.scores, greedy.scores)
    # Greedy scores are the plain sums of log-probs, EOS included.
    for b in range(batch):
        assert greedy.scores[b, 0].item() == pytest.approx(rescore(dec, row(enc, b), greedy.tokens[b][0]), abs=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 0.6])
def test_beam_hypotheses_sorted_counted_and_scored_correctly(length_penalty):
    vocab, batch, k, n_best = 8, 4, 5, 3
    dec = ToyDecoder(vocab, seed=3, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=3)
    out = beam_search(
        dec, enc, bos_id=BOS, eos_id=EOS, beam_size=k, n_best=n_best,
        max_lengths=lengths([3, 5, 7, 10], batch), length_penalty=length_penalty,
    )
    assert isinstance(out, GenerationOutput)
    assert out.scores.shape == (batch, n_best) and out.scores.dtype == torch.float32
    assert len(out.tokens) == batch and all(len(hyps) == n_best for hyps in out.tokens)
    for b in range(batch):
        scores = out.scores[b].tolist()
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h) for h in out.tokens[b]}) == n_best  # distinct hypotheses
        for hyp, score in zip(out.tokens[b], scores):
            expected = rescore(dec, row(enc, b), hyp) / (len(hyp) + 1) ** length_penalty
            assert score == pytest.approx(expected, abs=1e-4)


def test_beam_beats_myopic_greedy():
    # V = 5: BOS=0, EOS=1, tokens 2, 3, 4. First step: 2 (p=.5) beats 3 (p=.4); but after 2
    # the best is EOS with p=.3, while after 3 EOS has p=.99.
    vocab, steps = 5, 4
    probs = torch.full((steps, vocab, vocab), 1.0 / vocab)
    probs[0, BOS] = torch.tensor([0.0, 0.05, 0.5, 0.4, 0.05])
    probs[1, 2] = torch.tensor([0.0, 0.3, 0.25, 0.25, 0.2])
    probs[1, 3] = torch.tensor([0.0, 0.99, 0.004, 0.003, 0.003])
    dec = TableDecoder(probs.clamp_min(1e-9).log())
    enc = make_enc(1, vocab)
    greedy = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths(3, 1))
    beam = beam_search(dec, enc, bos_id=BOS, eos_id=EOS, beam_size=2, max_lengths=lengths(3, 1), length_penalty=0.0)
    assert greedy.tokens == [[[2]]]
    assert beam.tokens == [[[3]]]
    assert greedy.scores.item() == pytest.approx(math.log(0.5 * 0.3), abs=1e-5)
    assert beam.scores.item() == pytest.approx(math.log(0.4 * 0.99), abs=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_large_beam_is_exact_on_tiny_vocab(seed, length_penalty):
    # V=4 (BOS=0, EOS=1, generable non-EOS tokens {0, 2, 3}), at most 3 tokens: 40 complete
    # sequences. A beam wider than every candidate list explores them all, so its n-best list is
    # the brute-force ranking.
    vocab, max_len, n_best = 4, 3, 10
    dec = ToyDecoder(vocab, seed=seed, scale=1.5, src_weight=0.5)
    enc = make_enc(1, vocab, seed=seed)
    ranked = []
    for n in range(max_len + 1):
        for seq in itertools.product([0, 2, 3], repeat=n):
            ranked.append((rescore(dec, enc, list(seq)) / (n + 1) ** length_penalty, list(seq)))
    ranked.sort(key=lambda x: -x[0])
    assert len(ranked) == 40
    out = beam_search(
        dec, enc, bos_id=BOS, eos_id=EOS, beam_size=64, n_best=n_best,
        max_lengths=lengths(max_len, 1), length_penalty=length_penalty,
    )
    assert out.tokens[0] == [seq for _, seq in ranked[:n_best]]
    torch.testing.assert_close(out.scores[0], torch.tensor([s for s, _ in ranked[:n_best]]), atol=1e-4, rtol=0)
    # A moderate beam still finds the single best sequence here.
    small = beam_search(
        dec, enc, bos_id=BOS, eos_id=EOS, beam_size=12, max_lengths=lengths(max_len, 1), length_penalty=length_penalty
    )
    assert small.tokens[0][0] == ranked[0][1]


def run_all(dec, enc, max_lengths, min_length=0, **kw):
    """Greedy, beam (n_best 3) and sampling (n_best 4) on the same input."""
    common = dict(bos_id=BOS, eos_id=EOS, max_lengths=max_lengths, min_length=min_length, **kw)
    g = torch.Generator().manual_seed(0)
    return {
        "greedy": greedy_search(dec, enc, **common),
        "beam": beam_search(dec, enc, beam_size=4, n_best=3, **common),
        "sample": sample(dec, enc, n_best=4, generator=g, **common),
    }


def test_min_length_respected():
    vocab, batch = 8, 3
    dec = ToyDecoder(vocab, seed=4, eos_bias=25.0)  # EOS wins at once, p(other) ~ 1e-9
    enc = make_enc(batch, vocab)
    free = run_all(dec, enc, lengths(10, batch))
    assert all(hyps[0] == [] for out in free.values() for hyps in out.tokens)
    for name, out in run_all(dec, enc, lengths(10, batch), min_length=4).items():
        for hyps in out.tokens:
            assert all(len(h) >= 4 for h in hyps), name
            assert len(hyps[0]) == 4, name  # EOS right after the minimum
    # Where the per-example maximum is below min_length, the maximum wins.
    for name, out in run_all(dec, enc, lengths([2, 6, 9], batch), min_length=5).items():
        assert [len(hyps[0]) for hyps in out.tokens] == [2, 5, 5], name


def test_max_length_respected_per_example():
    vocab, batch = 8, 4
    dec = ToyDecoder(vocab, seed=5, eos_bias=-30.0, src_weight=1.0)  # never wants to stop
    enc = make_enc(batch, vocab)
    max_lengths = [0, 1, 3, 7]
    for name, out in run_all(dec, enc, lengths(max_lengths, batch)).items():
        for b, hyps in enumerate(out.tokens):
            scores = out.scores[b].tolist()
            # max_length 0 leaves one possible output ([]); missing n-best entries score -inf.
            assert all(len(h) == max_lengths[b] for h, s in zip(hyps, scores) if s > -math.inf), name
        assert torch.isfinite(out.scores[:, 0]).all()
    beam = run_all(dec, enc, lengths(max_lengths, batch))["beam"]
    assert beam.tokens[0] == [[], [], []] and beam.scores[0, 1:].eq(-math.inf).all()
    assert torch.isfinite(beam.scores[1:]).all()
    # Through generate(): max new tokens = min(max_length, a * src_len + b).
    enc = make_enc(3, vocab, src_len=8, lengths=[1, 4, 8])
    for strategy in ("greedy", "beam", "sample"):
        cfg = GenerationConfig(strategy=strategy, max_length=9, max_length_a=1.0, max_length_b=2, seed=0)
        out = generate(dec, enc, bos_id=BOS, eos_id=EOS, config=cfg)
        assert [len(hyps[0]) for hyps in out.tokens] == [3, 6, 9], strategy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eos_never_in_outputs_and_lengths_bounded(seed):
    vocab, batch = 6, 4
    dec = ToyDecoder(vocab, seed=seed, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=seed)
    max_lengths = [2, 5, 8, 11]
    for name, out in run_all(dec, enc, lengths(max_lengths, batch), min_length=1).items():
        for b, hyps in enumerate(out.tokens):
            for h in hyps:
                assert EOS not in h, name
                assert 1 <= len(h) <= max_lengths[b], name
                assert all(isinstance(tok, int) for tok in h)


def test_batch_results_match_single_inputs_and_cache_is_reordered(monkeypatch):
    """Rows with different sources and limits finish at different steps; the running batch
    shrinks (reorder_cache + index_select) and every row must still get its own answer."""
    vocab, batch = 9, 4
    dec = ToyDecoder(vocab, seed=7, src_weight=1.5)
    enc = make_enc(batch, vocab, seed=7)
    max_lengths = [2, 9, 4, 6]

    calls = []
    original = EncoderOutput.repeat_interleave

    def counting(self, repeats):
        calls.append(repeats)
        return original(self, repeats)

    monkeypatch.setattr(EncoderOutput, "repeat_interleave", counting)
    dec.n_reorders = dec.n_steps = 0
    together = beam_search(
        dec, enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=lengths(max_lengths, batch)
    )
    assert calls == [3]  # the encoder output is expanded once, not per step
    assert dec.n_reorders >= dec.n_steps - 1 > 0
    greedy_together = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths(max_lengths, batch))
    for b in range(batch):
        alone = beam_search(
            dec, row(enc, b), bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=lengths(max_lengths[b], 1)
        )
        assert together.tokens[b] == alone.tokens[0]
        torch.testing.assert_close(together.scores[b], alone.scores[0])
        greedy_alone = greedy_search(dec, row(enc, b), bos_id=BOS, eos_id=EOS, max_lengths=lengths(max_lengths[b], 1))
        assert greedy_together.tokens[b] == greedy_alone.tokens[0]


def test_no_repeat_ngram_blocking():
    vocab = 5
    # The table makes 2 -> 3 -> 2 -> 3 ... overwhelmingly likely.
    logp = torch.full((12, vocab, vocab), -8.0)
    logp[:, :, 2] = 0.0
    logp[:, 2, 3] = 1.0
    logp[:, 2, 2] = -1.0
    logp[:, :, EOS] = -20.0
    dec = TableDecoder(logp)
    enc = make_enc(2, vocab)
    out = run_all(dec, enc, lengths(10, 2))
    assert out["greedy"].tokens[0][0][:4] == [2, 3, 2, 3]
    for n in (1, 2, 3):
        for name, res in run_all(dec, enc, lengths(10, 2), no_repeat_ngram_size=n).items():
            for hyps in res.tokens:
                for h in hyps:
                    grams = [tuple(h[i : i + n]) for i in range(len(h) - n + 1)]
                    assert len(grams) == len(set(grams)), (name, n, h)
    blocked = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths(10, 2), no_repeat_ngram_size=2)
    beam1 = beam_search(
        dec, enc, bos_id=BOS, eos_id=EOS, beam_size=1, max_lengths=lengths(10, 2), no_repeat_ngram_size=2
    )
    assert blocked.tokens == beam1.tokens


class KeepsLogits(ToyDecoder):
    """Returns logits it keeps a reference to (and a copy), to catch searches that write into them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.returned: List[tuple] = []

    def step(self, last_tokens, enc_out, cache):
        logits, cache = super().step(last_tokens, enc_out, cache)
        self.returned.append((logits, logits.clone()))
        return logits, cache


@pytest.mark.parametrize("kw", [dict(), dict(min_length=3), dict(no_repeat_ngram_size=2)], ids=["plain", "min", "ngram"])
def test_searches_never_write_into_the_decoders_logits(kw):
    # A decoder may hand out a tensor it still uses (a buffer, a view of its state): searches
    # mask and rank copies, never the decoder's own logits.
    vocab, batch = 9, 3
    dec = KeepsLogits(vocab, seed=6, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=6)
    run_all(dec, enc, lengths([2, 4, 6], batch), **kw)  # per-example limits force EOS at the ends
    assert len(dec.returned) > 10
    for logits, copy in dec.returned:
        assert torch.equal(logits, copy)


def test_low_precision_logits_are_scored_in_float32():
    class Half(ToyDecoder):
        def step(self, last_tokens, enc_out, cache):
            logits, cache = super().step(last_tokens, enc_out, cache)
            return logits.to(torch.bfloat16), cache

    dec, enc = Half(7, seed=1), make_enc(2, 7)
    for out in run_all(dec, enc, lengths(5, 2)).values():
        assert out.scores.dtype == torch.float32 and torch.isfinite(out.scores).all()


def test_generate_dispatches_and_empty_batch():
    vocab = 6
    dec, enc = ToyDecoder(vocab, seed=2), make_enc(2, vocab)
    cfg = GenerationConfig(strategy="beam", beam_size=3, n_best=2, max_length=5)
    out = generate(dec, enc, bos_id=BOS, eos_id=EOS, config=cfg)
    direct = beam_search(dec, enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=lengths(5, 2))
    assert out.tokens == direct.tokens
    empty = make_enc(0, vocab)
    for strategy in ("greedy", "beam", "sample"):
        res = generate(dec, empty, bos_id=BOS, eos_id=EOS, config=GenerationConfig(strategy=strategy))
        assert res.tokens == [] and res.scores.shape[0] == 0


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_sampling_reproducible_under_seed():
    vocab, batch = 10, 3
    dec = ToyDecoder(vocab, seed=8, scale=0.7, src_weight=0.5)  # flat-ish: samples vary
    enc = make_enc(batch, vocab)

    def draw(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return sample(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths(8, batch), n_best=3, generator=g, **kw)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.tokens == b.tokens and torch.equal(a.scores, b.scores)
    assert a.tokens != c.tokens
    assert draw(5, top_k=4, top_p=0.8, temperature=0.7).tokens == draw(5, top_k=4, top_p=0.8, temperature=0.7).tokens
    # n_best samples per input, sorted by score, each scored by the model's own log-probs.
    assert all(len(h) == 3 for h in a.tokens)
    for i in range(batch):
        assert a.scores[i].tolist() == sorted(a.scores[i].tolist(), reverse=True)
        for hyp, score in zip(a.tokens[i], a.scores[i].tolist()):
            assert score == pytest.approx(rescore(dec, row(enc, i), hyp), abs=1e-4)
    # generate() seeds its own generator from the config.
    cfg = GenerationConfig(strategy="sample", n_best=2, max_length=8, seed=11)
    assert generate(dec, enc, bos_id=BOS, eos_id=EOS, config=cfg).tokens == generate(
        dec, enc, bos_id=BOS, eos_id=EOS, config=cfg
    ).tokens


def test_sampling_with_top_k_one_or_tiny_temperature_is_greedy():
    vocab, batch = 9, 4
    dec = ToyDecoder(vocab, seed=9, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=9)
    ml = lengths([3, 5, 7, 9], batch)
    greedy = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=ml)
    g = torch.Generator().manual_seed(0)
    top1 = sample(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=ml, top_k=1, generator=g)
    cold = sample(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=ml, temperature=1e-4, generator=g)
    assert top1.tokens == greedy.tokens == cold.tokens
    torch.testing.assert_close(top1.scores, greedy.scores)


def test_sampling_follows_the_filtered_distribution():
    vocab, n = 6, 4000
    logp = torch.full((2, vocab, vocab), -30.0)
    probs0 = torch.tensor([0.0, 0.1, 0.4, 0.3, 0.15, 0.05])
    logp[0, BOS] = probs0.clamp_min(1e-12).log()
    dec, enc = TableDecoder(logp), make_enc(1, vocab)

    def first_tokens(**kw):
        g = torch.Generator().manual_seed(123)
        out = sample(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths(1, 1), n_best=n, generator=g, **kw)
        return torch.tensor([h[0] if h else EOS for h in out.tokens[0]])

    freq = torch.bincount(first_tokens(), minlength=vocab).float() / n
    torch.testing.assert_close(freq, probs0, atol=0.03, rtol=0)
    # top-k=2 keeps tokens 2 and 3, renormalised: 4/7 and 3/7.
    freq = torch.bincount(first_tokens(top_k=2), minlength=vocab).float() / n
    torch.testing.assert_close(freq, torch.tensor([0, 0, 4 / 7, 3 / 7, 0, 0]), atol=0.03, rtol=0)
    # top-p=0.8: smallest set reaching 0.8 is {2, 3, 4} (0.4 + 0.3 + 0.15 = 0.85).
    freq = torch.bincount(first_tokens(top_p=0.8), minlength=vocab).float() / n
    torch.testing.assert_close(freq, torch.tensor([0, 0, 0.4, 0.3, 0.15, 0]) / 0.85, atol=0.03, rtol=0)


# --------------------------------------------------------------------------------------------
# top_k_top_p_filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_top_k_keeps_exactly_k(k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(5, 7, 50, generator=g)
    out = top_k_top_p_filter(logits, top_k=k)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == k).all()
    torch.testing.assert_close(out[kept], logits[kept])  # survivors untouched
    # The survivors are the k largest.
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    assert (logits[kept.logical_not()] < threshold.expand_as(logits)[kept.logical_not()]).all()
    # Ties: still exactly k.
    assert (torch.isfinite(top_k_top_p_filter(torch.zeros(3, 50), top_k=k)).sum(-1) == k).all()


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.77, 0.9, 0.999])
def test_top_p_keeps_smallest_set_reaching_p(p):
    g = torch.Generator().manual_seed(int(p * 1000))
    logits = torch.randn(64, 20, generator=g) * 2
    out = top_k_top_p_filter(logits, top_p=p)
    kept = torch.isfinite(out)
    probs = logits.softmax(-1)
    for i in range(logits.size(0)):
        order = probs[i].argsort(descending=True)
        cum = probs[i][order].cumsum(0)
        size = int((cum < p).sum()) + 1  # smallest prefix whose mass is >= p
        size = min(size, logits.size(1))
        assert set(order[:size].tolist()) == set(kept[i].nonzero().squeeze(1).tolist())
        assert probs[i][kept[i]].sum() >= p - 1e-6
        # Dropping the least probable survivor would fall below p.
        assert probs[i][kept[i]].sum() - probs[i][kept[i]].min() < p
    torch.testing.assert_close(out[kept], logits[kept])


def test_top_k_and_top_p_combined_and_off():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.3, 0.15, 0.1]]))
    assert torch.equal(top_k_top_p_filter(logits), logits)
    assert torch.equal(top_k_top_p_filter(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(top_k_top_p_filter(logits, top_k=99), logits)
    # top-k=3 -> {1, 2, 3} renormalised (.4, .3, .15)/.85; top-p=.8 -> needs {1, 2} (.82 >= .8).
    kept = torch.isfinite(top_k_top_p_filter(logits, top_k=3, top_p=0.8))
    assert kept.tolist() == [[False, True, True, False, False]]
    # A very small top_p keeps the single best token.
    assert torch.isfinite(top_k_top_p_filter(logits, top_p=1e-6)).tolist() == [[False, True, False, False, False]]
    # Entries that were already -inf (e.g. a masked EOS) stay -inf.
    masked = logits.clone()
    masked[0, 1] = -math.inf
    assert not torch.isfinite(top_k_top_p_filter(masked, top_k=4)[0, 1])
    assert not torch.isfinite(top_k_top_p_filter(masked, top_p=0.99)[0, 1])
    with pytest.raises(ValueError):
        top_k_top_p_filter(logits, top_k=-1)
    with pytest.raises(ValueError):
        top_k_top_p_filter(logits, top_p=0.0)


# --------------------------------------------------------------------------------------------
# Repetition penalty (Keskar et al., 2019)
# --------------------------------------------------------------------------------------------


def test_repetition_penalty_config_validation():
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"model\.generation\.repetition_penalty"):
            GenerationConfig(repetition_penalty=bad)
    GenerationConfig(repetition_penalty=1.3)
    with pytest.raises(ValueError, match="repetition_penalty"):
        greedy_search(ToyDecoder(5), make_enc(1, 5), bos_id=BOS, eos_id=EOS, max_lengths=3, repetition_penalty=0.0)


def test_apply_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -2.0, -4.0]])
    prefix = torch.tensor([[0, 1, 1], [2, 3, 2]])  # repeated tokens are penalised once
    out = generation.apply_repetition_penalty(logits, prefix, 2.0)
    expected = torch.tensor([[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, -4.0, -8.0]])
    torch.testing.assert_close(out, expected)
    assert generation.apply_repetition_penalty(logits, prefix, 1.0) is logits
    assert generation.apply_repetition_penalty(logits, prefix[:, :0], 2.0) is logits


def test_repetition_penalty_one_changes_nothing():
    vocab, batch = 8, 3
    dec = ToyDecoder(vocab, seed=3, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=3)
    ml = lengths([4, 6, 8], batch)
    plain, penalised = run_all(dec, enc, ml), run_all(dec, enc, ml, repetition_penalty=1.0)
    for name in plain:
        assert plain[name].tokens == penalised[name].tokens, name
        torch.testing.assert_close(plain[name].scores, penalised[name].scores)


def _repeating_decoder(vocab: int = 6) -> TableDecoder:
    # Token 2 is the clear favourite after everything, then 3, then the rest; EOS is unlikely.
    logp = torch.full((12, vocab, vocab), 0.5)
    logp[:, :, 2] = 2.0
    logp[:, :, 3] = 1.0
    logp[:, :, EOS] = -20.0
    return TableDecoder(logp)


def test_large_repetition_penalty_prevents_repeats_in_every_strategy():
    vocab, batch = 6, 3
    dec, enc = _repeating_decoder(vocab), make_enc(batch, vocab)
    ml = lengths(4, batch)
    free = run_all(dec, enc, ml)
    assert all(hyps[0] == [2, 2, 2, 2] for out in (free["greedy"], free["beam"]) for hyps in out.tokens)
    # theta = 100 on positive logits: used tokens drop to 0.02 / 0.01 / 0.005, below every unused one.
    out = run_all(dec, enc, ml, repetition_penalty=100.0)
    for name in ("greedy", "beam"):
        for hyps in out[name].tokens:
            h = hyps[0]
            assert len(h) == 4 and len(set(h)) == 4, (name, h)
    assert out["greedy"].tokens[0][0] == [2, 3, 0, 4]
    # On a decoder that returns log-probabilities (all <= 0, as copy attention does) the
    # penalty multiplies: used tokens fall below every unused one, in every strategy.
    logp_dec = TableDecoder(torch.log_softmax(dec.table, dim=-1))
    assert all(hyps[0] == [2, 2, 2, 2] for hyps in run_all(logp_dec, enc, ml)["greedy"].tokens)
    for name, res in run_all(logp_dec, enc, ml, repetition_penalty=50.0).items():
        for hyps in res.tokens:
            h = hyps[0]
            assert len(h) == 4 and len(set(h)) == 4, (name, h)


def test_repetition_penalty_batch_and_beams_match_single_inputs():
    vocab, batch = 9, 4
    dec = ToyDecoder(vocab, seed=7, src_weight=1.5)
    enc = make_enc(batch, vocab, seed=7)
    max_lengths = [2, 9, 4, 6]
    kw = dict(bos_id=BOS, eos_id=EOS, repetition_penalty=1.8)
    together = beam_search(dec, enc, beam_size=3, n_best=2, max_lengths=lengths(max_lengths, batch), **kw)
    greedy_together = greedy_search(dec, enc, max_lengths=lengths(max_lengths, batch), **kw)
    plain = beam_search(dec, enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=lengths(max_lengths, batch))
    assert together.tokens != plain.tokens  # the penalty does act here
    for b in range(batch):
        alone = beam_search(dec, row(enc, b), beam_size=3, n_best=2, max_lengths=lengths(max_lengths[b], 1), **kw)
        assert together.tokens[b] == alone.tokens[0]
        torch.testing.assert_close(together.scores[b], alone.scores[0])
        greedy_alone = greedy_search(dec, row(enc, b), max_lengths=lengths(max_lengths[b], 1), **kw)
        assert greedy_together.tokens[b] == greedy_alone.tokens[0]
    # beam size 1 still equals greedy under the penalty
    beam1 = beam_search(dec, enc, beam_size=1, max_lengths=lengths(max_lengths, batch), length_penalty=0.0, **kw)
    assert beam1.tokens == greedy_together.tokens
    torch.testing.assert_close(beam1.scores, greedy_together.scores)
    cfg = GenerationConfig(strategy="sample", n_best=2, max_length=6, seed=1, repetition_penalty=1.8)
    assert generate(dec, enc, bos_id=BOS, eos_id=EOS, config=cfg).tokens == generate(dec, enc, bos_id=BOS, eos_id=EOS, config=cfg).tokens


# --------------------------------------------------------------------------------------------
# Beam search's candidate selection through chunk maxima (CPU)
# --------------------------------------------------------------------------------------------


def plain_best(lprobs, scores, count):
    n, k = scores.shape
    return (lprobs.view(n, k, -1) + scores.unsqueeze(2)).view(n, -1).topk(count, dim=1)


@pytest.mark.parametrize("chunk", [64, 8, 7, 1])
@pytest.mark.parametrize("vocab", [8000, 101, 64])
@pytest.mark.parametrize("k", [1, 4])
def test_best_candidates_equal_topk_over_all_beams(monkeypatch, chunk, vocab, k):
    monkeypatch.setattr(generation, "CANDIDATE_CHUNK", chunk)
    g = torch.Generator().manual_seed(vocab + chunk + k)
    n, count = 6, 2 * k
    # rounded log-probs: many exact ties between tokens, beams and chunks
    lprobs = torch.log_softmax(torch.randn(n * k, vocab, generator=g) * 3, dim=-1).mul(4).round().div(4)
    lprobs[0] = float("-inf")  # a beam with no finite continuation
    lprobs[1, :-1] = float("-inf")  # one finite token, the last (in the tail when vocab % chunk)
    scores = torch.randn(n, k, generator=g).mul(4).round().div(4)
    scores[-1, 1:] = float("-inf")  # a dead beam (all beams but the first at the first step)
    want_values, _ = plain_best(lprobs, scores, count)
    values, index = generation._best_candidates(lprobs.clone(), scores, count)
    assert torch.equal(values, want_values)  # the same sums to the bit, in the same order
    # every index names a distinct (beam, token) whose sum is its value
    flat = (lprobs.view(n, k, vocab) + scores.unsqueeze(2)).view(n, -1)
    assert torch.equal(flat.gather(1, index), values)
    finite = torch.isfinite(values)
    for r in range(n):
        assert len(set(index[r][finite[r]].tolist())) == int(finite[r].sum())


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_beam_search_through_chunk_maxima_matches_plain_topk(monkeypatch, chunk):
    """The whole search, chunked selection forced even on a tiny vocabulary (13 tokens: chunks of
    2 and 3 leave a last token outside them), against plain topk."""
    vocab, batch = 13, 4
    dec = ToyDecoder(vocab, seed=5, src_weight=1.0)
    enc = make_enc(batch, vocab, seed=5)
    common = dict(bos_id=BOS, eos_id=EOS, beam_size=3, n_best=3, max_lengths=lengths([2, 9, 4, 6], batch))
    monkeypatch.setattr(generation, "CANDIDATE_CHUNK", 10**6)  # one chunk or none: plain topk
    plain = beam_search(dec, enc, **common)
    monkeypatch.setattr(generation, "CANDIDATE_CHUNK", chunk)
    chunked = beam_search(dec, enc, **common)
    assert chunked.tokens == plain.tokens
    assert torch.equal(chunked.scores, plain.scores)
    greedy = greedy_search(dec, enc, bos_id=BOS, eos_id=EOS, max_lengths=lengths([2, 9, 4, 6], batch))
    one = beam_search(dec, enc, **{**common, "beam_size": 1, "n_best": 1})
    assert one.tokens == greedy.tokens
