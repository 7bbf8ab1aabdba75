"""Word dropout (``model.word_dropout``): input tokens replaced by <unk> in training only."""

import pytest
import torch

from s2s_tasks.data.tokenizer import UNK_ID, train_tokenizer
from s2s_tasks.nn.word_dropout import special_token_mask, word_dropout


def test_word_dropout_replaces_about_p_of_the_words_and_never_a_special_token():
    torch.manual_seed(0)
    keep = torch.zeros(50, dtype=torch.bool)
    keep[:6] = True
    ids = torch.randint(0, 50, (64, 100))
    out = word_dropout(ids, 0.3, keep, UNK_ID)
    changed = out != ids
    assert (out[changed] == UNK_ID).all()
    assert not changed[keep[ids]].any()  # special tokens stay
    droppable = ~keep[ids] & (ids != UNK_ID)
    rate = changed.sum().item() / droppable.sum().item()
    assert 0.27 < rate < 0.33
    assert torch.equal(word_dropout(ids, 0.0, keep, UNK_ID), ids)


def test_special_token_mask_covers_the_tokenizers_special_tokens():
    tokenizer = train_tokenizer(["a b c <e1> d </e1>"] * 20, 60, extra_special_tokens=["<e1>", "</e1>"])
    keep = special_token_mask(tokenizer, tokenizer.get_vocab_size())
    assert keep[:6].all() and keep.sum() == 6


def test_word_dropout_acts_in_training_only_and_is_checked(tmp_path):
    from s2s_tasks.cli import main

    with pytest.raises(ValueError, match=r"model.word_dropout must be in \[0, 1\)"):
        main(["fit", "--task", "classification", "--model.word_dropout", "1.0", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "1"])
    cli = main(["fit", "--task", "relation_extraction", "--model.word_dropout", "0.5", "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "cache"),
                "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
                "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
                "--data.tokenizer_vocab_size", "300"])
    model = cli.model
    batch = next(iter(cli.datamodule.val_dataloader()))
    seen = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    model.train()
    model.encode(batch)
    model.eval()
    model.encode(batch)
    trained, evaluated = seen
    assert torch.equal(evaluated, batch["src_ids"])
    changed = trained != batch["src_ids"]
    assert changed.any() and (trained[changed] == UNK_ID).all()
    markers = [model.tokenizer.token_to_id(t) for t in ("<e1>", "</e1>", "<e2>", "</e2>")]
    for marker in markers:
        assert ((batch["src_ids"] == marker) <= (trained == marker)).all()  # entity markers are never dropped
