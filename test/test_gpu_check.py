"""bench/gpu_check.sh runs as is on a machine without CUDA: it installs nothing, skips every GPU part saying so,
and still writes its one results file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("node", "tensorrt", "ddp", "training")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: run bench/gpu_check.sh itself (8 minutes)")
def test_gpu_check_on_cpu_skips_every_gpu_part_and_says_so(tmp_path):
    results = tmp_path / "results.md"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(results)], cwd=tmp_path, text=True,
                          capture_output=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "gpu_check: no CUDA device: every GPU part is skipped" in done.stdout
    text = results.read_text()
    assert text.startswith("# GPU check (CUDA run)") and "no CUDA device" in text.splitlines()[2]
    for part in PARTS:
        assert f"## {part}: skipped: no CUDA device (torch.cuda.is_available() is False)" in text, part
