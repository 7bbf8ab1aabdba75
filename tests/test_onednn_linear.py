"""Float32 linear layers and products through oneDNN (nn/onednn_linear.py): the same values and
gradients as ``F.linear`` / ``torch.mm`` to float32 rounding, and the plain ops wherever oneDNN
must not be used (other dtypes, autocast, tracing, switched off)."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.nn import onednn_linear
from s2s_tasks.nn.onednn_linear import apply_linear, linear, matmul

pytestmark = pytest.mark.usefixtures("single_thread")

needs_onednn = pytest.mark.skipif(not onednn_linear.ENABLED, reason="this PyTorch build has no oneDNN linear ops")


def _reference(x, weight, bias, grad):
    """Outputs and gradients of F.linear in float64 (exact to well below float32 rounding)."""
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = F.linear(*leaves) if bias is not None else F.linear(*leaves, None)
    out.backward(grad.double())
    return out, [t.grad for t in leaves]


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12)])
def test_linear_values_and_gradients_equal_f_linear(bias, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(9, 12, requires_grad=True)
    b = torch.randn(9, requires_grad=True) if bias else None
    out = linear(x, weight, b)
    assert out.grad_fn is not None and "OneDNN" in type(out.grad_fn).__name__  # the oneDNN function ran
    grad = torch.randn(out.shape)
    out.backward(grad)
    expected, grads = _reference(x, weight, b, grad)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    for got, want in zip([t.grad for t in (x, weight, b) if t is not None], grads):
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-5)


@needs_onednn
def test_linear_only_the_gradients_asked_for_and_non_contiguous_inputs():
    torch.manual_seed(0)
    x = torch.randn(12, 6).t()  # (6, 12), a transposed view
    weight = torch.randn(9, 12, requires_grad=True)
    out = linear(x, weight)
    out.sum().backward()
    torch.testing.assert_close(out, F.linear(x, weight), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight.grad, torch.ones(6, 9).t() @ x, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no autograd node without gradients
        assert linear(x, weight).grad_fn is None


@needs_onednn
def test_matmul_equals_mm():
    torch.manual_seed(0)
    a, b = torch.randn(20, 16), torch.randn(16, 30)
    torch.testing.assert_close(matmul(a, b), a @ b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(matmul(b.t(), a.t()), b.t() @ a.t(), atol=1e-5, rtol=1e-5)  # strided operands


def test_plain_ops_where_onednn_does_not_apply(monkeypatch):
    torch.manual_seed(0)
    x, weight = torch.randn(4, 8), torch.randn(5, 8, requires_grad=True)
    out = linear(x.double(), weight.detach().double().requires_grad_())  # float64: F.linear itself
    assert "OneDNN" not in type(out.grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: F.linear, in bfloat16
        assert linear(x, weight).dtype == torch.bfloat16
    monkeypatch.setattr(onednn_linear, "ENABLED", False)  # S2S_TASKS_ONEDNN_LINEAR=0
    out = linear(x, weight)
    assert "OneDNN" not in type(out.grad_fn).__name__
    torch.testing.assert_close(matmul(x, weight.detach().t()), x @ weight.detach().t())


def test_traced_graphs_see_a_plain_linear():
    class Projection(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(8, 20)

        def forward(self, x):
            return apply_linear(self.out, x, slice(0, 10))

    module, x = Projection().eval(), torch.randn(3, 8)
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), module.out(x)[:, :10])


@needs_onednn
def test_double_backward_is_refused():
    x = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(2, 4, requires_grad=True)
    (grad_x,) = torch.autograd.grad(linear(x, weight).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):  # first-order gradients only, as the module docstring says
        grad_x.sum().backward()


@needs_onednn
def test_a_transformer_training_step_matches_the_mkl_path(monkeypatch):
    """The same loss and gradients, to float32 rounding, as with oneDNN switched off."""
    from s2s_tasks.nn.linear_cross_entropy import decoder_losses
    from s2s_tasks.nn.seq2seq import build_seq2seq

    torch.manual_seed(0)
    model = build_seq2seq(vocab_size=50, pad_id=0, architecture="transformer", d_model=32, num_encoder_layers=2,
                          num_decoder_layers=2, num_heads=4, ffn_dim=64, dropout=0.0)
    src = torch.randint(4, 50, (3, 7))
    mask = torch.ones_like(src, dtype=torch.bool)
    tgt = torch.randint(4, 50, (3, 6))

    def step():
        model.zero_grad()
        loss, _, _ = decoder_losses(model.decoder, model.encode(src, mask), tgt[:, :-1], tgt[:, 1:], pad_id=0, label_smoothing=0.1)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    loss, grads = step()
    monkeypatch.setattr(onednn_linear, "ENABLED", False)
    plain_loss, plain_grads = step()
    torch.testing.assert_close(loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_layers_with_hooks_or_their_own_forward_run_their_call():
    """A hook on a layer still runs (and torch's pruning, whose pre-hook recomputes the weight,
    still prunes); a subclass keeps its forward."""
    import torch.nn.utils.prune as prune

    torch.manual_seed(0)
    x = torch.randn(3, 8)
    layer = nn.Linear(8, 6)
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    apply_linear(layer, x)
    assert seen == [torch.Size([3, 6])]
    handle.remove()
    prune.l1_unstructured(layer, "weight", amount=0.5)
    with torch.no_grad():
        layer.weight_orig.mul_(2)  # the pruned weight is recomputed only by the pre-hook of a call
    out = apply_linear(layer, x)
    assert out.grad_fn is None or "OneDNN" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.linear(x, layer.weight_orig * layer.weight_mask, layer.bias))

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    doubled = Doubled(8, 6)
    torch.testing.assert_close(apply_linear(doubled, x), 2 * F.linear(x, doubled.weight, doubled.bias))


def test_the_environment_switch_keeps_mkl_everywhere():
    import os
    import subprocess
    import sys

    check = ("from s2s_tasks.nn import onednn_linear, packed_linear; "
             "print(onednn_linear.ENABLED, packed_linear._AVAILABLE)")
    for value, expected in (("0", "False False"), ("1", f"{onednn_linear.ENABLED} {onednn_linear.ENABLED}")):
        env = {**os.environ, "S2S_TASKS_ONEDNN_LINEAR": value}
        out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == expected.split(), out.stderr


@pytest.mark.parametrize("packed", [False, True])
def test_apply_linear_with_relu_equals_the_layer_then_relu(packed):
    """FeedForward's first layer: inside a search oneDNN applies the ReLU in the product, else
    ``relu`` follows; both give ``relu(layer(x))`` (gradients too, outside a search)."""
    from s2s_tasks.nn import packed_linear
    from s2s_tasks.nn.encoders import FeedForward

    torch.manual_seed(0)
    layer = nn.Linear(16, 40)
    x = torch.randn(3, 2, 16)
    with torch.no_grad(), (packed_linear.packed_projections() if packed else contextlib.nullcontext()):
        torch.testing.assert_close(apply_linear(layer, x, activation="relu"), F.relu(layer(x)), atol=1e-5, rtol=1e-5)
        if packed and packed_linear._AVAILABLE:
            assert layer in packed_linear._PACKED  # the fused, packed path ran
        ffn = FeedForward(16, 40).eval()
        first, _, _, second = ffn.net
        torch.testing.assert_close(ffn(x), second(F.relu(first(x))), atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_()
    apply_linear(layer, xg, activation="relu").sum().backward()
    expected = torch.autograd.grad(F.relu(layer(x.clone().requires_grad_())).sum(), layer.weight)[0]
    torch.testing.assert_close(layer.weight.grad, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        apply_linear(layer, x, activation="gelu")
