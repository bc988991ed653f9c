"""Shared fixtures: a small generated DELIVER-layout data set, made once per test session, and a ROS domain
of its own for every test that uses DDS."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

_ROS_DOMAINS = itertools.count()


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


def _next_ros_domain() -> int:
    """The next ROS_DOMAIN_ID (1..100) of this session, offset by the process id so that test sessions running
    side by side on one machine are unlikely to share a domain."""
    return 1 + (os.getpid() * 13 + next(_ROS_DOMAINS)) % 100


@pytest.fixture
def ros_domain(monkeypatch) -> int:
    """A ROS_DOMAIN_ID for this test alone, set in the environment with discovery limited to this machine."""
    domain = _next_ros_domain()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


@pytest.fixture(scope="session")
def commands():
    """Console scripts run as real processes, forked from one interpreter that imported them (test/forked_commands.py)."""
    from forked_commands import CommandRunner

    with CommandRunner() as runner:
        yield runner


@pytest.fixture(scope="module")
def ros_domain_module() -> int:
    """A ROS_DOMAIN_ID for the processes a test module starts (it passes it in their environment)."""
    return _next_ros_domain()
