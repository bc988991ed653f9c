"""The student shipped inside the package: small, self-describing, loadable safely, used by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustseg_core.classes import CLASS_NAMES, MODALITIES
from robustseg_core.inference import Segmenter
from robustseg_core.models.checkpoint import load_checkpoint
from robustseg_ros.params import resolve_checkpoint

SHIPPED = Path(__file__).resolve().parent.parent / "robustseg_ros" / "models" / "robustseg_student.pt"


def test_shipped_student_is_small_and_describes_itself():
    assert SHIPPED.is_file() and SHIPPED.stat().st_size <= 25 * 1024 * 1024
    checkpoint = load_checkpoint(SHIPPED)  # weights_only=True inside
    meta = checkpoint["meta"]
    assert meta["classes"] == list(CLASS_NAMES) and meta["modalities"] == list(MODALITIES)
    assert set(meta["normalization"]) == set(MODALITIES)
    recalibrated = meta.get("recalibrated_from")  # recalibrate_bn made the file from a train_student checkpoint
    assert "train_student" in (recalibrated["command"] if recalibrated else meta["trained_command"])
    scores = meta["evaluation"]
    assert scores["split"] == "test" and 0 < scores["drop_miou"]["RDEL"] <= 100 and "EMM" in scores
    assert "optimizer" not in checkpoint


def test_the_node_defaults_to_the_shipped_student_and_it_runs_on_missing_modalities():
    assert resolve_checkpoint("") == SHIPPED
    segmenter = Segmenter(resolve_checkpoint(""), device="cpu")
    rng = np.random.default_rng(0)
    frame = {m: rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for m in ("depth", "lidar")}
    result = segmenter.predict(frame)
    assert result.labels.shape == (96, 128) and result.present == (False, True, False, True)
