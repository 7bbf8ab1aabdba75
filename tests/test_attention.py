"""Unit tests for s2s_tasks.nn.attention and s2s_tasks.nn.embedding."""

import math

import pytest
import torch

from s2s_tasks.nn.attention import BahdanauAttention, LuongAttention, MultiHeadAttention, masked_softmax
from s2s_tasks.nn.embedding import Embeddings, LearnedPositionalEmbedding, SinusoidalPositionalEmbedding, TokenEmbedding

B, S, Q, K = 3, 5, 6, 8


pytestmark = pytest.mark.usefixtures("single_thread")


def _mask() -> torch.Tensor:
    # lengths 5, 3, 1
    return torch.arange(S).unsqueeze(0) < torch.tensor([[5], [3], [1]])


SINGLE_QUERY = {
    "bahdanau": (lambda: BahdanauAttention(Q, K, hidden_size=7), Q),
    "luong_general": (lambda: LuongAttention(Q, K, score="general"), Q),
    "luong_concat": (lambda: LuongAttention(Q, K, score="concat"), Q),
    "luong_dot": (lambda: LuongAttention(K, K, score="dot"), K),
}


@pytest.mark.parametrize("name", list(SINGLE_QUERY))
def test_single_query_attention_shapes_and_mask(name):
    torch.manual_seed(0)
    make, query_size = SINGLE_QUERY[name]
    attention = make()
    query, keys, mask = torch.randn(B, query_size), torch.randn(B, S, K), _mask()
    context, weights = attention(query, keys, mask)
    assert context.shape == (B, K)
    assert weights.shape == (B, S)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", weights, keys))
    # precomputed keys give the same result
    context2, weights2 = attention(query, keys, mask, projected_keys=attention.project_keys(keys))
    torch.testing.assert_close(context, context2)
    torch.testing.assert_close(weights, weights2)


def test_luong_dot_size_mismatch():
    with pytest.raises(ValueError, match="dot"):
        LuongAttention(Q, K, score="dot")
    with pytest.raises(ValueError, match="score"):
        LuongAttention(Q, K, score="bilinear")


def test_masked_softmax_fully_masked_row_is_zero_not_nan():
    scores = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    weights = masked_softmax(scores, mask)
    assert torch.all(weights[1] == 0)
    weights.sum().backward()
    assert torch.isfinite(scores.grad).all()


D, H = 16, 4


def test_mha_shapes_and_key_mask():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    q, kv = torch.randn(B, 4, D), torch.randn(B, S, D)
    mask = _mask()
    out, weights, cache = mha(q, kv, kv, key_mask=mask, need_weights=True)
    assert out.shape == (B, 4, D)
    assert weights.shape == (B, H, 4, S)
    assert cache is None
    assert torch.all(weights.masked_select(~mask[:, None, None, :].expand_as(weights)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, 4))
    out2, weights2, _ = mha(q, kv, kv, key_mask=mask)
    assert weights2 is None
    torch.testing.assert_close(out, out2)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_sdpa_matches_explicit(causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, S, D)
    for mask in (None, _mask()):
        sdpa, _, _ = mha(x, x, x, key_mask=mask, causal=causal)
        explicit, weights, _ = mha(x, x, x, key_mask=mask, causal=causal, need_weights=True)
        torch.testing.assert_close(sdpa, explicit, atol=1e-6, rtol=1e-5)
        if causal:
            assert torch.all(weights.triu(diagonal=1) == 0)


def test_mha_fully_masked_rows_no_nan():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, S, D)
    mask = torch.zeros(2, S, dtype=torch.bool)
    mask[0, :2] = True
    for need_weights in (False, True):
        out, weights, _ = mha(x, x, x, key_mask=mask, need_weights=need_weights)
        assert torch.isfinite(out).all()
        # an empty row attends to nothing: the output is the output projection's bias
        torch.testing.assert_close(out[1], mha.out_proj.bias.expand(S, D))
        if need_weights:
            assert torch.all(weights[1] == 0)


def _one_position_at_a_time(mha, x):
    """Causal self-attention over ``x (B, T, D)`` one step at a time: outputs ``(B, T, D)``, the
    final cache and the cache capacities seen on the way."""
    cache: dict = {}
    outputs, capacities = [], set()
    for t in range(x.size(1)):
        step = x[:, t : t + 1]
        out, _, cache = mha(step, step, step, causal=True, cache=cache)
        outputs.append(out)
        capacities.add(cache["k"].size(2))
    return torch.cat(outputs, dim=1), cache, capacities


def test_mha_self_attention_cache_matches_full_causal_pass():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, 6, D)
    full, _, _ = mha(x, x, x, causal=True)
    stepped, cache, _ = _one_position_at_a_time(mha, x)
    # a buffer with room to spare, of which the first 6 positions are filled
    assert cache["filled"] == 6 and cache["k"].shape[:2] == (B, H) and cache["k"].shape[3] == D // H
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)

    # a chunk of several positions after cached ones: causal mask offset by the cache length
    _, _, cache = mha(x[:, :2], x[:, :2], x[:, :2], causal=True, cache={})
    for need_weights in (False, True):
        chunk, _, _ = mha(x[:, 2:], x[:, 2:], x[:, 2:], causal=True, cache=cache, need_weights=need_weights)
        torch.testing.assert_close(chunk, full[:, 2:], atol=1e-5, rtol=1e-5)


def test_mha_cache_grows_past_its_capacity():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, 40, D)
    full, _, _ = mha(x, x, x, causal=True)
    stepped, _, capacities = _one_position_at_a_time(mha, x)
    assert capacities == {16, 32, 64}  # doubled twice, copied only then
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)


def test_mha_loads_separate_projection_weights():
    """Checkpoints from before the fused projection (q_proj / k_proj / v_proj) still load."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H)
    state = mha.state_dict()
    old = {k: v for k, v in state.items() if not k.startswith("in_proj")}
    for kind in ("weight", "bias"):
        for name, part in zip("qkv", state[f"in_proj.{kind}"].chunk(3)):
            old[f"{name}_proj.{kind}"] = part.clone()
    fresh = MultiHeadAttention(D, H)
    fresh.load_state_dict(old)
    x = torch.randn(B, S, D)
    torch.testing.assert_close(fresh.eval()(x, x, x)[0], mha.eval()(x, x, x)[0])


def test_mha_cross_attention_static_kv_cache_reuse():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    memory, mask = torch.randn(B, S, D), _mask()
    q1, q2 = torch.randn(B, 1, D), torch.randn(B, 1, D)
    out1, _, cache = mha(q1, memory, memory, key_mask=mask, cache={}, static_kv=True)
    k_before = cache["k"]
    assert k_before.shape == (B, H, S, D // H)
    # the cached keys/values are reused: key/value arguments are not needed, nor projected again
    out2, _, cache2 = mha(q2, None, None, key_mask=mask, cache=cache, static_kv=True)
    assert cache2["k"] is k_before
    expected, _, _ = mha(q2, memory, memory, key_mask=mask)
    torch.testing.assert_close(out2, expected)
    torch.testing.assert_close(out1, mha(q1, memory, memory, key_mask=mask)[0])


@pytest.mark.parametrize("queries", [1, 4, 17])  # the explicit path (<= EXPLICIT_MAX_QUERIES) and SDPA
def test_mha_static_kv_cache_masks_in_the_product_and_keeps_empty_rows_empty(queries):
    """Later steps of a cross-attention cache add the key mask as 0 / -inf scores inside the
    score product; a row without keys still attends to nothing, and rows with keys are unchanged
    by an empty one beside them (``empty_rows`` is kept only when some row is empty)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    memory, mask = torch.randn(B, S, D), _mask()
    query = torch.randn(B, queries, D)
    with torch.no_grad():
        _, _, cache = mha(query[:, :1], memory, memory, key_mask=mask, cache={}, static_kv=True)
        assert cache["empty_rows"] is None and cache["bias"].shape == (B, H, 1, S)
        expected_bias = torch.zeros(B, 1, 1, S).masked_fill(~mask[:, None, None], float("-inf")).expand(B, H, 1, S)
        assert torch.equal(cache["bias"], expected_bias)
        stepped, _, _ = mha(query, None, None, cache=cache, static_kv=True)
        torch.testing.assert_close(stepped, mha(query, memory, memory, key_mask=mask)[0], atol=1e-6, rtol=1e-5)
        empty = mask.clone()
        empty[1] = False
        _, _, cache = mha(query[:, :1], memory, memory, key_mask=empty, cache={}, static_kv=True)
        assert cache["empty_rows"] is not None
        stepped, _, _ = mha(query, None, None, cache=cache, static_kv=True)
    torch.testing.assert_close(stepped[1], mha.out_proj.bias.expand(queries, D))
    torch.testing.assert_close(stepped[[0, 2]], mha(query, memory, memory, key_mask=mask)[0][[0, 2]], atol=1e-6, rtol=1e-5)


def test_mha_heads_must_divide():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, 3)


def test_embeddings():
    torch.manual_seed(0)
    token = TokenEmbedding(11, 8, pad_id=0, scale=True)
    assert torch.all(token.weight[0] == 0)
    ids = torch.tensor([[1, 2, 0]])
    torch.testing.assert_close(token(ids), token.weight[ids] * math.sqrt(8))

    sinus = SinusoidalPositionalEmbedding(8, 16)
    torch.testing.assert_close(sinus(3, offset=2), sinus(5)[2:])
    torch.testing.assert_close(sinus(1)[0], torch.tensor([0.0, 1.0] * 4))
    learned = LearnedPositionalEmbedding(8, 16)
    assert learned(4, offset=1).shape == (4, 8)
    for module in (sinus, learned):
        with pytest.raises(ValueError, match="model.max_positions"):
            module(4, offset=13)

    emb = Embeddings(11, 8, pad_id=0, positional="sinusoidal", max_positions=16, scale=True)
    full = emb(torch.tensor([[3, 4, 5]]))
    torch.testing.assert_close(emb(torch.tensor([[5]]), offset=2), full[:, 2:])
    torch.testing.assert_close(full, emb.token(torch.tensor([[3, 4, 5]])) + sinus(3))
    assert Embeddings(11, 8, 0, positional="none").position is None
    with pytest.raises(ValueError, match="model.positional"):
        Embeddings(11, 8, 0, positional="rotary")


# ----------------------------------------------------------------------------- BiDAF attention flow
def test_attention_flow_reads_only_the_question_and_context_it_is_given():
    from s2s_tasks.nn.attention_flow import AttentionFlow

    torch.manual_seed(0)
    flow = AttentionFlow(8)
    states = torch.randn(2, 10, 8)
    question = torch.zeros(2, 10, dtype=torch.bool)
    question[:, 1:4] = True
    context = torch.zeros(2, 10, dtype=torch.bool)
    context[0, 5:9] = True
    context[1, 5:7] = True
    out = flow(states, question, context)
    assert out.shape == (2, 10, 32)
    assert torch.equal(out[..., :8], states)
    # a position that is neither question nor context (here <s>, <sep>, </s>, padding) changes nothing
    # at the context rows; a question position does
    changed = states.clone()
    changed[:, [0, 4, 9]] += 5.0
    changed[1, 7:9] -= 3.0  # row 1's padding
    rows = context
    assert torch.allclose(flow(changed, question, context)[rows], out[rows], atol=1e-6)
    changed[:, 2] += 1.0
    assert not torch.allclose(flow(changed, question, context)[rows], out[rows], atol=1e-3)
    # context-to-question attention is a convex combination of question states only
    assert out[0, 5, 8:16].norm() <= states[0, 1:4].norm(dim=-1).max() + 1e-5


def test_masked_lstm_outputs_do_not_depend_on_padding():
    from s2s_tasks.nn.attention_flow import MaskedLSTM

    torch.manual_seed(0)
    rnn = MaskedLSTM(6, 8, num_layers=2)
    features = torch.randn(1, 5, 6)
    mask = torch.tensor([[True, True, True, False, False]])
    padded = features.clone()
    padded[:, 3:] = 100.0
    short = rnn(features[:, :3], mask[:, :3])
    assert torch.allclose(rnn(features, mask)[:, :3], short, atol=1e-6)
    assert torch.allclose(rnn(padded, mask)[:, :3], short, atol=1e-6)
    assert torch.equal(rnn(padded, mask)[:, 3:], torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="even hidden size"):
        MaskedLSTM(6, 7)
