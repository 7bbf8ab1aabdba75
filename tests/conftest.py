import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """LightningCLI warns when it sees pytest's own argv next to the args it is given."""
    monkeypatch.setattr(sys, "argv", ["s2s-tasks"])


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of tiny tensors: extra threads only add overhead there
    (and stall badly when the machine is busy). Use with ``pytest.mark.usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(task, *extra_cli_args)`` -> the path of a tiny model of ``task`` trained
    for a few steps on its sample data; one per (task, arguments) for the whole test session."""
    from helpers import train_tiny_checkpoint

    made = {}

    def make(task: str, *extra: str) -> str:
        key = (task, extra)
        if key not in made:
            made[key] = train_tiny_checkpoint(task, tmp_path_factory.mktemp(f"ckpt-{task}"), *extra)
        return made[key]

    return make
