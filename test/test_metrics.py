"""mIoU against hand-computed confusion matrices, in both conventions."""

from __future__ import annotations

import math

import pytest
import torch

from robustseg_core.evaluation import COMBINATIONS, ConfusionMatrix, combination_mask


def test_confusion_matrix_and_miou_by_hand():
    # 3 classes; label row-major [0 0 1 1 2 255], prediction [0 1 1 1 0 2]
    label = torch.tensor([[0, 0, 1], [1, 2, 255]])
    prediction = torch.tensor([[0, 1, 1], [1, 0, 2]])
    matrix = ConfusionMatrix(3)
    matrix.update(prediction, label)
    assert matrix.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # IoU: class 0 = 1 / (2 + 2 - 1) = 1/3, class 1 = 2 / (2 + 3 - 2) = 2/3, class 2 = 0 / (1 + 0 - 0) = 0
    summary = matrix.summary()
    assert summary["per_class_iou"] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert summary["miou"] == pytest.approx(100 / 3)
    assert summary["miou_present"] == pytest.approx(100 / 3)
    assert summary["pixel_accuracy"] == pytest.approx(60.0)


def test_absent_classes_count_zero_in_deliver_convention_only():
    matrix = ConfusionMatrix(4)
    matrix.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    summary = matrix.summary()
    assert summary["per_class_iou"][2] is None and summary["per_class_iou"][3] is None
    assert summary["miou"] == pytest.approx(50.0)          # (100 + 100 + 0 + 0) / 4
    assert summary["miou_present"] == pytest.approx(100.0)  # mean over classes 0 and 1


def test_accumulates_over_batches_like_one_pass():
    generator = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (4, 8, 8), generator=generator)
    prediction = torch.randint(0, 5, (4, 8, 8), generator=generator)
    whole, parts = ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(prediction, label)
    for i in range(4):
        parts.update(prediction[i], label[i])
    assert torch.equal(whole.matrix, parts.matrix)
    assert not math.isnan(whole.summary()["miou"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(3).update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


def test_fifteen_combinations_in_paper_order():
    assert COMBINATIONS == ("R", "D", "E", "L", "RD", "RE", "RL", "DE", "DL", "EL", "RDE", "RDL", "REL", "DEL", "RDEL")
    assert combination_mask("EL").tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="unknown modality combination"):
        combination_mask("X")
