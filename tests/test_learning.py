"""A tiny model on the embedded sample data must really learn: validation loss falls clearly."""

import pytorch_lightning as pl
import torch

from helpers import validate_fit_validate

from s2s_tasks.registry import get_task


def test_tiny_transformer_lowers_validation_loss_on_sample_translation(tmp_path):
    pl.seed_everything(0)
    module_class, datamodule_class = get_task("translation").classes()
    data = datamodule_class(tokenizer_vocab_size=400, max_tokens=1024, cache_dir=str(tmp_path / "cache"))
    model = module_class(
        vocab_size=data.vocab_size, pad_id=data.pad_id, d_model=64, ffn_dim=128, num_heads=2,
        num_encoder_layers=1, num_decoder_layers=1, dropout=0.0, learning_rate=3e-3, warmup_steps=20,
        log_examples=0,
    )
    before, after = validate_fit_validate(
        model, data, tmp_path, max_steps=400, limit_val_batches=2, max_epochs=10, check_val_every_n_epoch=10
    )
    assert after["val/loss"] < 0.5 * before["val/loss"], (before, after)
    assert after["val/chrf"] > before["val/chrf"] + 10, (before, after)
    assert torch.isfinite(torch.tensor(after["val/loss"]))
