"""Character features of subword tokens (``model.char_cnn``, :mod:`s2s_tasks.nn.character`)."""

from __future__ import annotations

import pytest
import torch

from s2s_tasks.nn.character import SubwordCharacterCNN, spelling_table


def test_spelling_table_holds_each_entrys_bytes_plus_one():
    table = spelling_table(["<pad>", "\u2581the", "ing", "", "\u00e9t\u00e9"], max_chars=6)
    assert table.shape == (5, 6)
    assert table[1].tolist() == [0xE2 + 1, 0x96 + 1, 0x81 + 1, ord("t") + 1, ord("h") + 1, ord("e") + 1]  # \u2581 is 3 bytes
    assert table[2].tolist() == [ord("i") + 1, ord("n") + 1, ord("g") + 1, 0, 0, 0]
    assert table[3].tolist() == [0] * 6
    assert table[4].tolist() == [0xC3 + 1, 0xA9 + 1, ord("t") + 1, 0xC3 + 1, 0xA9 + 1, 0]
    assert table[0, :5].tolist() == [b + 1 for b in b"<pad>"]


def _one_token_at_a_time(cnn: SubwordCharacterCNN, ids: torch.Tensor) -> torch.Tensor:
    """The features computed per token, without the distinct-id shortcut."""
    rows = []
    for token in ids.reshape(-1).tolist():
        chars = cnn.spellings[token][None]
        h = torch.relu(cnn.conv(cnn.embed(chars).transpose(1, 2)))
        length = int((chars != 0).sum())
        rows.append(cnn.proj(h[:, :, :length].amax(2) if length else torch.zeros(1, h.size(1))))
    return torch.cat(rows).view(*ids.shape, -1)


def test_features_depend_on_the_spelling_and_equal_the_per_token_computation():
    torch.manual_seed(0)
    cnn = SubwordCharacterCNN(dim=8, filters=5, char_dim=4, width=3, max_chars=8).eval()
    cnn.set_vocabulary(["<pad>", "\u2581run", "ning", "\u2581runs", "\u2581run", "x"])
    ids = torch.tensor([[1, 2, 4, 0], [3, 5, 1, 1]])
    out = cnn(ids)
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(out, _one_token_at_a_time(cnn, ids))
    torch.testing.assert_close(out[0, 0], out[0, 2])  # ids 1 and 4 are spelt the same
    assert not torch.allclose(out[0, 0], out[1, 0])  # "\u2581run" and "\u2581runs" differ


def test_every_part_is_trained():
    torch.manual_seed(0)
    cnn = SubwordCharacterCNN(dim=6, filters=4, char_dim=3, max_chars=5, dropout=0.1)
    cnn.set_vocabulary(["<pad>", "ab", "abc", "b"])
    cnn(torch.tensor([[1, 2, 3, 0]])).square().sum().backward()
    for name, parameter in cnn.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gradients_are_the_same_on_every_run_with_several_threads():
    """Training must repeat from the seed: the gradients of a batch of QA's size, computed again
    with two threads, are equal to the bit (indexing the features with ``features[inverse]`` gave
    differing gradients here: its CPU backward adds rows in a thread-dependent order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        cnn = SubwordCharacterCNN(dim=64, filters=16, char_dim=8, max_chars=8)
        cnn.set_vocabulary(["<pad>"] + [f"w{i}" for i in range(1, 400)])
        ids = torch.randint(0, 400, (32, 384))
        upstream = torch.randn(32, 384, 64)
        grads = []
        for _ in range(4):
            cnn.zero_grad()
            cnn(ids).backward(upstream)
            grads.append([p.grad.clone() for p in cnn.parameters()])
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))


def test_bad_settings_and_a_missing_vocabulary_are_reported():
    with pytest.raises(ValueError, match="width must be odd"):
        SubwordCharacterCNN(dim=4, width=2)
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        SubwordCharacterCNN(dim=4)(torch.tensor([[1]]))


def test_the_spellings_are_not_saved_with_the_weights():
    cnn = SubwordCharacterCNN(dim=4, filters=2)
    cnn.set_vocabulary(["<pad>", "a"])
    assert not any("spellings" in key for key in cnn.state_dict())


def test_char_cnn_through_the_cli_trains_and_reloads_its_spellings_from_the_checkpoint(tmp_path):
    """NER on the RNN encoder with character features: the features are part of the trained
    network, and validating the checkpoint (tokenizer and spellings read back from it) gives the
    metrics the run ended with."""
    from s2s_tasks.cli import main
    from s2s_tasks.registry import config_dir

    common = ["--task", "ner", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
              "--data.cache_dir", str(tmp_path / "cache"), "--data.eval_max_tokens", "512",
              "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0.5"]
    cli = main(["fit", *common, "--model", str(config_dir() / "model" / "lstm-bahdanau.yaml"),
                "--model.d_model", "32", "--model.embedding_dim", "32", "--model.num_encoder_layers", "1",
                "--model.char_cnn", "8", "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "2048",
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.2"])
    features = cli.model.encoder.embed.features
    assert isinstance(features, SubwordCharacterCNN) and features.has_vocabulary
    tokenizer = cli.model.tokenizer
    assert features.spellings.shape[0] == tokenizer.get_vocab_size()
    word = next(i for i in range(tokenizer.get_vocab_size()) if len(tokenizer.id_to_token(i)) >= 3)
    assert features.spellings[word, 0] == tokenizer.id_to_token(word).encode("utf-8")[0] + 1
    ended = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    (ckpt,) = tmp_path.rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert "encoder.embed.features.conv.weight" in state and not any("spellings" in k for k in state)
    validated = main(["validate", *common, "--ckpt_path", str(ckpt)])
    again = {k: float(v) for k, v in validated.trainer.callback_metrics.items() if k.startswith("val/")}
    assert again.keys() == ended.keys() and again == pytest.approx(ended)


def test_char_cnn_is_refused_where_it_does_not_apply():
    from tasks.classification.model import ClassificationModule

    with pytest.raises(ValueError, match="model.char_cnn adds character features"):
        ClassificationModule(vocab_size=50, num_labels=2, head="generate", char_cnn=8)
    with pytest.raises(ValueError, match="model.char_cnn must be >= 0"):
        ClassificationModule(vocab_size=50, num_labels=2, char_cnn=-1)
