"""Shared fixtures: a small generated DELIVER-layout data set, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mini_dataset(tmp_path_factory) -> Path:
    """3 train, 2 val and 1 test scenes of 2 frames each at 64x64, written by the scene generator."""
    from robustseg_core.sim.generate import main as generate

    root = tmp_path_factory.mktemp("sim")
    generate([
        "--out", str(root), "--size", "64", "--seed", "0", "--train-scenes", "3", "--val-scenes", "2",
        "--test-scenes", "1", "--frames-per-scene", "2",
    ])
    return root
