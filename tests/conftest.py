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
