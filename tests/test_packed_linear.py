"""The oneDNN-packed vocabulary projection (nn/packed_linear.py) and the beam-search cache reorder
that copies only filled positions into spare buffers (nn/types.reorder_kv_buffers): both must
give exactly what the plain code gives, follow weight updates, and stay out of autograd,
tracing, copying and pickling."""

import copy
import io
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.nn import EncoderOutput, TransformerDecoder
from s2s_tasks.nn import packed_linear
from s2s_tasks.generation import greedy_search
from s2s_tasks.nn.onednn_linear import apply_linear
from s2s_tasks.nn.packed_linear import packed_projections
from s2s_tasks.nn.types import reorder_kv_buffers

pytestmark = pytest.mark.usefixtures("single_thread")

needs_onednn = pytest.mark.skipif(not packed_linear._AVAILABLE, reason="this PyTorch build has no oneDNN linear ops")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_packed_projection_equals_the_layer(bias):
    torch.manual_seed(0)
    layer = nn.Linear(32, 300, bias=bias)
    x = torch.randn(5, 2, 32)
    with torch.no_grad(), packed_projections():
        for inputs in (x, x[:, :1], x.reshape(10, 32), x.transpose(0, 1)):  # 3-D, a non-contiguous slice, 2-D
            torch.testing.assert_close(apply_linear(layer, inputs), layer(inputs), atol=1e-5, rtol=1e-5)
        assert layer in packed_linear._PACKED  # the packed path ran (not the fallback)


@needs_onednn
def test_packed_rows_equal_the_weight_slices_and_follow_the_weights():
    """Attention projects queries with the first third of its fused Q/K/V matrix: each row range
    is packed once, beside the others, and all are re-made when the weights change."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 48)
    x = torch.randn(3, 2, 16)
    with torch.no_grad():
        for _ in range(2):  # the second time with new weights
            with packed_projections():
                for rows in (slice(0, 16), slice(16, 48), None):
                    expected = layer(x) if rows is None else F.linear(x, layer.weight[rows], layer.bias[rows])
                    torch.testing.assert_close(apply_linear(layer, x, rows), expected, atol=1e-5, rtol=1e-5)
                assert set(packed_linear._PACKED[layer].packs) == {(0, 16), (16, 48), (0, 48)}
            layer.weight.data.copy_(torch.randn_like(layer.weight))  # no version counter moves


@needs_onednn
def test_a_search_packs_every_linear_layer_of_the_decoder_and_decodes_as_without(monkeypatch):
    torch.manual_seed(0)
    decoder = TransformerDecoder(30, 16, 4, 32, 2, dropout=0.0).eval()
    enc_out = EncoderOutput(states=torch.randn(3, 5, 16), mask=torch.ones(3, 5, dtype=torch.bool))
    kwargs = dict(bos_id=1, eos_id=2, max_lengths=6)
    packed = greedy_search(decoder, enc_out, **kwargs)
    layers = [m for m in decoder.modules() if type(m) is nn.Linear]
    assert len(layers) == 2 * 6 + 1 and all(m in packed_linear._PACKED for m in layers)
    monkeypatch.setattr(packed_linear, "_AVAILABLE", False)
    plain = greedy_search(decoder, enc_out, **kwargs)
    assert packed.tokens == plain.tokens
    torch.testing.assert_close(packed.scores, plain.scores, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_packing_only_inside_a_scope_and_reused_by_the_next_while_the_weights_stay():
    layer = nn.Linear(8, 20)
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(apply_linear(layer, x), layer(x))
        assert layer not in packed_linear._PACKED  # outside any search: never packed
        with packed_projections():
            with packed_projections():  # scopes nest
                apply_linear(layer, x)
            first = packed_linear._PACKED[layer].packs[(0, 20)]
        assert packed_linear._OPEN_SCOPES == 0
        with packed_projections():  # the next search: unchanged weights, the same packing
            torch.testing.assert_close(apply_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)
            assert packed_linear._PACKED[layer].packs[(0, 20)] is first
        for value in (layer.weight, layer.bias):  # no version counter moves
            value.data.copy_(torch.randn_like(value))
            with packed_projections():
                torch.testing.assert_close(apply_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)
                assert packed_linear._PACKED[layer].packs[(0, 20)] is not first
                first = packed_linear._PACKED[layer].packs[(0, 20)]


@needs_onednn
def test_packed_projection_follows_weight_updates():
    torch.manual_seed(0)
    layer = nn.Linear(16, 50)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    x = torch.randn(4, 16)
    for _ in range(3):
        with torch.no_grad(), packed_projections():
            torch.testing.assert_close(apply_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)
            assert layer in packed_linear._PACKED
        optimizer.zero_grad()
        layer(x).pow(2).sum().backward()
        optimizer.step()
    with torch.no_grad(), packed_projections():
        apply_linear(layer, x)
        # within one scope, in-place changes that move the version counter repack
        layer.weight.copy_(torch.randn_like(layer.weight))
        torch.testing.assert_close(apply_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)
        layer.bias = nn.Parameter(torch.randn(50))  # a new tensor altogether
        torch.testing.assert_close(apply_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)


def test_plain_layer_where_packing_does_not_apply():
    torch.manual_seed(0)
    layer = nn.Linear(8, 20)
    x = torch.randn(3, 8)
    out = apply_linear(layer, x)  # autograd on: the layer itself, gradients flow
    assert out.requires_grad
    out.sum().backward()
    assert layer.weight.grad is not None
    assert layer not in packed_linear._PACKED
    with torch.no_grad():
        double = copy.deepcopy(layer).double()
        assert apply_linear(double, x.double()).dtype == torch.float64
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert apply_linear(layer, x).dtype == torch.bfloat16
    assert double not in packed_linear._PACKED

    class Projection(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(8, 20)

        def forward(self, x):
            return apply_linear(self.out, x)

    module = Projection().eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
    assert "mkldnn" not in str(traced.graph)  # exports see a plain linear
    torch.testing.assert_close(traced(x), module.out(x))


@needs_onednn
def test_packed_projection_never_reaches_copies_or_pickles():
    layer = nn.Linear(8, 20)
    with torch.no_grad(), packed_projections():
        apply_linear(layer, torch.randn(2, 8))
        copy.deepcopy(layer)
        torch.save(layer, io.BytesIO())  # an opaque oneDNN tensor on the module could not be pickled
        assert layer in packed_linear._PACKED
        entries, alive = len(packed_linear._PACKED), weakref.ref(layer)
        del layer
        gc.collect()
        assert alive() is None and len(packed_linear._PACKED) <= entries - 1  # the cache keeps no module alive


@needs_onednn
def test_each_search_decodes_with_the_weights_it_finds():
    """Weights changed between two searches without moving their version counters (as Lightning's
    weight-averaging callbacks swap averaged weights in with ``param.data.copy_``) are the ones
    the second search uses: it decodes exactly as a copy of the decoder that never packed."""
    torch.manual_seed(0)
    decoder = TransformerDecoder(30, 16, 4, 32, 1, dropout=0.0).eval()
    enc_out = EncoderOutput(states=torch.randn(3, 5, 16), mask=torch.ones(3, 5, dtype=torch.bool))
    kwargs = dict(bos_id=1, eos_id=2, max_lengths=6)
    first = greedy_search(decoder, enc_out, **kwargs)
    versions = [p._version for p in decoder.parameters()]
    for p in decoder.parameters():  # every layer's weights, packed by the first search
        p.data.copy_(torch.randn_like(p) * 3)
    assert [p._version for p in decoder.parameters()] == versions  # what the version key cannot see
    fresh = copy.deepcopy(decoder)  # its own weights, which no search has packed
    second, expected = greedy_search(decoder, enc_out, **kwargs), greedy_search(fresh, enc_out, **kwargs)
    assert second.tokens == expected.tokens and second.tokens != first.tokens
    torch.testing.assert_close(second.scores, expected.scores)


def test_reorder_copies_filled_positions_into_spare_buffers():
    torch.manual_seed(0)
    k, v = torch.randn(4, 2, 16, 3), torch.randn(4, 2, 16, 3)
    cache = {"k": k.clone(), "v": v.clone(), "filled": 5}
    rows = torch.tensor([3, 3, 0, 1])
    once = reorder_kv_buffers(cache, rows)
    torch.testing.assert_close(once["k"][:, :, :5], k[rows, :, :5])
    torch.testing.assert_close(once["v"][:, :, :5], v[rows, :, :5])
    assert once["filled"] == 5 and once["spare"][0].data_ptr() == cache["k"].data_ptr()
    back = torch.tensor([2, 0, 1, 3])
    twice = reorder_kv_buffers(once, back)  # written into the first cache's buffers: no new ones
    assert twice["k"].data_ptr() == cache["k"].data_ptr()
    torch.testing.assert_close(twice["k"][:, :, :5], k[rows[back], :, :5])
    torch.testing.assert_close(twice["v"][:, :, :5], v[rows[back], :, :5])
    fewer = reorder_kv_buffers(twice, torch.tensor([1, 2]))  # another batch size: new buffers
    assert fewer["k"].shape == (2, 2, 16, 3)
    torch.testing.assert_close(fewer["k"][:, :, :5], k[rows[back][[1, 2]], :, :5])
    # Under autograd (out= records no gradient) the rows are gathered into new tensors that keep
    # the graph, and no spare buffers are made or kept.
    kg = k.clone().requires_grad_()
    graded = reorder_kv_buffers({"k": kg, "v": v.clone(), "filled": 5, "spare": once["spare"]}, rows)
    assert "spare" not in graded and graded["k"].requires_grad
    graded["k"][:, :, :5].sum().backward()
    torch.testing.assert_close(kg.grad[:, 0, 0, 0], torch.tensor([1.0, 1.0, 0.0, 2.0]))


def test_reorder_moves_few_rows_in_place():
    """When at most half of the rows move (most beams keep theirs), only those are copied, within
    the buffers themselves; a swap reads both rows before writing either."""
    torch.manual_seed(0)
    k, v = torch.randn(4, 2, 16, 3), torch.randn(4, 2, 16, 3)
    cache = {"k": k.clone(), "v": v.clone(), "filled": 5}
    buffers = (cache["k"], cache["v"])
    expected_k, expected_v = k.clone(), v.clone()
    for rows in ([1, 0, 2, 3], [0, 0, 2, 3], [0, 1, 2, 3]):
        rows = torch.tensor(rows)
        cache = reorder_kv_buffers(cache, rows)
        expected_k[:, :, :5], expected_v[:, :, :5] = expected_k[rows, :, :5], expected_v[rows, :, :5]
        assert cache["k"] is buffers[0] and cache["v"] is buffers[1] and "spare" not in cache
        torch.testing.assert_close(cache["k"], expected_k)  # positions past "filled" untouched too
        torch.testing.assert_close(cache["v"], expected_v)


def test_reorder_cache_plans_the_moved_rows_once_for_all_layers(monkeypatch):
    from s2s_tasks.nn import types as cache_types

    torch.manual_seed(0)
    layers = [{"k": torch.randn(4, 2, 8, 3), "v": torch.randn(4, 2, 8, 3), "filled": 3} for _ in range(3)]
    expected = [(layer["k"][[0, 0, 2, 3]].clone(), layer["v"][[0, 0, 2, 3]].clone()) for layer in layers]
    plans = []
    counting = lambda rows: plans.append(rows) or original(rows)  # noqa: E731
    original = cache_types._moved_rows
    monkeypatch.setattr(cache_types, "_moved_rows", counting)
    out = cache_types.reorder_cache({"layers": layers}, torch.tensor([0, 0, 2, 3]))
    assert len(plans) == 1  # one row moves: planned once, copied in place in each layer
    for layer, before, (k, v) in zip(out["layers"], layers, expected):
        assert layer["k"] is before["k"]
        torch.testing.assert_close(layer["k"][:, :, :3], k[:, :, :3])
        torch.testing.assert_close(layer["v"][:, :, :3], v[:, :, :3])


@pytest.mark.parametrize("moves", ["permutation", "one row"])
def test_decoding_with_a_reorder_after_every_step_matches_teacher_forcing(moves):
    """Many reorders in a row (spare buffers swapping, rows moved in place, the capacity doubling
    past 16 positions) give the logits of teacher forcing on the correspondingly permuted
    sequences."""
    torch.manual_seed(0)
    batch, steps, vocab = 4, 20, 11
    decoder = TransformerDecoder(vocab, 16, 4, 32, 2, dropout=0.0).eval()
    mask = torch.ones(batch, 6, dtype=torch.bool)
    enc_out = EncoderOutput(states=torch.randn(batch, 6, 16), mask=mask)
    tgt = torch.randint(1, vocab, (batch, steps))
    order = torch.arange(batch)
    cache = None
    with torch.no_grad():
        full = decoder(tgt, enc_out)
        for t in range(steps):
            logits, cache = decoder.step(tgt[order, t], enc_out.index_select(order), cache)
            torch.testing.assert_close(logits, full[order, t], atol=1e-5, rtol=1e-5)
            if moves == "permutation":
                perm = torch.randperm(batch)
            else:  # one beam takes another's place: the in-place path
                perm = torch.arange(batch)
                perm[t % batch] = (t + 1) % batch
            cache = decoder.reorder_cache(cache, perm)
            order = order[perm]
