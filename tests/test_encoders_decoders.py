"""Unit tests for s2s_tasks.nn encoders, decoders and Seq2Seq."""

import pytest
import torch
import torch.nn.functional as F

from s2s_tasks.nn import (
    EncoderOutput,
    RNNDecoder,
    RNNEncoder,
    Seq2Seq,
    TransformerDecoder,
    TransformerEncoder,
    build_seq2seq,
)

V, PAD, B, S, T = 13, 0, 3, 6, 5
LENGTHS = torch.tensor([6, 4, 2])


pytestmark = pytest.mark.usefixtures("single_thread")


def _source():
    torch.manual_seed(1)
    mask = torch.arange(S).unsqueeze(0) < LENGTHS.unsqueeze(1)
    ids = torch.randint(1, V, (B, S)).masked_fill(~mask, PAD)
    return ids, mask


ENCODERS = {
    "lstm_bi": lambda: RNNEncoder(V, 8, 10, num_layers=2, cell="lstm", bidirectional=True),
    "lstm_uni": lambda: RNNEncoder(V, 8, 10, num_layers=1, cell="lstm", bidirectional=False),
    "gru_bi": lambda: RNNEncoder(V, 8, 10, num_layers=2, cell="gru", bidirectional=True),
    "gru_uni": lambda: RNNEncoder(V, 8, 10, num_layers=1, cell="gru", bidirectional=False),
    "transformer": lambda: TransformerEncoder(V, 16, 4, 32, 2, dropout=0.0),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_shapes(name):
    torch.manual_seed(0)
    encoder = ENCODERS[name]().eval()
    ids, mask = _source()
    out = encoder(ids, mask)
    assert out.states.shape == (B, S, encoder.output_size)
    assert out.mask is mask
    if name == "transformer":
        assert out.final_state is None
    else:
        assert out.final_state.shape == (B, encoder.output_size)
        assert torch.all(out.states[~mask] == 0)


@pytest.mark.parametrize("name", ["lstm_bi", "transformer"])
def test_extra_embeddings_are_added_to_the_token_embeddings(name):
    """extra_embeddings (B, S, E) enter the encoder exactly as a shift of its embeddings would."""
    torch.manual_seed(0)
    encoder = ENCODERS[name]().eval()
    ids, mask = _source()
    extra = torch.randn(B, S, encoder.embed.dim)
    torch.testing.assert_close(encoder(ids, mask, extra_embeddings=torch.zeros_like(extra)).states, encoder(ids, mask).states)
    shifted = encoder(ids, mask, extra_embeddings=extra).states
    assert not torch.allclose(shifted, encoder(ids, mask).states)
    plain_embed = encoder.embed.forward
    encoder.embed.forward = lambda x, offset=0: plain_embed(x, offset) + extra
    torch.testing.assert_close(encoder(ids, mask).states, shifted)


def test_rnn_encoder_final_state_is_last_layer_h():
    torch.manual_seed(0)
    encoder = RNNEncoder(V, 8, 10, num_layers=2, cell="lstm", bidirectional=True).eval()
    ids, mask = _source()
    out = encoder(ids, mask)
    for b, length in enumerate(LENGTHS.tolist()):
        # forward direction ends at the last real token, backward direction at the first
        torch.testing.assert_close(out.final_state[b, :5], out.states[b, length - 1, :5])
        torch.testing.assert_close(out.final_state[b, 5:], out.states[b, 0, 5:])


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_padding_invariance(name):
    torch.manual_seed(0)
    encoder = ENCODERS[name]().eval()
    ids, mask = _source()
    out = encoder(ids, mask)
    padded = encoder(F.pad(ids, (0, 4), value=PAD), F.pad(mask, (0, 4), value=False))
    torch.testing.assert_close(padded.states[:, :S][mask], out.states[mask], atol=1e-5, rtol=1e-5)
    if out.final_state is not None:
        torch.testing.assert_close(padded.final_state, out.final_state, atol=1e-5, rtol=1e-5)
    # one example alone == the same example in the batch
    single = encoder(ids[1:2, : LENGTHS[1]], mask[1:2, : LENGTHS[1]])
    torch.testing.assert_close(single.states[0], out.states[1, : LENGTHS[1]], atol=1e-5, rtol=1e-5)


def _rnn_decoder(cell, attention):
    return RNNDecoder(V, 8, 12, encoder_output_size=12, num_layers=2, cell=cell, attention=attention, input_feeding=True)


DECODERS = {
    **{
        f"rnn_{cell}_{attention}": (lambda cell=cell, attention=attention: _rnn_decoder(cell, attention), 12)
        for cell in ("lstm", "gru")
        for attention in ("bahdanau", "luong_dot", "luong_general", "luong_concat")
    },
    "rnn_gru_no_input_feeding": (
        lambda: RNNDecoder(V, 8, 12, 12, cell="gru", attention="luong_general", input_feeding=False),
        12,
    ),
    "transformer": (lambda: TransformerDecoder(V, 16, 4, 32, 2, dropout=0.0), 16),
}


def _enc_out(dim, final_state=True):
    torch.manual_seed(2)
    _, mask = _source()
    return EncoderOutput(
        states=torch.randn(B, S, dim), mask=mask, final_state=torch.randn(B, dim) if final_state else None
    )


def _incremental(decoder, tgt, enc_out, cache=None):
    logits = []
    for t in range(tgt.size(1)):
        step_logits, cache = decoder.step(tgt[:, t], enc_out, cache)
        logits.append(step_logits)
    return torch.stack(logits, dim=1), cache


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_step_matches_forward(name):
    torch.manual_seed(0)
    make, dim = DECODERS[name]
    decoder = make().eval()
    enc_out = _enc_out(dim)
    tgt = torch.randint(1, V, (B, T))
    with torch.no_grad():
        logits, attention = decoder(tgt, enc_out, return_attention=True)
        assert logits.shape == (B, T, V)
        assert attention.shape == (B, T, S)
        assert torch.all(attention.masked_select(~enc_out.mask.unsqueeze(1).expand_as(attention)) == 0)
        torch.testing.assert_close(attention.sum(-1), torch.ones(B, T))
        torch.testing.assert_close(decoder(tgt, enc_out), logits)
        incremental, _ = _incremental(decoder, tgt, enc_out)
    torch.testing.assert_close(incremental, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["rnn_lstm_bahdanau", "rnn_gru_luong_general", "transformer"])
def test_decoder_reorder_cache(name):
    torch.manual_seed(0)
    make, dim = DECODERS[name]
    decoder = make().eval()
    enc_out = _enc_out(dim)
    tgt = torch.randint(1, V, (B, T))
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        full = decoder(tgt, enc_out)
        _, cache = _incremental(decoder, tgt[:, :3], enc_out)
        cache = decoder.reorder_cache(cache, perm)
        rest, _ = _incremental(decoder, tgt[perm, 3:], enc_out.index_select(perm), cache)
    torch.testing.assert_close(rest, full[perm, 3:], atol=1e-5, rtol=1e-5)


def test_rnn_decoder_without_final_state_and_bad_attention():
    torch.manual_seed(0)
    decoder = _rnn_decoder("lstm", "bahdanau").eval()
    enc_out = _enc_out(12, final_state=False)
    cache = decoder.init_cache(enc_out)
    assert torch.all(cache["hidden"] == 0) and cache["hidden"].shape == (B, 2, 12)
    assert decoder(torch.randint(1, V, (B, T)), enc_out).shape == (B, T, V)
    with pytest.raises(ValueError, match="model.attention"):
        _rnn_decoder("lstm", "luong_bilinear")
    with pytest.raises(ValueError, match="model.rnn_cell"):
        _rnn_decoder("rnn", "bahdanau")


def test_transformer_decoder_cache_positions():
    decoder = TransformerDecoder(V, 16, 4, 32, 1, dropout=0.0, max_positions=3).eval()
    enc_out = _enc_out(16)
    _, cache = _incremental(decoder, torch.randint(1, V, (B, 3)), enc_out)
    assert cache["length"] == 3
    assert cache["layers"][0]["self"]["filled"] == 3 and cache["layers"][0]["self"]["k"].shape[:2] == (B, 4)
    assert cache["layers"][0]["source"]["k"].shape == (B, 4, S, 4)
    with pytest.raises(ValueError, match="model.max_positions"):
        decoder.step(torch.ones(B, dtype=torch.long), enc_out, cache)


@pytest.mark.parametrize("architecture", ["transformer", "rnn"])
def test_tying_and_sharing(architecture):
    model = build_seq2seq(
        vocab_size=V, pad_id=PAD, architecture=architecture, d_model=16, num_encoder_layers=1,
        num_decoder_layers=1, num_heads=2, ffn_dim=32, tie_embeddings=True, share_embeddings=True,
    )
    assert model.decoder.output_projection.weight is model.decoder.embed.token.weight
    assert model.encoder.embed.token is model.decoder.embed.token
    assert torch.all(model.decoder.embed.token.weight[PAD] == 0)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(id(p) for p in model.parameters()))
    assert sum("token.weight" in name for name in names) == 1

    untied = build_seq2seq(
        vocab_size=V, pad_id=PAD, architecture=architecture, d_model=16, num_encoder_layers=1,
        num_decoder_layers=1, num_heads=2, ffn_dim=32, tie_embeddings=False, share_embeddings=False,
    )
    assert untied.decoder.output_projection.weight is not untied.decoder.embed.token.weight
    assert untied.encoder.embed.token is not untied.decoder.embed.token

    ids, mask = _source()
    assert model(ids, mask, ids[:, :4]).shape == (B, 4, V)


def test_tying_shape_mismatch():
    with pytest.raises(ValueError, match="model.tie_embeddings"):
        build_seq2seq(vocab_size=V, pad_id=PAD, architecture="rnn", d_model=16, embedding_dim=8, share_embeddings=False)
    encoder = TransformerEncoder(V, 8, 2, 16, 1)
    decoder = TransformerDecoder(V, 16, 2, 16, 1)
    with pytest.raises(ValueError, match="model.share_embeddings"):
        Seq2Seq(encoder, decoder, share_embeddings=True)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"architecture": "lstm"}, "model.architecture"),
        ({"architecture": "rnn", "attention": "multihead"}, "model.attention"),
        ({"architecture": "rnn", "rnn_cell": "rnn"}, "model.rnn_cell"),
        ({"positional": "rotary"}, "model.positional"),
        ({"d_model": 10, "num_heads": 3}, "model.num_heads"),
    ],
)
def test_build_seq2seq_errors(kwargs, key):
    with pytest.raises(ValueError, match=key) as info:
        build_seq2seq(vocab_size=V, pad_id=PAD, **kwargs)
    if key != "model.num_heads":
        assert "must be one of" in str(info.value)


@pytest.mark.parametrize("architecture", ["transformer", "rnn"])
def test_seq2seq_overfits_copy_task(architecture):
    torch.manual_seed(0)
    bos, eos, vocab = 1, 2, 10
    model = build_seq2seq(
        vocab_size=vocab, pad_id=PAD, architecture=architecture, d_model=32, num_encoder_layers=1,
        num_decoder_layers=1, num_heads=2, ffn_dim=64, dropout=0.0, attention="luong_general",
    )
    src = torch.randint(3, vocab, (16, 6))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    tgt_in = torch.cat([torch.full((16, 1), bos), src], dim=1)
    tgt_out = torch.cat([src, torch.full((16, 1), eos)], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        logits = model(src, src_mask, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, vocab), tgt_out.reshape(-1), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
