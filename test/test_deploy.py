"""ONNX export and inference backends: right for every modality combination, carrying the model's metadata,
and the same labels as torch through the one Segmenter pre/post-processing path."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import warnings

import numpy as np
import pytest
import torch

from robustseg_core.classes import CLASS_NAMES
from robustseg_core.deploy.backends import BackendUnavailable, load_backend
from robustseg_core.deploy.export import ExportCheckError, check_onnx_against_torch, cli
from robustseg_core.deploy.metadata import ModelMetadataError, read_onnx_metadata
from robustseg_core.inference import Segmenter
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint

for _module, _extra in (("onnx", "onnx"), ("onnxruntime", "onnx")):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed: pip install 'robustseg_ros[{_extra}]'", allow_module_level=True)
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    config = {"data": {"eval_size": 64}, "student": {"convention": "zero"}}
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture,
                           "meta": checkpoint_meta(config)})
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> tuple:
    """``export_onnx --checkpoint tiny.pt --out tiny.onnx``: the file and what the command printed."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(["--checkpoint", str(checkpoint), "--out", str(path)]) == 0
    return path, printed.getvalue()


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported[0]


def frame(height: int = 48, width: int = 80, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for name in ("rgb", "depth", "event", "lidar")}


def test_the_obvious_export_is_wrong_and_the_check_catches_it(checkpoint, tmp_path):
    """torch.onnx.export of the segmentor itself passes the ONNX checker but overwrites fused modalities."""
    import onnx

    model, _ = build_and_load(checkpoint)
    naive = tmp_path / "naive.onnx"
    images, present = torch.randn(1, 4, 3, 64, 64), torch.tensor([[True, True, False, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (images, present), str(naive), dynamo=False, input_names=["images", "present"],
                          output_names=["logits"], dynamic_axes={"images": {0: "b"}, "present": {0: "b"}})
    onnx.checker.check_model(onnx.load(str(naive)))
    with pytest.raises(ExportCheckError, match=r"for \d+ of 15 modality combinations: .*RDEL") as error:
        check_onnx_against_torch(naive, model, size=(64, 64))
    assert "R (" not in str(error.value), "a single modality has nothing to overwrite"
    with pytest.raises(ModelMetadataError, match="no robustseg metadata"):
        read_onnx_metadata(naive)


def build_and_load(checkpoint):
    from robustseg_core.models.checkpoint import build_model_from_checkpoint

    return build_model_from_checkpoint(checkpoint)


def test_export_carries_the_metadata_and_dynamic_sizes(checkpoint, exported):
    import onnx

    onnx_file, printed = exported
    assert printed.startswith(f"export_onnx: wrote {onnx_file}") and "on 15 modality combinations at 128x96" in printed
    metadata = read_onnx_metadata(onnx_file)
    assert metadata.classes == tuple(CLASS_NAMES) and metadata.modalities == ("rgb", "depth", "event", "lidar")
    assert metadata.missing_convention == "zero" and metadata.eval_size == 64
    assert metadata.normalization["rgb"][0] == [0.485, 0.456, 0.406]
    graph = onnx.load(str(onnx_file)).graph
    assert "ScatterElements" not in {node.op_type for node in graph.node}
    dims = [[dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in graph.input]
    assert dims == [["batch", 4, 3, "height", "width"], ["batch", 4]]
    model, _ = build_and_load(checkpoint)
    check_onnx_against_torch(onnx_file, model, size=(32, 160))  # another size than the export's own check


def test_export_of_a_corrupt_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    out = tmp_path / "model.onnx"
    assert cli(["--checkpoint", str(corrupt), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("export_onnx: error: ") and "corrupt.pt" in error and error.count("\n") == 1
    assert not out.exists()


BACKENDS = [pytest.param("onnxruntime", id="onnxruntime"),
            pytest.param("openvino", id="openvino", marks=pytest.mark.skipif(
                not HAVE_OPENVINO, reason="openvino is not installed: pip install 'robustseg_ros[openvino]'"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("convention", ["drop", "zero"])
def test_backends_give_the_torch_labels_through_one_path(checkpoint, onnx_file, backend, convention):
    reference = Segmenter(checkpoint, device="cpu", convention=convention)
    other = Segmenter(checkpoint, device="cpu", fp16=False, convention=convention, backend=backend, onnx_file=onnx_file)
    assert other.backend.name == backend and other.backend.precision in ("fp32", "f32")
    assert (other.modalities, other.class_names, other.short_side) == (reference.modalities, reference.class_names, 64)
    images = frame()
    for present in (("rgb",), ("rgb", "lidar"), ("depth", "event", "lidar"), ("rgb", "depth", "event", "lidar")):
        subset = {name: image for name, image in images.items() if name in present}
        expected, got = reference.predict(subset), other.predict(subset)
        assert got.present == expected.present and got.labels.shape == (48, 80)
        assert np.abs(got.confidence - expected.confidence).max() < 1e-4
        assert (got.labels == expected.labels).mean() > 0.999, present


@pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed: pip install 'robustseg_ros[openvino]'")
def test_openvino_reduced_precision_stays_close(checkpoint, onnx_file):
    reference = Segmenter(checkpoint, device="cpu")
    reduced = Segmenter(checkpoint, device="cpu", fp16=None, backend="openvino", onnx_file=onnx_file)
    expected, got = reference.predict(frame(seed=1)), reduced.predict(frame(seed=1))
    assert reduced.backend.precision in ("bf16", "f32")  # bf16 where the CPU has it
    assert np.abs(got.confidence - expected.confidence).mean() < 0.02


def test_an_onnx_file_of_another_model_is_refused_naming_the_difference(checkpoint, onnx_file, tmp_path):
    state = load_checkpoint(checkpoint)
    state["meta"]["classes"] = [f"class {index}" for index in range(len(CLASS_NAMES))]
    state["meta"]["normalization"]["depth"] = [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    with pytest.raises(ModelMetadataError) as error:
        Segmenter(other, device="cpu", backend="onnxruntime", onnx_file=onnx_file)
    message = str(error.value)
    assert "tiny.onnx" in message and "other.pt" in message
    assert "classes: 25 vs 25 expected (first differences 0: 'Building' vs 'class 0'" in message
    assert "normalisation of depth" in message


def test_an_onnx_file_exported_from_another_checkpoint_is_refused(checkpoint, onnx_file, tmp_path):
    """Same classes, modalities and normalisation, other weights: the file's checkpoint hash tells them apart."""
    state = load_checkpoint(checkpoint)
    state["model"] = {name: tensor + 0.01 if tensor.is_floating_point() else tensor
                      for name, tensor in state["model"].items()}
    retrained = tmp_path / "retrained.pt"
    save_checkpoint(retrained, state)
    with pytest.raises(ModelMetadataError, match="tiny.onnx: exported from another checkpoint than .*retrained.pt"):
        Segmenter(retrained, device="cpu", backend="onnxruntime", onnx_file=onnx_file)


def test_an_onnx_graph_the_runtime_cannot_load_is_a_one_line_error(onnx_file, tmp_path):
    import onnx

    graph = onnx.load(str(onnx_file))
    graph.graph.node[len(graph.graph.node) // 2].op_type = "NoSuchOperator"
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))  # its metadata is intact: only onnxruntime finds the problem
    with pytest.raises(BackendUnavailable, match="broken.onnx: onnxruntime cannot load it on cpu") as error:
        load_backend("onnxruntime", "cpu", onnx_file=broken)
    assert "\n" not in str(error.value)


def test_export_refuses_a_folder_as_out_and_names_an_unsupported_opset(checkpoint, tmp_path, capsys):
    assert cli(["--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    assert "is a folder; give the ONNX file to write" in capsys.readouterr().err
    assert cli(["--checkpoint", str(checkpoint), "--out", str(checkpoint)]) == 2, "the checkpoint stays"
    assert "is the checkpoint exported; write it elsewhere" in capsys.readouterr().err
    out = tmp_path / "model.onnx"
    for opset in ("13", "21"):  # attention needs 14; torch's TorchScript exporter writes up to 20
        with pytest.raises(SystemExit) as exit_status:
            cli(["--checkpoint", str(checkpoint), "--out", str(out), "--opset", opset])
        assert exit_status.value.code == 2 and not out.exists()
        assert f"argument --opset: invalid choice: {opset} (choose from 14, 15, 16, 17, 18, 19, 20)" in \
            capsys.readouterr().err


def test_an_onnx_file_alone_runs_on_its_own_metadata(onnx_file):
    segmenter = Segmenter(None, device="cpu", backend="onnxruntime", onnx_file=onnx_file)
    assert segmenter.short_side == 64 and segmenter.predict(frame()).labels.shape == (48, 80)


def test_without_an_onnx_file_the_checkpoint_is_exported_once_into_the_cache(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSEG_CACHE_DIR", str(tmp_path / "cache"))
    first = load_backend("onnxruntime", "cpu", checkpoint=checkpoint)
    [cached] = (tmp_path / "cache").glob("tiny-*.onnx")
    modified = cached.stat().st_mtime_ns
    load_backend("onnxruntime", "cpu", checkpoint=checkpoint)
    assert cached.stat().st_mtime_ns == modified and first.metadata.eval_size == 64

    import onnx

    stale = onnx.load(str(cached))  # as an older export would have left it: other metadata, same checkpoint hash
    prop = next(prop for prop in stale.metadata_props if prop.key == "robustseg")
    prop.value = json.dumps({**json.loads(prop.value), "validation_miou": {"RDEL": 1.0}})
    onnx.save(stale, str(cached))
    assert read_onnx_metadata(cached).validation_miou == {"RDEL": 1.0}
    assert load_backend("onnxruntime", "cpu", checkpoint=checkpoint).metadata.validation_miou == {}
    assert read_onnx_metadata(cached).validation_miou == {}, "exported again"

    intact = cached.read_bytes()  # bytes flipped in the weights (a bad sector): the metadata still matches
    middle = len(intact) // 2
    flipped = bytes(255 - byte for byte in intact[middle:middle + 200])
    cached.write_bytes(intact[:middle] + flipped + intact[middle + 200:])
    load_backend("onnxruntime", "cpu", checkpoint=checkpoint)
    assert cached.read_bytes() == intact, "a damaged export is exported again, not used"


def test_unavailable_backends_name_the_extra_to_install(checkpoint, onnx_file, monkeypatch):
    with pytest.raises(BackendUnavailable, match=r"robustseg_ros\[tensorrt\]"):
        load_backend("tensorrt", "cpu", onnx_file=onnx_file)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailable, match=r"'openvino'.*pip install 'robustseg_ros\[openvino\]'"):
        load_backend("openvino", "cpu", onnx_file=onnx_file)
    with pytest.raises(ValueError, match="backend 'tflite': expected one of torch, onnxruntime, openvino, tensorrt"):
        load_backend("tflite", "cpu", checkpoint=checkpoint)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensorrt backend needs a CUDA GPU")
def test_tensorrt_backend_matches_torch_on_cuda(checkpoint, onnx_file):
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no TensorRT execution provider: pip install 'robustseg_ros[tensorrt]'")
    reference = Segmenter(checkpoint, device="cuda", fp16=False)
    tensorrt = Segmenter(checkpoint, device="cuda", fp16=False, backend="tensorrt", onnx_file=onnx_file)
    expected, got = reference.predict(frame()), tensorrt.predict(frame())
    assert (got.labels == expected.labels).mean() > 0.99
