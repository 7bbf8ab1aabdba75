import sys

import pytest


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """LightningCLI warns when it sees pytest's own argv next to the args it is given."""
    monkeypatch.setattr(sys, "argv", ["s2s-tasks"])
