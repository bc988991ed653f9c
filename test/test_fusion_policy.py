"""The validated fusion policy (``fusion_policy``) and the head BatchNorm recalibration (``recalibrate_bn``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustseg_core.deploy.metadata import ModelMetadata
from robustseg_core.evaluation.anymodal import COMBINATIONS
from robustseg_core.evaluation.evaluate import cli as evaluate
from robustseg_core.errors import UserError
from robustseg_core.fusion_policy import (FusionPolicyError, check_fusion_policy, fused_subset, fusion_table,
                                         validation_miou)
from robustseg_core.inference import Segmenter
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import build_model_from_checkpoint, checkpoint_meta, load_checkpoint, save_checkpoint
from robustseg_core.training.recalibrate_bn import cli as recalibrate_bn
from robustseg_core.training.recalibrate_bn import head_batchnorm

ALL = ("rgb", "depth", "event", "lidar")


def scores_where_events_hurt() -> dict[str, float]:
    """Validation mIoU per combination as a student's: 10 points per R, D or L in it, minus 2 with E beside them."""
    scores = {}
    for name in COMBINATIONS:
        strong = sum(letter in name for letter in "RDL")
        scores[name] = 10.0 * strong - (2.0 if "E" in name and strong else 0.0) + (5.0 if name == "E" else 0.0)
    return scores


def make_student(path, scores: dict[str, float] | None) -> str:
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    meta = checkpoint_meta({"data": {"eval_size": 64}, "student": {"recipe": "SPCR"}},
                           scores={f"miou_{name}": value for name, value in (scores or {}).items()})
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture, "meta": meta})
    return str(path)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> str:
    return make_student(tmp_path_factory.mktemp("fusion") / "student.pt", scores_where_events_hurt())


def test_the_validated_subset_leaves_out_what_lowers_the_validation_miou():
    scores = scores_where_events_hurt()
    assert fused_subset(ALL, scores, 0.5) == ("rgb", "depth", "lidar")
    assert fused_subset(("depth", "event"), scores, 0.5) == ("depth",)
    assert fused_subset(("event",), scores, 0.5) == ("event",), "a lone modality is always fused"
    assert fused_subset(ALL, scores, 2.0) == ALL, "a gain of exactly min_gain is not enough"
    assert fused_subset(("lidar", "event", "rgb"), scores, 0.0) == ("lidar", "rgb"), "the caller's order is kept"
    level = {name: 30.0 for name in COMBINATIONS}
    assert fused_subset(ALL, level, 0.0) == ALL, "a tie keeps every modality"
    level["RD"] = level["RL"] = 31.0
    assert fused_subset(ALL, level, 0.0) == ("rgb", "depth"), "among equal subsets the first found"
    table = fusion_table(ALL, scores, 0.5)
    assert set(table) == set(COMBINATIONS)
    assert table["RDEL"][0] == ("rgb", "depth", "lidar") and table["DE"][0] == ("depth",)
    assert table["E"] == (("event",), {}) and table["RD"] == (("rgb", "depth"), {})
    assert table["DE"][1] == {"event": "left out by the validated fusion policy: D scored 10.00 % mIoU on validation, "
                                       "DE 8.00 %"}


def test_the_policy_needs_every_combination_and_says_which_are_missing():
    assert issubclass(FusionPolicyError, UserError) and issubclass(FusionPolicyError, ValueError)
    parsed = validation_miou({"miou_RD": 30.0, "miou_present_RD": 31.0, "score": 20.0})
    assert parsed == {"RD": 30.0}
    with pytest.raises(ValueError, match=r"carries none for R, D, RE"):
        check_fusion_policy("validated", 0.5, ("rgb", "depth", "event"), {"E": 1.0, "RD": 1.0, "DE": 1.0,
                                                                          "RDE": 1.0}, "teacher.pt")
    with pytest.raises(ValueError, match="expected one of all, validated"):
        check_fusion_policy("best", 0.5, ALL, {}, "x")
    with pytest.raises(ValueError, match="must be >= 0 mIoU points"):
        check_fusion_policy("all", -1.0, ALL, {}, "x")
    check_fusion_policy("all", 0.5, ALL, {}, "teacher.pt")  # fusing everything needs no scores


def test_the_segmenter_fuses_the_validated_subset_and_reports_what_it_left_out(student, tmp_path):
    rng = np.random.default_rng(0)
    images = {modality: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for modality in ALL}
    validated = Segmenter(student, device="cpu", fusion="validated")
    result = validated.predict(images)
    without_events = Segmenter(student, device="cpu").predict({**images, "event": None})
    assert result.present == (True, True, False, True) and np.array_equal(result.labels, without_events.labels)
    assert result.left_out["event"].startswith("left out by the validated fusion policy: RDL scored 30.00 % mIoU on "
                                               "validation, RDEL 28.00 %")
    assert "event" not in result.agreement
    assert validated.predict({"depth": images["depth"], "rgb": images["rgb"]}).left_out == {}
    with pytest.raises(ValueError, match="no modality present"):
        validated.predict({"rgb": None}, output_size=(48, 64))
    validated.use_fusion("all", 0.5)
    assert validated.predict(images).present == (True, True, True, True)

    teacher = make_student(tmp_path / "teacher.pt", {"RDEL": 40.0})
    with pytest.raises(FusionPolicyError, match="teacher.pt: the validated fusion policy needs .* carries none for R, D"):
        Segmenter(teacher, device="cpu", fusion="validated")  # a UserError: commands print it as one line
    segmenter = Segmenter(teacher, device="cpu")
    with pytest.raises(ValueError, match="carries none"):
        segmenter.use_fusion("validated", 0.5)
    assert segmenter.fusion == ("all", 0.5), "a refused policy changes nothing"


def test_exported_metadata_carries_the_validation_scores(student):
    metadata = ModelMetadata.from_checkpoint(load_checkpoint(student), student)
    assert metadata.validation_miou == scores_where_events_hurt()
    assert ModelMetadata.from_json(metadata.to_json(), "model.onnx") == metadata


def test_an_exported_onnx_model_carries_the_scores_the_policy_needs(student, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the onnx extra")
    from robustseg_core.deploy.export import export_onnx

    onnx_file = tmp_path / "student.onnx"
    export_onnx(student, onnx_file)
    segmenter = Segmenter(None, device="cpu", backend="onnxruntime", onnx_file=onnx_file, fusion="validated")
    images = {modality: np.full((48, 64, 3), 100, np.uint8) for modality in ALL}
    assert segmenter.predict(images).present == (True, True, False, True)


def test_evaluate_reports_the_validated_policy_next_to_the_model(mini_dataset, student, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate(["--checkpoint", student, "--data-root", str(mini_dataset), "--split", "test", "--workers", "0",
                     "--conventions", "drop", "--fusion-policy", "validated", "--json", str(out)]) == 0
    assert "With the validated fusion policy (min gain 0.5 mIoU points)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    policy = result["fusion_policy"]["results"]["drop"]["combinations"]
    model = result["results"]["drop"]["combinations"]
    assert policy["RDEL"] == {"fused": "RDL", "miou": model["RDL"]["miou"]}
    assert policy["RD"] == {"fused": "RD", "miou": model["RD"]["miou"]}
    assert evaluate(["--checkpoint", student, "--data-root", str(mini_dataset), "--split", "test",
                     "--fusion-policy", "validated", "--combinations", "RDEL"]) == 2
    assert "needs all 15 combinations" in capsys.readouterr().err


def test_recalibrated_statistics_are_those_of_the_complete_inputs_on_the_training_frames(mini_dataset, student,
                                                                                           tmp_path, capsys):
    out = tmp_path / "student_bn.pt"
    assert recalibrate_bn(["--checkpoint", student, "--data-root", str(mini_dataset), "--out", str(out),
                           "--workers", "0", "--batch-size", "2"]) == 0
    assert "head BatchNorm statistics over 6 train frames with RDEL" in capsys.readouterr().out
    model, state = build_model_from_checkpoint(out)
    original, _ = build_model_from_checkpoint(student)
    layer = head_batchnorm(model)
    # what the layer sees with every modality on the training frames, gathered here independently
    from robustseg_core.data import DeliverDataset, EvalTransform
    dataset = DeliverDataset(mini_dataset, "train", transform=EvalTransform(64))
    seen = []
    hook = head_batchnorm(original).register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))
    with torch.inference_mode():
        for index in range(len(dataset)):
            images = dataset[index]["images"][None]
            original.eval()(images, torch.ones(1, 4, dtype=torch.bool))
    hook.remove()
    features = torch.cat(seen).double().transpose(0, 1).flatten(1)
    assert torch.allclose(layer.running_mean.double(), features.mean(1), atol=1e-5)
    assert torch.allclose(layer.running_var.double(), features.var(1, unbiased=False), rtol=1e-4, atol=1e-6)
    unchanged = {key for key, value in model.state_dict().items()
                 if torch.equal(value, original.state_dict()[key])}
    assert set(model.state_dict()) - unchanged == {"head.fuse.1.running_mean", "head.fuse.1.running_var"}
    meta = state["meta"]
    assert set(validation_miou(meta["scores"])) == set(COMBINATIONS), "fresh validation scores for every combination"
    assert meta["scores"]["score"] == pytest.approx(sum(validation_miou(meta["scores"]).values()) / 15)
    assert meta["recalibrated_from"]["path"] == student and meta["recalibrated_from"]["scores"]["miou_RDEL"] == 28.0
    assert meta["recalibrated_from"]["statistics"]["frames"] == 6 and meta["command"].startswith("recalibrate_bn ")

    assert recalibrate_bn(["--checkpoint", student, "--data-root", str(mini_dataset), "--out", student]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
