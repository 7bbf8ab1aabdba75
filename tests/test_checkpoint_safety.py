"""Checkpoints are read without executing code from them, and unreadable ones are reported clearly."""

import pytest
import torch

from s2s_tasks.checkpoint import load_checkpoint, read_checkpoint_extras
from s2s_tasks.cli import main


class RunsCodeOnLoad:
    """Unpickling this calls ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_crafted_to_run_code_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "s2s_tasks": {"task": "translation"}, "payload": RunsCodeOnLoad(marker)}, crafted)
    assert not marker.exists()
    with pytest.raises(ValueError, match="could not be read as a checkpoint: it holds objects that are not safe to load \\(it refers to io.open\\)"):
        load_checkpoint(str(crafted))
    with pytest.raises(ValueError):
        read_checkpoint_extras(str(crafted))
    # through the CLI, with the task named so the checkpoint is really opened
    with pytest.raises(ValueError, match="crafted.ckpt could not be read"):
        main(["predict", "--task", "translation", "--ckpt_path", str(crafted), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path)])
    assert not marker.exists()


def test_truncated_and_foreign_files_are_reported(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "s2s_tasks": {"task": "ner"}}, good)
    assert read_checkpoint_extras(str(good)) == {"task": "ner"}
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.ckpt could not be read as a checkpoint .*truncated"):
        load_checkpoint(str(truncated))
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.ckpt could not be read as a checkpoint"):
        load_checkpoint(str(text))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="other.ckpt is not an s2s-tasks checkpoint: it has no 's2s_tasks' section"):
        read_checkpoint_extras(str(other))
    with pytest.raises(FileNotFoundError, match="check --ckpt_path"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
