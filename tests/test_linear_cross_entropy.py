"""The output projection fused with the label-smoothed cross-entropy (s2s_tasks.nn.linear_cross_entropy)
and its use in Seq2SeqModule's losses: the same values and gradients as logits + F.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2s_tasks.nn import build_seq2seq
from s2s_tasks.nn.linear_cross_entropy import decoder_losses, linear_cross_entropy
from s2s_tasks.seq2seq_module import Seq2SeqModule

pytestmark = pytest.mark.usefixtures("single_thread")

V, PAD, BOS, EOS = 37, 0, 1, 2


def reference(hidden, weight, bias, target, eps):
    """The unfused computation: logits, then F.cross_entropy (sums over non-padding rows)."""
    logits = F.linear(hidden, weight, bias)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    loss = F.cross_entropy(logits, target, ignore_index=PAD, label_smoothing=eps, reduction="sum")
    nll = F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum")
    return loss, nll


def operands(dtype=torch.float32, n=70, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=dtype)
    weight = torch.randn(V, d, generator=g, dtype=dtype) * 0.5
    bias = torch.randn(V, generator=g, dtype=dtype) * 0.1
    target = torch.randint(3, V, (n,), generator=g)
    target[::5] = PAD
    return hidden, weight, bias, target


def grads_of(fn, hidden, weight, bias, mix=(0.7, 0.3)):
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    loss, nll = fn(*leaves)[:2]
    (mix[0] * loss + mix[1] * nll).backward()
    return loss.detach(), nll.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("rows", [1, 16, 1000])  # one row per chunk, several chunks, one chunk
def test_equals_logits_and_cross_entropy_in_float64(eps, rows):
    hidden, weight, bias, target = operands(torch.float64)
    fused = grads_of(lambda h, w, b: linear_cross_entropy(h, w, b, target, ignore_index=PAD, label_smoothing=eps, rows=rows),
                     hidden, weight, bias)
    ref = grads_of(lambda h, w, b: reference(h, w, b, target, eps), hidden, weight, bias)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(fused[2], ref[2]):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)
    # padding rows get no gradient at all
    assert fused[2][0][target == PAD].abs().max() == 0


@pytest.mark.parametrize("mix", [(1.0, 0.0), (0.0, 1.0), (-2.0, 0.5), (1.0, -1.0)])  # incl. a zero softmax scale
def test_gradients_for_any_weighting_of_the_two_outputs(mix):
    hidden, weight, bias, target = operands(torch.float64, n=20)
    fused = grads_of(lambda h, w, b: linear_cross_entropy(h, w, b, target, ignore_index=PAD, label_smoothing=0.2, rows=7),
                     hidden, weight, bias, mix)
    ref = grads_of(lambda h, w, b: reference(h, w, b, target, 0.2), hidden, weight, bias, mix)
    for mine, theirs in zip(fused[2], ref[2]):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)


def test_targets_whose_probability_underflows_float32_keep_their_exact_loss():
    """The loss reads log p_t as z_t - lse, not as the log of a softmax value: a target 200 nats
    below the best token (p_t about 1e-87, zero in float32) still counts 200."""
    hidden, weight, bias, target = operands(n=6)
    weight = weight * 40.0  # logits spread over hundreds
    fused = grads_of(lambda h, w, b: linear_cross_entropy(h, w, b, target, ignore_index=PAD, label_smoothing=0.1, rows=4),
                     hidden, weight, bias)
    ref = grads_of(lambda h, w, b: reference(h.double(), w.double(), b.double(), target, 0.1), hidden, weight, bias)
    logits = F.linear(hidden, weight, bias).double()
    counted = target != PAD
    assert (logits.log_softmax(-1).gather(1, target[:, None])[counted] < -88).any()  # below float32's range
    torch.testing.assert_close(fused[0].double(), ref[0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(fused[1].double(), ref[1], rtol=1e-5, atol=1e-3)
    for mine, theirs in zip(fused[2], ref[2]):
        torch.testing.assert_close(mine.double(), theirs.double(), rtol=1e-4, atol=1e-4)


def test_gradcheck_without_bias():
    hidden, weight, _, target = operands(torch.float64, n=9, d=4)
    leaves = (hidden.requires_grad_(), weight.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda h, w: linear_cross_entropy(h, w, None, target, ignore_index=PAD, label_smoothing=0.1, rows=4)[:2], leaves
    )


def test_float32_and_bf16_autocast_match_the_unfused_loss():
    hidden, weight, bias, target = operands(torch.float32, n=300, d=32)
    fused = grads_of(lambda h, w, b: linear_cross_entropy(h, w, b, target, ignore_index=PAD, label_smoothing=0.1, rows=64),
                     hidden, weight, bias)
    ref = grads_of(lambda h, w, b: reference(h, w, b, target, 0.1), hidden, weight, bias)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-5, atol=1e-4)
    for mine, theirs in zip(fused[2], ref[2]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    # under bf16 autocast: the products in bf16, the softmax in float32, like autocast's own path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused_bf16 = grads_of(lambda h, w, b: linear_cross_entropy(h, w, b, target, ignore_index=PAD, label_smoothing=0.1, rows=64),
                              hidden, weight, bias)
    assert fused_bf16[0].dtype == torch.float32
    torch.testing.assert_close(fused_bf16[0], ref[0], rtol=1e-2, atol=0.0)
    for mine, theirs in zip(fused_bf16[2], ref[2]):
        assert mine.dtype == torch.float32
        assert (mine - theirs).abs().max() <= 0.03 * theirs.abs().max()


def test_counts_tokens_and_handles_an_all_padding_batch():
    hidden, weight, bias, target = operands()
    _, _, tokens = linear_cross_entropy(hidden, weight, bias, target, ignore_index=PAD)
    assert tokens == int((target != PAD).sum())
    leaf = hidden.clone().requires_grad_()
    loss, nll, tokens = linear_cross_entropy(leaf, weight, bias, torch.full_like(target, PAD), ignore_index=PAD)
    assert tokens == 0 and loss.item() == 0.0 and nll.item() == 0.0
    loss.backward()
    assert leaf.grad.abs().max() == 0


def test_rejects_bad_arguments():
    hidden, weight, bias, target = operands()
    with pytest.raises(ValueError, match=r"hidden must be \(N, D\)"):
        linear_cross_entropy(hidden, weight, bias, target[:-1])
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(hidden, weight, bias, target, label_smoothing=1.0)
    with pytest.raises(ValueError, match="rows"):
        linear_cross_entropy(hidden, weight, bias, target, rows=0)


def _batch(seed=0, b=3, s=6, t=5):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, 4:] = False
    tgt = torch.randint(3, V, (b, t), generator=g)
    tgt[2, 3:] = PAD
    return {"src_ids": src, "src_mask": mask, "tgt_in": torch.cat([torch.full((b, 1), BOS), tgt[:, :-1]], 1), "tgt_out": tgt}


@pytest.mark.parametrize("architecture", ["transformer", "rnn"])
def test_module_losses_equal_the_logits_path(architecture):
    """Seq2SeqModule's training and evaluation losses go through the fused path, and equal the
    losses computed from the model's logits (what they were before it)."""
    torch.manual_seed(0)
    module = Seq2SeqModule(vocab_size=V, pad_id=PAD, architecture=architecture, d_model=16, embedding_dim=16,
                           num_encoder_layers=1, num_decoder_layers=1, num_heads=2, ffn_dim=32, dropout=0.0,
                           label_smoothing=0.1)
    batch = _batch()
    enc = module.model.encode(batch["src_ids"], batch["src_mask"])
    assert decoder_losses(module.model.decoder, enc, batch["tgt_in"], batch["tgt_out"], pad_id=PAD) is not None
    for eps in (0.0, 0.1):
        fused = module._token_losses(batch, eps)
        unfused = module._losses_from_logits(module(batch["src_ids"], batch["src_mask"], batch["tgt_in"]), batch, eps)
        torch.testing.assert_close(fused[0], unfused[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused[1], unfused[1], rtol=1e-5, atol=1e-5)
        assert fused[2] == unfused[2] == int((batch["tgt_out"] != PAD).sum())
    # and the gradients agree
    grads = []
    for fused_path in (True, False):
        module.zero_grad()
        if fused_path:
            loss = module.training_losses(batch)["loss"]
        else:
            loss_sum, _, tokens = module._losses_from_logits(module(batch["src_ids"], batch["src_mask"], batch["tgt_in"]), batch, 0.1)
            loss = loss_sum / tokens
        loss.backward()
        grads.append([p.grad.clone() for p in module.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_decoders_whose_output_is_more_than_a_projection_use_the_logits():
    batch = _batch()
    torch.manual_seed(0)
    copy = build_seq2seq(vocab_size=V, pad_id=PAD, architecture="transformer", d_model=16, num_encoder_layers=1,
                         num_decoder_layers=1, num_heads=2, ffn_dim=32, copy_attention=True)
    enc = copy.encode(batch["src_ids"], batch["src_mask"])
    assert copy.decoder.output_features(batch["tgt_in"], enc) is None
    assert decoder_losses(copy.decoder, enc, batch["tgt_in"], batch["tgt_out"], pad_id=PAD) is None
    plain = build_seq2seq(vocab_size=V, pad_id=PAD, architecture="transformer", d_model=16, num_encoder_layers=1,
                          num_decoder_layers=1, num_heads=2, ffn_dim=32, tie_embeddings=False, dropout=0.0)
    enc = plain.encode(batch["src_ids"], batch["src_mask"])
    features = plain.decoder.output_features(batch["tgt_in"], enc)
    torch.testing.assert_close(plain.decoder.output_projection(features), plain.decoder(batch["tgt_in"], enc))

    class Wrapped(torch.nn.Linear):  # e.g. a quantized or adapted projection with its own forward
        pass

    wrapped = Wrapped(16, V)
    wrapped.load_state_dict(plain.decoder.output_projection.state_dict())
    plain.decoder.output_projection = wrapped
    assert decoder_losses(plain.decoder, enc, batch["tgt_in"], batch["tgt_out"], pad_id=PAD) is None
