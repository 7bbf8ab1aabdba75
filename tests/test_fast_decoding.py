"""Speed never changes results: the decoding shortcuts give what the plain computation gives.

* beams of one input share one copy of the source (encoder states and cross-attention keys and
  values): the same hypotheses and scores as with the source expanded per beam, also when
  inputs finish at different steps and leave the running batch;
* a grouped decoder step equals the step over the expanded source;
* beam search of size 1 equals greedy search, and batched search equals each input alone.
"""

from __future__ import annotations

import pytest
import torch

from s2s_tasks.generation import beam_search, greedy_search
from s2s_tasks.nn.decoders import TransformerDecoder
from s2s_tasks.nn.seq2seq import build_seq2seq

BOS, EOS, V = 1, 2, 37


def _model(architecture: str = "transformer"):
    torch.manual_seed(0)
    return build_seq2seq(
        vocab_size=V, pad_id=0, architecture=architecture, d_model=32, num_encoder_layers=2,
        num_decoder_layers=2, num_heads=4, ffn_dim=64, dropout=0.1,
    ).eval()


def _batch(batch: int = 5, src_len: int = 9):
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, V, (batch, src_len), generator=g)
    lengths = torch.tensor([9, 4, 7, 1, 6][:batch])
    mask = torch.arange(src_len).unsqueeze(0) < lengths.unsqueeze(1)
    return src.masked_fill(~mask, 0), mask


@pytest.fixture
def expanded_source(monkeypatch):
    """Make the Transformer decoder take one source row per beam, as any decoder may."""
    def use() -> None:
        monkeypatch.setattr(TransformerDecoder, "shares_source_rows", property(lambda self: False))
    return use


def test_shared_source_beam_search_equals_expanded(expanded_source):
    model = _model()
    src, mask = _batch()
    max_lengths = torch.tensor([3, 11, 6, 8, 1])  # inputs leave the running batch at different steps
    with torch.no_grad():
        enc = model.encode(src, mask)
        assert model.decoder.shares_source_rows
        shared = beam_search(model.decoder, enc, bos_id=BOS, eos_id=EOS, beam_size=4, n_best=3, max_lengths=max_lengths)
        expanded_source()
        assert not model.decoder.shares_source_rows
        expanded = beam_search(model.decoder, enc, bos_id=BOS, eos_id=EOS, beam_size=4, n_best=3, max_lengths=max_lengths)
    assert shared.tokens == expanded.tokens
    torch.testing.assert_close(shared.scores, expanded.scores, atol=1e-5, rtol=1e-5)


def test_grouped_step_equals_expanded_step():
    model = _model()
    src, mask = _batch()
    k = 3
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(3, V, (src.size(0) * k, 4), generator=g)
    with torch.no_grad():
        enc = model.encode(src, mask)
        wide = enc.repeat_interleave(k)
        cache_grouped = cache_wide = None
        for t in range(tokens.size(1)):
            grouped, cache_grouped = model.decoder.step(tokens[:, t], enc, cache_grouped)
            plain, cache_wide = model.decoder.step(tokens[:, t], wide, cache_wide)
            torch.testing.assert_close(grouped, plain, atol=1e-5, rtol=1e-5)
    # the grouped cache keeps one copy of the cross-attention keys per input, not per beam
    assert cache_grouped["layers"][0]["source"]["k"].size(0) == src.size(0)
    assert cache_wide["layers"][0]["source"]["k"].size(0) == src.size(0) * k


@pytest.mark.parametrize("architecture", ["transformer", "rnn"])
def test_beam_one_is_greedy_and_batch_is_each_alone(architecture):
    model = _model(architecture)
    src, mask = _batch()
    max_lengths = torch.tensor([3, 11, 6, 8, 1])
    with torch.no_grad():
        enc = model.encode(src, mask)
        greedy = greedy_search(model.decoder, enc, bos_id=BOS, eos_id=EOS, max_lengths=max_lengths)
        beam1 = beam_search(model.decoder, enc, bos_id=BOS, eos_id=EOS, beam_size=1, max_lengths=max_lengths, length_penalty=0.0)
        together = beam_search(model.decoder, enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=max_lengths)
        assert beam1.tokens == greedy.tokens
        torch.testing.assert_close(beam1.scores, greedy.scores, atol=1e-5, rtol=1e-5)
        for b in range(src.size(0)):
            one = torch.tensor([b])
            alone_enc = model.encode(src[one, : int(mask[b].sum())], mask[one, : int(mask[b].sum())])
            alone = beam_search(model.decoder, alone_enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=max_lengths[one])
            assert together.tokens[b] == alone.tokens[0]
            torch.testing.assert_close(together.scores[b], alone.scores[0], atol=1e-4, rtol=1e-4)
