"""The faster CPU dropout of s2s_tasks.nn.dropout keeps F.dropout's contract."""

import pytest
import torch

from s2s_tasks.nn.dropout import Dropout, drop_mask, dropout, keep_scale


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scaling(p):
    torch.manual_seed(0)
    x = torch.ones(200_003)  # not a multiple of the four lanes per random integer
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    # every lane position is equally likely to be dropped (no biased sign bit)
    lanes = (drop_mask(torch.Size([400_000]), p, x.device).view(-1, 4).float().mean(0))
    assert torch.all((lanes - p).abs() < 0.01)


def test_gradient_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25)
    y.sum().backward()
    expected = torch.where(y == 0, 0.0, 1 / 0.75)
    torch.testing.assert_close(x.grad, expected)


def test_eval_zero_p_and_seeding():
    x = torch.randn(8, 16)
    layer = Dropout(0.2)
    assert layer.eval()(x) is x
    assert dropout(x, 0.0) is x
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b)  # draws from torch's seeded default generator
    assert not torch.equal(a, layer(x))
    assert dropout(x.double(), 0.2).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_keep_scale_is_the_complement_of_the_drop_mask_in_the_input_dtype(dtype):
    shape = torch.Size([3, 1001])
    torch.manual_seed(5)
    drop = drop_mask(shape, 0.3, torch.device("cpu"))
    torch.manual_seed(5)
    keep = keep_scale(shape, 0.3, dtype, torch.device("cpu"))
    assert keep.dtype == dtype and keep.shape == shape
    expected = torch.where(drop, 0.0, 1 / 0.7).to(dtype)
    assert torch.equal(keep, expected)
    # reduced-precision activations stay in their dtype, forward and backward
    x = torch.randn(shape).to(dtype).requires_grad_()
    torch.manual_seed(5)
    y = dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    assert y.dtype == dtype and x.grad.dtype == dtype
    assert torch.equal(y, x.detach() * expected) and torch.equal(x.grad, expected)


def test_under_torch_compile_the_compiler_draws_the_mask():
    """Compiled, dropout is ``F.dropout``: inductor fuses the mask into one kernel, and our int16
    view of int64 draws broke AOT autograd's replay of aliased outputs ("setStorage: ... out of
    bounds", torch 2.13) on a Transformer encoder. A compiled forward and backward drop about
    ``p`` of the elements, scale the rest, and route gradients through the same mask."""
    from s2s_tasks.nn.encoders import TransformerEncoder

    torch.manual_seed(0)
    encoder = TransformerEncoder(50, 16, 2, 32, 1, dropout=0.1).train()
    src = torch.randint(4, 50, (2, 5))
    states = torch.compile(lambda s, m: encoder(s, m).states, backend="aot_eager")(src, src != 0)
    states.sum().backward()
    assert encoder.embed.token.weight.grad is not None

    x = torch.ones(64, 64, requires_grad=True)
    out = torch.compile(lambda t: dropout(t, 0.25, True) * 3.0, backend="aot_eager")(x)
    out.sum().backward()
    kept = out != 0
    assert 0.2 < 1 - kept.float().mean().item() < 0.3
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 3.0 / 0.75))
    torch.testing.assert_close(x.grad, kept.float() * 3.0 / 0.75)
