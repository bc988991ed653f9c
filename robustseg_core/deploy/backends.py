"""Inference backends: the network forward, images [B, M, 3, H, W] + present [B, M] -> logits [B, K, H, W].

``Segmenter`` (``robustseg_core.inference``) does the pre- and post-processing once for all of them; a
backend only runs the network:

* ``torch``: the checkpoint's ``MultimodalSegmentor`` in eager mode (CPU or CUDA, fp16 on CUDA);
* ``onnxruntime``: the ``export_onnx`` model on onnxruntime's CPU (or, on ``cuda``, CUDA) execution provider;
* ``openvino``: the same file compiled by OpenVINO for the CPU, in bf16 where the CPU supports it and
  reduced precision is allowed (``fp16``), else f32;
* ``tensorrt``: the same file on onnxruntime's TensorRT execution provider (``onnxruntime-gpu`` and the
  TensorRT libraries), fp16 when allowed, engines cached per model file in the ONNX cache folder.

The ONNX backends read the model's metadata from the file; with a checkpoint too, the two must agree
(classes, modality order, normalisation, and the file must be exported from that checkpoint) or loading
fails naming the difference. Without an ONNX file
the checkpoint is exported once into a cache folder (``export.cached_onnx``, checked against torch).
A backend whose package is missing raises ``BackendUnavailable`` naming the setup.py extra to install.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError, UserError, cause
from ..models.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint, resolve_device
from .metadata import ONNX_OUTPUT, ModelMetadata, ModelMetadataError, check_metadata, read_onnx_metadata

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "tensorrt")
#: The setup.py extra that installs each optional backend.
BACKEND_EXTRAS: dict[str, str] = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


class BackendChoiceError(UsageError, ValueError):
    """An unknown backend name, or a backend without the model file it runs."""


class BackendUnavailable(UserError, RuntimeError):
    """A backend that cannot run here: its package is not installed, or not on this device."""


def require_module(backend: str, module: str):
    """Import ``module`` for ``backend``, or ``BackendUnavailable`` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailable(f"backend {backend!r} needs the Python package {module!r}, which is not installed: "
                                 f"pip install 'robustseg_ros[{BACKEND_EXTRAS[backend]}]'") from error


class Backend:
    """What every backend gives ``Segmenter``: ``name``, ``metadata``, ``device``, ``fp16``, ``precision``
    and the two calls below."""

    name: str
    metadata: ModelMetadata
    device: torch.device
    fp16: bool
    precision: str

    def run(self, images: Tensor, present: Tensor) -> Tensor:
        """Logits [B, K, H, W] for images [B, M, 3, H, W] and present [B, M]."""
        raise NotImplementedError

    def run_with_agreement(self, images: Tensor, present: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits and each modality's feature agreement with the fusion [B, M], or None where the backend
        has no features to compare (the ONNX backends: the exported graph ends at the logits)."""
        return self.run(images, present), None


class TorchBackend(Backend):
    """The checkpoint's model in eager PyTorch."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: torch.device, fp16: bool) -> None:
        model, state = build_model_from_checkpoint(checkpoint, device)
        self.model = model.to(device).eval()
        if fp16:
            self.model.half()
        self.metadata = ModelMetadata.from_checkpoint(state, checkpoint)
        self.device, self.fp16 = device, fp16
        self.precision = "fp16" if fp16 else "fp32"

    @torch.inference_mode()
    def run(self, images: Tensor, present: Tensor) -> Tensor:
        return self._timed_call(self.model, images, present)

    @torch.inference_mode()
    def run_with_agreement(self, images: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [B, K, H, W] and each modality's feature agreement with the fusion [B, M]
        (``MultimodalSegmentor.forward_with_agreement``)."""
        return self._timed_call(self.model.forward_with_agreement, images, present)

    def _timed_call(self, forward, images: Tensor, present: Tensor):
        """``forward`` on the backend's precision, finished when it returns (CUDA runs asynchronously, and
        callers time this call)."""
        outputs = forward(images.half() if self.fp16 else images, present)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return outputs


class OnnxRuntimeBackend(Backend):
    """An ``export_onnx`` model on onnxruntime: CPU, CUDA, or (``tensorrt``) the TensorRT execution provider."""

    def __init__(self, onnx_file: Path, metadata: ModelMetadata, device: torch.device, fp16: bool, *,
                 tensorrt: bool = False) -> None:
        self.name = "tensorrt" if tensorrt else "onnxruntime"
        onnxruntime = require_module(self.name, "onnxruntime")
        providers = self._providers(onnxruntime, device, fp16, tensorrt, onnx_file)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle threads sleep instead of spinning: a robot's CPU is shared with other nodes (and spinning
        # threads made onnxruntime 1.4-2x slower on the shared 2-core dev machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=providers)
        except Exception as error:  # onnxruntime's errors (InvalidGraph, Fail, NoSuchFile) are plain Exceptions
            raise BackendUnavailable(f"{onnx_file}: onnxruntime cannot load it on {device} ({cause(error)})") from error
        requested = providers[0] if isinstance(providers[0], str) else providers[0][0]
        used = self.session.get_providers()
        if not used or used[0] != requested:  # onnxruntime falls back to another provider with only a log line
            raise BackendUnavailable(f"backend {self.name!r}: onnxruntime could not start {requested} for {onnx_file} "
                                     f"(it runs on {used}); check the CUDA / TensorRT libraries or set device cpu")
        self.metadata, self.device = metadata, device
        self.fp16 = tensorrt and fp16
        self.precision = "fp16" if self.fp16 else "fp32"

    def _providers(self, onnxruntime, device: torch.device, fp16: bool, tensorrt: bool, onnx_file: Path) -> list:
        available = onnxruntime.get_available_providers()
        if tensorrt:
            if "TensorrtExecutionProvider" not in available or device.type != "cuda":
                raise BackendUnavailable(
                    f"backend 'tensorrt' needs a CUDA device and onnxruntime with the TensorRT execution provider "
                    f"(device {device}, onnxruntime providers {available}): pip install 'robustseg_ros[tensorrt]' "
                    "and put the TensorRT libraries on LD_LIBRARY_PATH")
            from .export import default_cache_dir

            # Engines are keyed by the model file's content: a re-exported model never reuses an old engine.
            cache = default_cache_dir() / "tensorrt_engines" / file_sha256(onnx_file)[:16]
            options = {"device_id": device.index or 0, "trt_fp16_enable": bool(fp16),
                       "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
            return [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", {"device_id": device.index or 0})]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(f"backend 'onnxruntime' on {device} needs onnxruntime-gpu (providers here: "
                                         f"{available}); use device cpu or pip install onnxruntime-gpu")
            return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
        return ["CPUExecutionProvider"]

    def run(self, images: Tensor, present: Tensor) -> Tensor:
        feeds = {"images": images.detach().cpu().numpy(), "present": present.detach().cpu().numpy()}
        [logits] = self.session.run([ONNX_OUTPUT], feeds)
        return torch.from_numpy(logits)


class OpenVinoBackend(Backend):
    """An ``export_onnx`` model compiled by OpenVINO for the CPU (latency hint, torch's thread count)."""

    name = "openvino"

    def __init__(self, onnx_file: Path, metadata: ModelMetadata, device: torch.device, fp16: bool) -> None:
        openvino = require_module(self.name, "openvino")
        if device.type != "cpu":
            raise BackendUnavailable(f"backend 'openvino' runs on the CPU here, not on {device}; set device cpu")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        if not fp16:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        core = openvino.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", config)
        except Exception as error:  # OpenVINO raises its own RuntimeError subclasses with multi-line text
            raise BackendUnavailable(f"{onnx_file}: OpenVINO cannot compile it ({cause(error)})") from error
        self.request = self.compiled.create_infer_request()
        self.metadata, self.device = metadata, device
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.fp16 = self.precision != "f32"

    def run(self, images: Tensor, present: Tensor) -> Tensor:
        self.request.infer({"images": images.detach().cpu().numpy(), "present": present.detach().cpu().numpy()})
        return torch.from_numpy(np.array(self.request.get_tensor(ONNX_OUTPUT).data))


def auto_device(backend: str) -> torch.device:
    """The device ``"auto"`` means for ``backend``: CUDA when torch sees it, except for OpenVINO (CPU only
    here) and for an onnxruntime without the CUDA execution provider (the CPU ``onnxruntime`` package)."""
    if backend == "openvino" or not torch.cuda.is_available():
        return torch.device("cpu")
    if backend == "onnxruntime":
        onnxruntime = require_module(backend, "onnxruntime")
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return torch.device("cpu")
    return torch.device("cuda")


def load_backend(name: str, device: str = "auto", fp16: bool | None = None, *,
                 checkpoint: str | os.PathLike | None = None, onnx_file: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Backend:
    """The backend ``name`` ready to run on ``device`` ("auto": ``auto_device``).

    ``fp16``: reduced precision (fp16 on CUDA, OpenVINO's bf16 on CPUs that have it); None: where the device
    supports it (onnxruntime on the CPU always runs fp32). torch needs ``checkpoint``; the others run
    ``onnx_file``, or the checkpoint's cached export (in ``cache_dir``, default ``export.default_cache_dir()``).
    Raises ``BackendChoiceError`` for an unknown name or missing model, ``BackendUnavailable`` when the backend cannot run
    here (or cannot load the file), ``ModelMetadataError`` when the ONNX file and the checkpoint disagree or the file
    was exported from another checkpoint, ``CheckpointError``.
    """
    if name not in BACKENDS:
        raise BackendChoiceError(f"backend {name!r}: expected one of {', '.join(BACKENDS)}")
    resolved = resolve_device(device) if device != "auto" else auto_device(name)
    if name == "torch":
        if checkpoint is None:
            raise BackendChoiceError("backend 'torch' needs a checkpoint (an ONNX file runs on onnxruntime, openvino or "
                             "tensorrt)")
        return TorchBackend(checkpoint, resolved, resolved.type == "cuda" if fp16 is None else fp16)
    if checkpoint is None and onnx_file is None:
        raise BackendChoiceError(f"backend {name!r} needs an ONNX file or a checkpoint to export")
    require_module(name, "openvino" if name == "openvino" else "onnxruntime")
    require_module(name, "onnx")
    from .export import cached_onnx, default_cache_dir

    expected = ModelMetadata.from_checkpoint(load_checkpoint(checkpoint), checkpoint) if checkpoint else None
    if onnx_file is None:
        require_module(name, "onnxruntime")  # the export is checked against torch on onnxruntime
        onnx_file = cached_onnx(checkpoint, cache_dir or default_cache_dir(), expected)
    onnx_file = Path(onnx_file)
    metadata = read_onnx_metadata(onnx_file)
    check_metadata(metadata, expected)
    if checkpoint is not None and metadata.checkpoint_sha256 and metadata.checkpoint_sha256 != file_sha256(checkpoint):
        raise ModelMetadataError(f"{onnx_file}: exported from another checkpoint than {checkpoint} (SHA-256 "
                                 f"{metadata.checkpoint_sha256[:16]}... against {file_sha256(checkpoint)[:16]}...); "
                                 f"export it again (export_onnx --checkpoint {checkpoint} --out {onnx_file}) "
                                 "or leave the checkpoint unset")
    if name == "openvino":
        return OpenVinoBackend(onnx_file, metadata, resolved, fp16 is not False)
    return OnnxRuntimeBackend(onnx_file, metadata, resolved, fp16 is not False, tensorrt=name == "tensorrt")
