"""Segmenter: encoded modality images + which are present -> class ids and confidence.

The serving half of training/serving parity: it resizes and normalises exactly as the evaluation
transform does (:mod:`robustseg_core.data.transforms`), so a frame gives the same network input
whether it comes from a data set on disk or from live sensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .classes import MODALITIES, combination_name
from .data.transforms import eval_size, resize_modality, resize_nearest
from .deploy.backends import load_backend
from .deploy.metadata import ModelMetadata
from .fusion_policy import DEFAULT_MIN_GAIN, check_fusion_policy, fusion_table
from .models import MISSING_CONVENTIONS, apply_missing_convention
from .sensors.normalization import preprocess_stack


@dataclass
class SegmentationResult:
    """One frame's output at the requested resolution."""

    labels: np.ndarray  #: uint8 [H, W] class ids
    confidence: np.ndarray | None  #: float32 [H, W] max softmax probability (None when not asked for)
    present: tuple[bool, ...]  #: modalities that fed the frame, in model order
    timings_ms: dict[str, float] = field(default_factory=dict)  #: preprocess, infer, postprocess
    #: per fed modality, the mean cosine similarity of its deepest features with the fused ones (-1..1)
    agreement: dict[str, float] = field(default_factory=dict)
    #: per given modality that the fusion policy did not fuse, why (``fusion_policy.left_out_reasons``)
    left_out: dict[str, str] = field(default_factory=dict)


def labels_and_confidence(logits: torch.Tensor, output_size: tuple[int, int], *,
                          with_confidence: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits [B, K, h, w] -> class ids uint8 [B, H, W] and max softmax probability float32 [B, H, W] (None
    unless ``with_confidence``).

    Upsamples bilinearly (in channels-last layout, several times faster on CPU than channels-first, same
    values) only when (h, w) differs from ``output_size``. The class is the first largest logit, as
    ``argmax``; the confidence comes from 1 / sum_k exp(l_k - l_max), which avoids materialising the
    softmax. On the CPU both are computed plane by plane in numpy (``_cpu_labels``), much faster than a
    reduction across the strided class axis.
    """
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(output_size):
        logits = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=tuple(output_size),
                               mode="bilinear", align_corners=False)
    if logits.device.type != "cpu":
        top, labels = logits.max(dim=1)
        confidence = torch.exp(logits - top[:, None]).sum(dim=1).reciprocal_() if with_confidence else None
        return labels.to(torch.uint8), confidence
    planes = logits.contiguous().numpy()
    labels = np.empty((planes.shape[0], *planes.shape[2:]), np.uint8)
    confidence = np.empty(labels.shape, np.float32) if with_confidence else None
    for index, sample in enumerate(planes):
        _cpu_labels(sample, labels[index], None if confidence is None else confidence[index])
    return torch.from_numpy(labels), None if confidence is None else torch.from_numpy(confidence)


def _cpu_labels(planes: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None) -> None:
    """Class ids (first largest of the K planes [K, H, W]) into ``labels`` [H, W] and, when given, the max softmax
    probability into ``confidence`` [H, W]. The first largest is found without an arg-reduction across planes:
    planes equal to the maximum, weighted K, K - 1, ..., 1 by index, give K - class as their maximum."""
    classes = planes.shape[0]
    best = planes.max(axis=0)
    weights = np.arange(classes, 0, -1, dtype=np.uint8)[:, None, None]
    is_best = np.equal(planes, best)
    np.max(np.multiply(is_best, weights, dtype=np.uint8), axis=0, out=labels)
    np.subtract(classes, labels, out=labels)
    np.remainder(labels, classes, out=labels)  # a NaN row has no maximum: class 0, not K
    if confidence is not None:
        shifted = np.subtract(planes, best)
        np.exp(shifted, out=shifted)
        np.sum(shifted, axis=0, out=confidence)
        np.reciprocal(confidence, out=confidence)


#: What a Segmenter's ``convention`` may be: "auto" (the model's own, from its metadata) or a convention.
CONVENTION_CHOICES: tuple[str, ...] = ("auto", *MISSING_CONVENTIONS)


def check_convention(convention: str | None) -> None:
    """``ValueError`` unless ``convention`` is None or one of ``CONVENTION_CHOICES``."""
    if convention is not None and convention not in CONVENTION_CHOICES:
        raise ValueError(f"convention {convention!r}: expected one of {', '.join(CONVENTION_CHOICES)}")


class Segmenter:
    """Runs a model on one frame of (possibly incomplete) modality images, on any inference backend.

    Pre-processing (resize, normalise, missing-modality convention) and post-processing (labels and
    confidence) are this class's, the same for every backend; the backend only runs the network
    (``robustseg_core.deploy.backends``).

    Args:
        checkpoint: robustseg checkpoint path (the torch backend's model; for the others, what the ONNX file
            must agree with, or what is exported when ``onnx_file`` is None).
        device: "auto", "cpu", "cuda" or "cuda:N".
        fp16: reduced precision (fp16 on CUDA, bf16 for OpenVINO on CPUs that have it); None: where supported.
        short_side: network input short side (px); default: the model's ``eval_size``.
        convention: how missing modalities reach the model, "drop" or "zero"; None or "auto": the one the
            model was trained with (its metadata).
        backend: "torch", "onnxruntime", "openvino" or "tensorrt".
        onnx_file: an ``export_onnx`` model for the non-torch backends.
        fusion: which given modalities are fused (``fusion_policy.FUSION_POLICIES``): "all", or "validated" (the
            subset the model scored best with on validation, when it beats all given ones by more than
            ``fusion_min_gain`` mIoU points).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str = "auto",
        fp16: bool | None = None,
        short_side: int | None = None,
        convention: str | None = None,
        *,
        backend: str = "torch",
        onnx_file: str | Path | None = None,
        fusion: str = "all",
        fusion_min_gain: float = DEFAULT_MIN_GAIN,
    ) -> None:
        check_convention(convention)  # these two before a backend that may take long to load
        check_fusion_policy(fusion, fusion_min_gain, (), {}, "")  # the name and min_gain only: no model yet
        self.backend = load_backend(backend, device, fp16, checkpoint=checkpoint, onnx_file=onnx_file)
        self.device: torch.device = self.backend.device
        self.fp16: bool = self.backend.fp16
        self.metadata: ModelMetadata = self.backend.metadata
        self.modalities: tuple[str, ...] = self.metadata.modalities
        self.class_names: tuple[str, ...] = self.metadata.classes
        self.short_side = short_side or self.metadata.eval_size
        if not self.short_side:
            raise ValueError(f"{checkpoint or onnx_file}: no data.eval_size in its metadata; pass short_side")
        self.use_convention(convention)
        self.use_fusion(fusion, fusion_min_gain)
        self._input_buffer: torch.Tensor | None = None

    def use_convention(self, convention: str | None) -> None:
        """Feed missing modalities by ``convention`` ("drop" or "zero"); None or "auto": the model's own."""
        check_convention(convention)
        self.convention: str = self.metadata.missing_convention if convention in (None, "auto") else convention

    def use_fusion(self, policy: str, min_gain: float) -> None:
        """Fuse the given modalities by ``policy`` ("all" or "validated", see ``fusion_policy``) with ``min_gain``
        (validation mIoU points); ``FusionPolicyError`` (a ``ValueError``), nothing changed, when the model
        carries no validation mIoU for some combination the validated policy needs. Safe while another thread
        predicts: both values change at once."""
        validation = self.metadata.validation_miou
        check_fusion_policy(policy, min_gain, self.modalities, validation, self.metadata.source)
        #: given combination -> (fused modalities, reasons); None: fuse all. One attribute, read once per frame.
        self._fusion_table = fusion_table(self.modalities, validation, min_gain) if policy == "validated" else None
        self.fusion = (policy, min_gain)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input (height, width) for a camera frame of (height, width)."""
        return eval_size(height, width, self.short_side)

    def prepare(self, images: Mapping[str, np.ndarray | None], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [h, w, 3] by modality name (None or missing = absent) -> (images [1, M, 3, H', W'],
        present [1, M]) on the device, resized and normalised like the evaluation transform; absent slots hold
        0. On the CPU the images tensor is one buffer reused by the next call (frame after frame, no fresh
        allocation): use it before calling again.

        ``height`` x ``width`` (px) is the frame's size: the RGB, depth and LiDAR images must have it (they are
        registered to the camera); an event image may have its own (a low-resolution event camera: resized to the
        frame's size by nearest neighbour, then to the network's, exactly as the data set path does). Modality
        names the model does not take are ignored. ``ValueError`` naming any other key, or a dense image of
        another size."""
        unknown = sorted(str(key) for key in images if key not in self.modalities and key not in MODALITIES)
        if unknown:
            raise ValueError(f"unknown image keys {unknown}: expected modality names, the model's inputs "
                             f"being {', '.join(self.modalities)}")
        dense = ("rgb", "depth", "lidar")  # registered to the camera; events may come from a low-resolution sensor
        for modality in dense:
            image = images.get(modality)
            if image is not None and tuple(image.shape[:2]) != (height, width):
                raise ValueError(f"{modality} image is {image.shape[1]}x{image.shape[0]} px but the frame "
                                 f"{width}x{height} px: {', '.join(dense)} images must have the frame's size "
                                 "(only event images may differ)")
        net_h, net_w = self.input_size(height, width)
        keep = [images.get(m) is not None for m in self.modalities]
        if not any(keep):
            raise ValueError(f"no modality present; expected at least one of {self.modalities}")
        shape = (1, len(self.modalities), 3, net_h, net_w)
        if self._input_buffer is None or tuple(self._input_buffer.shape) != shape:
            with torch.inference_mode(False):  # a normal tensor: callers may fill it inside inference mode or not
                self._input_buffer = torch.empty(shape)
        buffer = self._input_buffer[0]
        present = [index for index, kept in enumerate(keep) if kept]
        modalities = [self.modalities[index] for index in present]
        # a low-resolution event image goes through the frame's size first, as in the data set and the ROS node
        # (for odd sizes one nearest step to the network size would pick other pixels than the two)
        resized = [resize_modality(resize_nearest(images[m], width, height) if m == "event" else images[m],
                                   m, net_w, net_h) for m in modalities]
        if len(present) == len(self.modalities):
            preprocess_stack(resized, modalities, out=buffer)
        else:
            for index, image, modality in zip(present, resized, modalities):
                preprocess_stack([image], [modality], out=buffer[index:index + 1])
            for index in set(range(len(self.modalities))) - set(present):
                buffer[index].zero_()
        tensor = self._input_buffer.to(self.device, non_blocking=True)
        keep_mask = torch.tensor([keep], device=self.device)
        return apply_missing_convention(tensor, keep_mask, self.convention)

    @torch.inference_mode()
    def predict(self, images: Mapping[str, np.ndarray | None], output_size: tuple[int, int] | None = None, *,
                with_confidence: bool = True) -> SegmentationResult:
        """Segment one frame; ``output_size`` (height, width) defaults to the RGB image's, else the largest
        present depth or LiDAR image's, else the event image's size; the confidence map only ``with_confidence``.
        The images are checked as ``prepare`` says, against ``output_size``."""
        start = time.perf_counter()
        if output_size is None:
            reference = images.get("rgb")
            if reference is None:
                present_images = [image for name, image in images.items() if image is not None and name != "event"]
                present_images = present_images or [image for image in (images.get("event"),) if image is not None]
                if not present_images:
                    raise ValueError(f"no modality present; expected at least one of {self.modalities}")
                reference = max(present_images, key=lambda image: image.shape[0] * image.shape[1])
            output_size = tuple(reference.shape[:2])
        left_out: dict[str, str] = {}
        given = [m for m in self.modalities if images.get(m) is not None]
        table = self._fusion_table  # one read: a live change applies to whole frames
        if table is not None and given:  # none given: prepare says so
            left_out = table[combination_name(given)][1]
            images = {m: image for m, image in images.items() if m not in left_out}
        tensor, present = self.prepare(images, *output_size)
        prepared = time.perf_counter()
        logits, agreement = self.backend.run_with_agreement(tensor, present)
        inferred = time.perf_counter()
        labels, confidence = labels_and_confidence(logits, output_size, with_confidence=with_confidence)
        result = SegmentationResult(
            labels=labels[0].cpu().numpy(),
            confidence=None if confidence is None else confidence[0].cpu().numpy(),
            present=tuple(images.get(m) is not None for m in self.modalities),
            timings_ms={},
            agreement={} if agreement is None else {m: float(value) for m, value in zip(self.modalities, agreement[0].tolist())
                                                    if images.get(m) is not None},
            left_out=left_out,
        )
        done = time.perf_counter()
        result.timings_ms = {
            "preprocess": (prepared - start) * 1e3, "infer": (inferred - prepared) * 1e3, "postprocess": (done - inferred) * 1e3,
        }
        return result

    def warmup(self, height: int, width: int, iterations: int = 2) -> None:
        """Run a few all-modality dummy frames so the first real frame is not slow."""
        dummy = {m: np.zeros((height, width, 3), np.uint8) for m in self.modalities}
        for _ in range(iterations):
            self.predict(dummy)
