"""The optimizer every task trains with: torch's fused AdamW where the device has the kernel, with
the same updates as the default implementation."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from s2s_tasks.module import BaseModule
from s2s_tasks.nn.seq2seq import build_seq2seq
from s2s_tasks.optim import adamw, fused_adamw_supported
from s2s_tasks.tasks.translation.model import TranslationModule


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(1)
    for _ in range(steps):
        src = torch.randint(4, 50, (3, 7))
        tgt = torch.randint(4, 50, (3, 6))
        logits = model(src, torch.ones_like(src, dtype=torch.bool), tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_seq2seq(vocab_size=50, pad_id=0, d_model=16, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                         ffn_dim=32, dropout=0.0)


def _decay_groups(model: torch.nn.Module) -> list:
    return [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]


@pytest.mark.skipif(not fused_adamw_supported([torch.zeros(1)]), reason="this torch has no fused AdamW on the CPU")
def test_fused_adamw_on_the_cpu_updates_as_the_default_implementation():
    # in float64: in float32 the two differ by rounding, which Adam amplifies up to the learning
    # rate on weights whose gradients are near eps (0.7% of them by 5e-3 after 5 steps here)
    fused_model, loop_model = _model().double(), _model().double()
    fused = adamw(_decay_groups(fused_model), lr=1e-2, betas=(0.9, 0.98))
    assert fused.defaults["fused"]
    loop = torch.optim.AdamW(_decay_groups(loop_model), lr=1e-2, betas=(0.9, 0.98), foreach=False)
    start = torch.cat([p.detach().flatten() for p in _model().double().parameters()])
    after_fused, after_loop = _train(fused_model, fused), _train(loop_model, loop)
    assert (after_fused - start).abs().max() > 1e-3  # the weights moved
    torch.testing.assert_close(after_fused, after_loop, rtol=0, atol=1e-9)


def test_an_explicit_implementation_is_kept_and_unsupported_devices_fall_back():
    params = list(_model().parameters())
    assert not adamw(params, lr=1e-3, foreach=False).defaults["fused"]
    assert not adamw(params, lr=1e-3, fused=False).defaults["fused"]
    assert not fused_adamw_supported([torch.zeros(1, device="meta")])
    assert not fused_adamw_supported([])


def test_the_modules_optimizer_is_fused_with_decay_groups():
    model = TranslationModule(vocab_size=50, pad_id=0, d_model=16, num_encoder_layers=1, num_decoder_layers=1,
                              num_heads=2, ffn_dim=32, weight_decay=0.01, warmup_steps=2)
    optimizer = model.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] == fused_adamw_supported([torch.zeros(1)])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


class _TinyModule(BaseModule):
    """A linear layer with a large loss, so every step's gradient norm is far above the clip value
    (the step computes them: a step pre-hook would run before the gradients exist)."""

    def __init__(self) -> None:
        hparams = dict(learning_rate=1e-2, weight_decay=0.0, adam_betas=(0.9, 0.98), warmup_steps=1,
                       lr_schedule="constant", min_lr_ratio=0.0)
        super().__init__(**hparams)
        self.save_hyperparameters(hparams)
        self.layer = torch.nn.Linear(4, 4)
        self.norms_at_step: list = []

    def training_step(self, batch, batch_idx):
        return 100 * self.layer(batch).float().pow(2).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4)

    def configure_callbacks(self):
        return []

    def configure_optimizers(self):
        config = super().configure_optimizers()
        config["optimizer"].register_step_post_hook(  # the gradients the step used
            lambda optimizer, args, kwargs: self.norms_at_step.append(
                float(torch.norm(torch.stack([p.grad.norm() for p in self.parameters()])))))
        return config


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gradients_are_clipped_before_the_fused_step(tmp_path, precision):
    model = _TinyModule()
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, gradient_clip_val=0.5, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model)
    assert trainer.optimizers[0].defaults["fused"] == fused_adamw_supported([torch.zeros(1)])
    assert len(model.norms_at_step) == 2 and all(norm <= 0.5 + 1e-4 for norm in model.norms_at_step), model.norms_at_step


def test_a_fused_step_marks_the_parameters_modified():
    # packed_linear keys its packed weights on the version counter (within a search), which torch's
    # fused kernel leaves unchanged: the optimizer bumps it itself
    params = list(_model().parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    versions = [p._version for p in params]
    adamw(params, lr=1e-3).step()
    assert all(p._version > v for p, v in zip(params, versions))


def test_packed_projection_decodes_with_the_weights_after_fused_steps():
    from s2s_tasks.nn.onednn_linear import apply_linear
    from s2s_tasks.nn.packed_linear import packed_projections

    layer = torch.nn.Linear(16, 40)
    layer.weight.grad, layer.bias.grad = torch.randn_like(layer.weight), torch.randn_like(layer.bias)
    optimizer = adamw(layer.parameters(), lr=1e-1)
    x = torch.randn(3, 16)
    with torch.no_grad(), packed_projections():  # one scope, as if the weights changed mid-search
        apply_linear(layer, x)  # packs the weights
        optimizer.step()
        torch.testing.assert_close(apply_linear(layer, x), torch.nn.functional.linear(x, layer.weight, layer.bias))
