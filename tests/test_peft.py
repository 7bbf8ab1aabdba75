"""Parameter-efficient fine-tuning: LoRA and bottleneck adapters start as the identity, keep the
incremental decoder equal to teacher forcing, train only themselves (and a task head), stay under
5% of the weights, and a checkpoint of the trained part alone predicts with the base it came from."""

import json
import os
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from helpers import quiet_trainer
from s2s_tasks.cli import main
from s2s_tasks.nn.peft import (
    BottleneckAdapter, LoRALinear, add_adapters, add_lora, count_parameters, freeze_base, peft_parameters,
)
from s2s_tasks.nn.seq2seq import build_seq2seq
from s2s_tasks.registry import get_task
from s2s_tasks.tasks.ner.data import NERDataModule
from s2s_tasks.tasks.ner.model import NERModule
from s2s_tasks.tasks.translation.data import TranslationDataModule
from s2s_tasks.tasks.translation.model import TranslationModule

pytestmark = pytest.mark.usefixtures("single_thread")

V = 41
TINY = dict(d_model=32, ffn_dim=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0)


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    """Tokenized splits cached under the test's directory, not the user's cache."""
    monkeypatch.setenv("S2S_TASKS_CACHE", str(tmp_path / "token-cache"))


def _network(architecture="transformer"):
    torch.manual_seed(0)
    return build_seq2seq(vocab_size=V, pad_id=0, architecture=architecture, **TINY).eval()


def _add(network, method):
    return add_lora(network, rank=4, alpha=8.0) if method == "lora" else add_adapters(network, bottleneck=8)


def _randomise_peft(network):
    """Move the PEFT weights off their identity start, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for _, param in peft_parameters(network):
            param.normal_(0.0, 0.2)


def _batch(batch=3, src_len=7, tgt_len=6):
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, V, (batch, src_len), generator=g)
    mask = torch.arange(src_len).unsqueeze(0) < torch.tensor([7, 3, 5][:batch]).unsqueeze(1)
    return src.masked_fill(~mask, 0), mask, torch.randint(3, V, (batch, tgt_len), generator=g)


def _sample(tmp_path, task, n):
    """The first ``n`` training and 20 validation records of a task's embedded sample, as files."""
    sample = get_task(task).classes()[1].sample_dir
    files = {}
    for split, count in (("train", n), ("validation", 20)):
        lines = (sample / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:count]
        path = tmp_path / f"{task}_{split}.jsonl"
        path.write_text("".join(lines), encoding="utf-8")
        files[f"{split}_file"] = str(path)
    return files


# ----------------------------------------------------------------------------- the building blocks
def test_lora_linear_starts_as_its_base_and_projects_any_rows():
    torch.manual_seed(0)
    base = nn.Linear(16, 48)
    lora = LoRALinear.from_linear(base, rank=4, alpha=8.0, dropout=0.3).eval()
    assert lora.weight is base.weight and lora.bias is base.bias  # the same parameters, not copies
    x = torch.randn(2, 5, 16)
    assert torch.equal(lora(x), base(x))  # B = 0
    with torch.no_grad():
        lora.lora_B.normal_()
    # W x + b + (alpha / r) B A x, also for a slice of the rows (a fused projection's part)
    expected = base(x) + 2.0 * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.forward_rows(x, slice(16, 48)), expected[..., 16:48])
    # the plain layer's state dict loads as it is: only the LoRA tensors are new
    missing, unexpected = lora.load_state_dict(nn.Linear(16, 48).state_dict(), strict=False)
    assert sorted(missing) == ["lora_A", "lora_B"] and not unexpected


def test_adapter_starts_as_the_identity():
    adapter = BottleneckAdapter(32, 8)
    h = torch.randn(2, 3, 32)
    assert torch.equal(adapter(h), h)


def test_freeze_base_leaves_peft_kept_modules_and_optionally_norms_trainable():
    network = _network()
    add_lora(network, rank=2, targets=["attention"])
    head = nn.Linear(32, 5)
    model = nn.ModuleDict({"network": network, "head": head})
    freeze_base(model, keep=[head])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    peft = {f"network.{name}" for name, _ in peft_parameters(network)}
    assert trainable == peft | {"head.weight", "head.bias"}
    assert all("attn" in name for name in peft)  # targets=["attention"]: no FFN layer adapted
    freeze_base(model, keep=[head], train_norms=True)
    norms = {name for name, p in model.named_parameters() if p.requires_grad} - trainable
    assert norms and all("norm" in name for name in norms)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_adapted_network_starts_equal_and_keeps_the_weight_names(method):
    network = _network()
    src, mask, tgt = _batch()
    with torch.no_grad():
        before = network(src, mask, tgt)
    names = set(network.state_dict())
    assert _add(network, method)
    with torch.no_grad():
        torch.testing.assert_close(network(src, mask, tgt), before, atol=0, rtol=0)
    added = set(network.state_dict()) - names
    assert names <= set(network.state_dict()) and added == {name for name, _ in peft_parameters(network)}
    assert all(("lora_" in name) if method == "lora" else ("_adapter." in name) for name in added)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_incremental_decoding_equals_teacher_forcing(method):
    network = _network()
    _add(network, method)
    _randomise_peft(network)
    src, mask, tgt = _batch()
    with torch.no_grad():
        enc_out = network.encode(src, mask)
        forced = network.decoder(tgt, enc_out)
        plain = build_seq2seq(vocab_size=V, pad_id=0, **TINY).eval()
        plain.load_state_dict(network.state_dict(), strict=False)
        assert not torch.allclose(plain(src, mask, tgt), forced, atol=1e-3)  # the PEFT weights take part
        cache, steps = None, []
        for t in range(tgt.size(1)):
            logits, cache = network.decoder.step(tgt[:, t], enc_out, cache)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), forced, atol=1e-5, rtol=1e-5)


def test_lora_on_rnn_linears_and_adapters_need_transformer_layers():
    network = _network("rnn")
    adapted = add_lora(network, rank=2, alpha=4.0)
    assert "decoder.attention.key_layer" in adapted and "decoder.att_vector_layer" in adapted
    _randomise_peft(network)
    src, mask, tgt = _batch()
    with torch.no_grad():
        enc_out = network.encode(src, mask)
        forced = network.decoder(tgt, enc_out)
        cache, steps = None, []
        for t in range(tgt.size(1)):
            logits, cache = network.decoder.step(tgt[:, t], enc_out, cache)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), forced, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no such sublayers: use LoRA"):
        add_adapters(_network("rnn"))


@pytest.mark.parametrize("settings, trained", [
    (dict(peft="lora"), 233_472),
    (dict(peft="lora", lora_targets=["attention"]), 110_592),
    (dict(peft="adapter"), 397_056),
])
def test_trainable_share_of_a_realistic_model_is_under_5_percent(settings, trained):
    # transformer-small with a vocabulary of 8,000: d_model 256, 3+3 layers, FFN 1024; LoRA rank 8, adapters of 64
    model = TranslationModule(vocab_size=8000, lora_rank=8, adapter_size=64, **settings)
    trainable, total = count_parameters(model)
    added = sum(p.numel() for _, p in peft_parameters(model))
    assert trainable == added == trained  # the numbers the README gives
    assert total - added == 7_586_624
    assert trainable / total < 0.05


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_training_changes_only_the_peft_weights(tmp_path, method):
    pl.seed_everything(0)
    data = TranslationDataModule(**_sample(tmp_path, "translation", 64), tokenizer_vocab_size=200, max_tokens=400)
    model = TranslationModule(vocab_size=data.vocab_size, pad_id=data.pad_id, **TINY, peft=method, lora_rank=4,
                              adapter_size=8, learning_rate=1e-2, warmup_steps=1, log_examples=0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    peft_names = {name for name, _ in peft_parameters(model)}
    quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(model, datamodule=data)
    after = model.state_dict()
    assert {name for name in after if not torch.equal(after[name], before[name])} == peft_names
    optimised = {id(p) for group in model.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for _, p in peft_parameters(model)}


def test_encoder_head_task_trains_lora_and_its_head(tmp_path):
    pl.seed_everything(0)
    data = NERDataModule(**_sample(tmp_path, "ner", 160), tokenizer_vocab_size=300, max_tokens=800)
    model = NERModule(vocab_size=data.vocab_size, pad_id=data.pad_id, num_labels=data.num_labels, **TINY, peft="lora",
                      lora_rank=4, learning_rate=1e-2, warmup_steps=1, log_examples=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    head = {name for name, _ in model.task_head.named_parameters(prefix="task_head")}
    assert trainable == head | {name for name, _ in peft_parameters(model)}
    encoder_before = {name: value.clone() for name, value in model.encoder.state_dict().items() if "lora_" not in name}
    trainer = quiet_trainer(tmp_path, max_epochs=4, limit_val_batches=2)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    assert after < 0.8 * before, (before, after)
    assert all(torch.equal(model.encoder.state_dict()[name], value) for name, value in encoder_before.items())


# ----------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(peft="prefix"), r"model.peft must be one of \['lora', 'adapter'\]"),
    (dict(peft="lora", lora_rank=0), "model.lora_rank must be at least 1"),
    (dict(peft="lora", lora_targets=["attention", "mlp"]), r"model.lora_targets must name some of \['attention', 'ffn'\]"),
    (dict(peft="adapter", adapter_size=0), "model.adapter_size must be at least 1"),
    (dict(peft="adapter", architecture="rnn"), "model.peft adapter .* use --model.peft lora for RNN models"),
    (dict(save_trainable_only=True), "model.save_trainable_only needs model.peft"),
])
def test_bad_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TranslationModule(vocab_size=V, **{**TINY, **kwargs})


def test_lora_on_an_rnn_encoder_head_has_nothing_to_adapt():
    with pytest.raises(ValueError, match="model.peft lora: this network has no layer .*an RNN encoder"):
        NERModule(vocab_size=V, num_labels=5, architecture="rnn", **TINY, peft="lora")


# ----------------------------------------------------------------------------- checkpoints through the CLI
def _cli(tmp_path, files, *args):
    return main([
        *args, "--task", "translation", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data.cache_dir", str(tmp_path / "hf-cache"), *files,
    ])


def _fit(tmp_path, files, run, *args):
    checkpoints = tmp_path / run
    callbacks = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(checkpoints), "save_last": True, "save_top_k": 0}}]
    cli = _cli(tmp_path, files, "fit", "--trainer.callbacks", json.dumps(callbacks), "--trainer.max_epochs", "1",
               "--trainer.limit_val_batches", "1", "--model.warmup_steps", "1", "--model.learning_rate", "0.01",
               "--model.log_examples", "0", *args)
    return cli, str(checkpoints / "last.ckpt")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny base model, and its LoRA fine-tuning saved with ``save_trainable_only``: (tmp dir,
    data flags, base checkpoint, small checkpoint, the fine-tuning's CLI with the model in memory)."""
    tmp_path = tmp_path_factory.mktemp("lora_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("S2S_TASKS_CACHE", str(tmp_path / "token-cache"))
        patch.setattr(sys, "argv", ["s2s-tasks"])  # as conftest's _clean_argv, which is per test
        sample = _sample(tmp_path, "translation", 96)
        data = ["--data.train_file", sample["train_file"], "--data.validation_file", sample["validation_file"],
                "--data.tokenizer_vocab_size", "200", "--data.max_tokens", "600"]
        tiny = [f"--model.{key}={value}" for key, value in TINY.items()] + ["--model.val_generation.max_length", "8"]
        _, base = _fit(tmp_path, data + tiny, "base", "--trainer.limit_train_batches", "3")
        # the sizes come from the base, model.peft from the command line
        tuned, small = _fit(tmp_path, data, "lora", "--trainer.limit_train_batches", "3", *_lora_flags(base))
    return tmp_path, data, base, small, tuned


def _lora_flags(base):
    return ["--model.init_from", base, "--model.peft", "lora", "--model.lora_rank", "2", "--model.save_trainable_only", "true"]


def _predict_flags(tmp_path):
    inputs = tmp_path / "input.txt"
    inputs.write_text("the cat sat on the mat\nwe go home\n", encoding="utf-8")
    return ["--data.predict_file", str(inputs), "--predictions.output_file", str(tmp_path / "predictions.jsonl"),
            "--model.generation.max_length", "8", "--model.generation.strategy", "greedy"]


def test_trainable_only_checkpoint_is_small_and_predicts_like_the_fine_tuned_model(lora_run, tmp_path):
    _, _, base, small, tuned = lora_run
    assert tuned.model.hparams.d_model == 32 and tuned.model.hparams.peft == "lora"
    stored = torch.load(small, weights_only=True)
    assert set(stored["state_dict"]) == {name for name, _ in peft_parameters(tuned.model)}
    assert stored["s2s_tasks"]["trainable_only"]["base"] == base
    assert os.path.getsize(small) < 0.2 * os.path.getsize(base)

    # predict from the small checkpoint and the base: the fine-tuned weights, so its predictions
    flags = _predict_flags(tmp_path)
    predicted = _cli(tmp_path, flags, "predict", "--ckpt_path", small, "--model.init_from", base)
    restored, fine_tuned = predicted.model.state_dict(), tuned.model.state_dict()
    assert set(restored) == set(fine_tuned) and all(torch.equal(restored[k], fine_tuned[k]) for k in restored)
    output = tmp_path / "predictions.jsonl"
    from_checkpoint = output.read_text(encoding="utf-8")
    tuned.model.generation = predicted.model.generation
    predicted.trainer.predict(tuned.model, datamodule=predicted.datamodule, return_predictions=False)
    assert output.read_text(encoding="utf-8") == from_checkpoint and len(from_checkpoint.splitlines()) == 2


def test_trainable_only_checkpoint_needs_the_base_it_came_from(lora_run, tmp_path):
    _, _, base, small, _ = lora_run
    flags = _predict_flags(tmp_path)
    with pytest.raises(ValueError, match=f"add --model.init_from {base}"):
        _cli(tmp_path, flags, "predict", "--ckpt_path", small)
    other = torch.load(base, weights_only=True)
    other["state_dict"]["model.encoder.layers.0.ffn.net.0.weight"] += 0.01
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="is not the base this checkpoint was fine-tuned from"):
        _cli(tmp_path, flags, "predict", "--ckpt_path", small, "--model.init_from", str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match="holds only the weights trained by parameter-efficient fine-tuning"):
        _cli(tmp_path, flags, "predict", "--model.init_from", small)  # a partial checkpoint is no init_from


def test_fine_tuning_resumes_from_a_trainable_only_checkpoint(lora_run, tmp_path):
    _, data, base, small, tuned = lora_run
    resumed, last = _fit(tmp_path, data, "resumed", "--ckpt_path", small, "--trainer.limit_train_batches", "3",
                         "--trainer.max_epochs", "2", *_lora_flags(base))
    assert tuned.trainer.global_step == 3 and resumed.trainer.global_step == 6
    assert set(torch.load(last, weights_only=True)["state_dict"]) == {name for name, _ in peft_parameters(resumed.model)}
