"""Pointer-generator copy attention and coverage (See et al., 2017): s2s_tasks.nn.copy and its
use in the decoders, the search code and Seq2SeqModule."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from s2s_tasks.generation import GenerationConfig, beam_search, generate, greedy_search
from s2s_tasks.nn import RNNDecoder, TransformerDecoder, build_seq2seq
from s2s_tasks.nn.copy import COPY_EPS, PointerGenerator, coverage, coverage_loss
from s2s_tasks.seq2seq_module import Seq2SeqModule

pytestmark = pytest.mark.usefixtures("single_thread")

V, PAD, BOS, EOS = 23, 0, 1, 2
B, S, T = 3, 7, 5
LENGTHS = torch.tensor([7, 4, 2])
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

MODELS = {
    "rnn_lstm_bahdanau": dict(architecture="rnn", rnn_cell="lstm", attention="bahdanau"),
    "rnn_gru_luong_general": dict(architecture="rnn", rnn_cell="gru", attention="luong_general"),
    "rnn_lstm_luong_dot": dict(architecture="rnn", rnn_cell="lstm", attention="luong_dot", bidirectional=False),
    "rnn_lstm_bahdanau_coverage": dict(architecture="rnn", rnn_cell="lstm", attention="bahdanau", coverage_attention=True),
    "rnn_gru_luong_concat_coverage": dict(architecture="rnn", rnn_cell="gru", attention="luong_concat", coverage_attention=True),
    "rnn_lstm_luong_general_coverage": dict(architecture="rnn", rnn_cell="lstm", attention="luong_general", coverage_attention=True),
    "transformer_mean": dict(architecture="transformer"),
    "transformer_head1": dict(architecture="transformer", copy_attention_head=1),
}


def make_model(name: str, copy: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = dict(MODELS[name])
    if not copy:
        kwargs.pop("copy_attention_head", None)
    return build_seq2seq(
        vocab_size=V, pad_id=PAD, d_model=16, num_encoder_layers=1, num_decoder_layers=2, num_heads=2,
        ffn_dim=32, dropout=0.0, copy_attention=copy, **kwargs,
    ).eval()


def source(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(S).unsqueeze(0) < LENGTHS.unsqueeze(1)
    # Few distinct ids so that one token occurs at several source positions (scatter_add sums them).
    ids = torch.randint(3, 9, (B, S), generator=g).masked_fill(~mask, PAD)
    return ids, mask


def incremental(decoder, tgt, enc_out):
    cache, out = None, []
    for t in range(tgt.size(1)):
        step_out, cache = decoder.step(tgt[:, t], enc_out, cache)
        out.append(step_out)
    return torch.stack(out, dim=1), cache


# --------------------------------------------------------------------------------------------
# The mixture and the coverage loss
# --------------------------------------------------------------------------------------------


def test_pointer_generator_mixture_by_hand():
    gen = PointerGenerator(2, 2, 2)
    with torch.no_grad():
        gen.gate.weight.zero_()
        gen.gate.bias.fill_(0.0)  # p_gen = 0.5
    logits = torch.zeros(1, 4)  # P_vocab uniform = 0.25
    attention = torch.tensor([[0.5, 0.3, 0.2]])
    src_ids = torch.tensor([[3, 1, 3]])  # token 3 twice: its copy mass is 0.5 + 0.2
    zeros = torch.zeros(1, 2)
    log_p = gen(logits, attention, zeros, zeros, zeros, src_ids)
    expected = 0.5 * torch.full((1, 4), 0.25) + 0.5 * torch.tensor([[0.0, 0.3, 0.0, 0.7]])
    torch.testing.assert_close(log_p.exp(), expected)
    assert log_p.dtype == torch.float32
    # Teacher-forcing shapes (B, T, ·) broadcast the source ids over T.
    zeros3 = zeros.unsqueeze(1).expand(1, 2, 2)
    log_p3 = gen(logits.unsqueeze(1).expand(1, 2, 4), attention.unsqueeze(1).expand(1, 2, 3), zeros3, zeros3, zeros3, src_ids)
    torch.testing.assert_close(log_p3.exp(), expected.unsqueeze(1).expand(1, 2, 4))
    # Tokens neither generated nor copied are clamped, never -inf.
    with torch.no_grad():
        gen.gate.bias.fill_(-1e4)  # p_gen = 0: copy only
    assert torch.isfinite(gen(logits, attention, zeros, zeros, zeros, src_ids)).all()
    assert gen(logits, attention, zeros, zeros, zeros, src_ids)[0, 0].item() == pytest.approx(torch.tensor(COPY_EPS).log().item())


def test_missing_src_ids_names_the_config_key():
    model = make_model("transformer_mean")
    ids, mask = source()
    enc_out = model.encoder(ids, mask)  # the bare encoder does not know the ids
    assert enc_out.src_ids is None and model.encode(ids, mask).src_ids is ids
    with pytest.raises(ValueError, match=r"model\.copy_attention"):
        model.decoder(ids[:, :3], enc_out)


def test_coverage_and_coverage_loss_by_hand():
    a = torch.tensor([[[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]])  # (1, 3, 3)
    c = coverage(a)
    torch.testing.assert_close(c, torch.tensor([[[0.0, 0.0, 0.0], [0.6, 0.4, 0.0], [1.1, 0.9, 0.0]]]))
    # step 0: 0; step 1: min(.5,.6)+min(.5,.4) = .9; step 2: min(0,1.1)+min(.2,.9)+min(.8,0) = .2
    assert coverage_loss(a).item() == pytest.approx(1.1)
    assert coverage_loss(a, torch.tensor([[True, True, False]])).item() == pytest.approx(0.9)
    # An attention that never returns to a covered position costs nothing.
    assert coverage_loss(torch.eye(3).unsqueeze(0)).item() == 0.0


# --------------------------------------------------------------------------------------------
# Decoders: teacher forcing == incremental, normalisation, cache reordering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_copy_step_matches_forward_and_is_normalised(name):
    model = make_model(name)
    ids, mask = source()
    tgt = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        enc_out = model.encode(ids, mask)
        log_p, attention = model.decoder(tgt, enc_out, return_attention=True)
        assert log_p.shape == (B, T, V) and attention.shape == (B, T, S)
        torch.testing.assert_close(model(ids, mask, tgt), log_p)
        torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(B, T), atol=1e-5, rtol=0)
        assert torch.all(log_p <= 1e-6)
        assert torch.all(attention.masked_select(~mask.unsqueeze(1).expand_as(attention)) == 0)
        step_log_p, _ = incremental(model.decoder, tgt, enc_out)
        torch.testing.assert_close(step_log_p, log_p, atol=1e-5, rtol=0)
        # log_softmax (what search and cross-entropy apply) leaves the log-probs unchanged.
        torch.testing.assert_close(F.log_softmax(log_p, -1), log_p, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["rnn_lstm_bahdanau", "rnn_lstm_bahdanau_coverage", "transformer_head1"])
def test_copy_reorder_cache(name):
    model = make_model(name)
    ids, mask = source()
    tgt = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(3))
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        enc_out = model.encode(ids, mask)
        full = model.decoder(tgt, enc_out)
        _, cache = incremental(model.decoder, tgt[:, :3], enc_out)
        cache = model.decoder.reorder_cache(cache, perm)
        moved = enc_out.index_select(perm)
        assert torch.equal(moved.src_ids, ids[perm])
        rest = []
        for t in range(3, T):
            out, cache = model.decoder.step(tgt[perm, t], moved, cache)
            rest.append(out)
    torch.testing.assert_close(torch.stack(rest, 1), full[perm, 3:], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name", ["rnn_lstm_bahdanau", "rnn_gru_luong_general", "rnn_gru_luong_concat_coverage", "transformer_mean", "transformer_head1"]
)
def test_copy_beam_search_batch_equals_each_alone(name):
    model = make_model(name, seed=4)
    ids, mask = source(seed=5)
    with torch.no_grad():
        enc_out = model.encode(ids, mask)
        together = beam_search(model.decoder, enc_out, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=6)
        greedy = greedy_search(model.decoder, enc_out, bos_id=BOS, eos_id=EOS, max_lengths=6)
        assert torch.isfinite(together.scores).all()
        for b in range(B):
            n = int(LENGTHS[b])
            alone_enc = model.encode(ids[b : b + 1, :n], mask[b : b + 1, :n])
            alone = beam_search(model.decoder, alone_enc, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=2, max_lengths=6)
            assert together.tokens[b] == alone.tokens[0]
            torch.testing.assert_close(together.scores[b], alone.scores[0], atol=1e-4, rtol=0)
            greedy_alone = greedy_search(model.decoder, alone_enc, bos_id=BOS, eos_id=EOS, max_lengths=6)
            assert greedy.tokens[b] == greedy_alone.tokens[0]
        # beam size 1 equals greedy; the repetition penalty and sampling run on log-probs too
        beam1 = beam_search(model.decoder, enc_out, bos_id=BOS, eos_id=EOS, beam_size=1, max_lengths=6, length_penalty=0.0)
        assert beam1.tokens == greedy.tokens
        torch.testing.assert_close(beam1.scores, greedy.scores)
        for strategy in ("greedy", "beam", "sample"):
            cfg = GenerationConfig(strategy=strategy, beam_size=3, max_length=6, repetition_penalty=1.5, seed=0)
            out = generate(model.decoder, enc_out, bos_id=BOS, eos_id=EOS, config=cfg)
            assert len(out.tokens) == B and torch.isfinite(out.scores).all()


def test_copy_config_errors_name_the_keys():
    common = dict(vocab_size=V, pad_id=PAD, d_model=16, num_heads=2, ffn_dim=32)
    with pytest.raises(ValueError, match=r"model\.copy_attention_head"):
        build_seq2seq(copy_attention=True, copy_attention_head=2, **common)
    with pytest.raises(ValueError, match=r"model\.copy_attention_head"):
        build_seq2seq(copy_attention=False, copy_attention_head=0, **common)
    with pytest.raises(ValueError, match=r"model\.copy_attention_head"):
        build_seq2seq(architecture="rnn", copy_attention=True, copy_attention_head=0, **common)
    with pytest.raises(ValueError, match=r"model\.coverage_attention"):
        build_seq2seq(copy_attention=True, coverage_attention=True, **common)
    with pytest.raises(ValueError, match=r"model\.coverage_loss_weight"):
        Seq2SeqModule(coverage_loss_weight=-1.0, **common)
    # off by default: plain logits, no gate
    for decoder in (RNNDecoder(V, 8, 8, 8), TransformerDecoder(V, 8, 2, 16, 1)):
        assert not decoder.copy_attention and decoder.pointer_generator is None


# --------------------------------------------------------------------------------------------
# Training: coverage loss in the module, and copying helps where it should
# --------------------------------------------------------------------------------------------


def _batch(ids, mask, tgt):
    return {
        "src_ids": ids,
        "src_mask": mask,
        "tgt_in": torch.cat([torch.full((tgt.size(0), 1), BOS), tgt], dim=1),
        "tgt_out": torch.cat([tgt, torch.full((tgt.size(0), 1), EOS)], dim=1),
    }


@pytest.mark.parametrize("architecture", ["rnn", "transformer"])
def test_module_coverage_loss_zero_weight_and_positive(architecture):
    ids, mask = source()
    tgt = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(6))
    tgt[2, 3:] = PAD  # padded target positions do not count
    batch = _batch(ids, mask, tgt)
    kw = dict(vocab_size=V, pad_id=PAD, architecture=architecture, d_model=16, num_encoder_layers=1,
              num_decoder_layers=1, num_heads=2, ffn_dim=32, dropout=0.0, label_smoothing=0.1, copy_attention=True)
    torch.manual_seed(0)
    off = Seq2SeqModule(coverage_loss_weight=0.0, **kw)
    torch.manual_seed(0)
    on = Seq2SeqModule(coverage_loss_weight=2.0, **kw)
    losses_off, losses_on = off.training_losses(batch), on.training_losses(batch)
    assert "coverage_loss" not in losses_off
    cov = losses_on["coverage_loss"]
    assert cov.item() > 0
    torch.testing.assert_close(losses_on["nll"], losses_off["nll"])
    torch.testing.assert_close(losses_on["loss"], losses_off["loss"] + 2.0 * cov)
    # the training loss of the copy model is still the label-smoothed NLL of normalised log-probs
    nll, _, tokens = off._token_losses(batch, 0.0)
    torch.testing.assert_close(losses_off["nll"], nll / tokens)
    losses_on["loss"].backward()
    assert on.model.decoder.pointer_generator.gate.weight.grad.abs().sum() > 0
    # the module's training_step returns the same loss (self.log outside a Trainer only warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step_loss = on.training_step(batch, 0)
    torch.testing.assert_close(step_loss, losses_on["loss"])


def _copy_task_batch(g, n, vocab, length):
    src = torch.randint(3, vocab, (n, length), generator=g)
    return _batch(src, torch.ones_like(src, dtype=torch.bool), src)


@pytest.mark.parametrize("architecture, extra", [("rnn", dict(attention="luong_general")), ("transformer", {})])
def test_copy_learns_to_copy_rare_tokens_faster(architecture, extra):
    """Output = source, tokens from a 1000-word vocabulary: in 100 steps of 32 examples each
    token is seen ~16 times, too few to learn 1000 identity mappings, while copying only has to
    learn to attend monotonically and to switch the gate to copy. Exact match of whole outputs."""
    vocab, length, steps = 1000, 5, 100
    exact = {}
    for copy in (True, False):
        torch.manual_seed(0)
        model = build_seq2seq(
            vocab_size=vocab, pad_id=PAD, architecture=architecture, d_model=32, num_encoder_layers=1,
            num_decoder_layers=1, num_heads=2, ffn_dim=64, dropout=0.0, copy_attention=copy, **extra,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            batch = _copy_task_batch(g, 32, vocab, length)
            out = model(batch["src_ids"], batch["src_mask"], batch["tgt_in"])
            loss = F.cross_entropy(out.reshape(-1, vocab), batch["tgt_out"].reshape(-1), ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        test = _copy_task_batch(torch.Generator().manual_seed(99), 64, vocab, length)
        with torch.no_grad():
            enc_out = model.encode(test["src_ids"], test["src_mask"])
            hyps = greedy_search(model.decoder, enc_out, bos_id=BOS, eos_id=EOS, max_lengths=length + 2).tokens
        exact[copy] = sum(h[0] == s for h, s in zip(hyps, test["src_ids"].tolist())) / len(hyps)
    # Here (seed 0): RNN 1.00 vs 0.00, Transformer 0.62 vs 0.00; other seeds give the Transformer
    # 0.38-0.62 with copy and at most 0.02 without.
    assert exact[True] >= 0.35 and exact[True] >= exact[False] + 0.3, exact


@pytest.mark.parametrize("name", ["rnn_lstm_bahdanau_coverage", "rnn_lstm_luong_general_coverage"])
def test_coverage_attention_keeps_the_running_sum_and_changes_the_scores(name):
    model = make_model(name)
    ids, mask = source()
    tgt = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        enc_out = model.encode(ids, mask)
        log_p, attention = model.decoder(tgt, enc_out, return_attention=True)
        _, cache = incremental(model.decoder, tgt, enc_out)
        assert cache["coverage"].shape == (B, S)
        torch.testing.assert_close(cache["coverage"], attention.sum(1), atol=1e-5, rtol=0)  # c = sum of all a_t
        # The coverage weights act on the scores: zeroing them changes every step after the first.
        model.decoder.attention.coverage_layer.weight.zero_()
        log_p0, attention0 = model.decoder(tgt, enc_out, return_attention=True)
    torch.testing.assert_close(attention0[:, 0], attention[:, 0])
    assert not torch.allclose(attention0[:, 1:], attention[:, 1:], atol=1e-4)


def test_copy_presets_build_a_copy_model():
    for name in ("transformer-copy", "lstm-copy"):
        preset = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())
        assert preset["copy_attention"] is True and preset["coverage_loss_weight"] > 0
        module = Seq2SeqModule(vocab_size=V, pad_id=PAD, **{**preset, "d_model": 16, "ffn_dim": 32, "embedding_dim": 16})
        assert module.model.decoder.copy_attention
        assert module.hparams.coverage_loss_weight == preset["coverage_loss_weight"]


@pytest.mark.parametrize("preset", ["transformer-copy", "lstm-copy"])
def test_copy_presets_fit_through_the_cli(preset, tmp_path):
    from s2s_tasks.cli import main

    cli = main([
        "fit", "--task", "summarization", "--model", str(CONFIGS / "model" / f"{preset}.yaml"),
        "--model.d_model", "32", "--model.embedding_dim", "32", "--model.ffn_dim", "64", "--model.num_heads", "2",
        "--model.num_encoder_layers", "1", "--model.num_decoder_layers", "1",
        "--model.val_generation.max_length", "8", "--model.generation.max_length", "8",
        "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "1024",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--data.cache_dir", str(tmp_path / "hf-cache"),
    ])
    assert cli.model.hparams.copy_attention and cli.model.model.decoder.copy_attention
    metrics = cli.trainer.callback_metrics
    assert "train/coverage_loss" in metrics and float(metrics["train/coverage_loss"]) > 0
    assert "val/rougeL" in metrics
