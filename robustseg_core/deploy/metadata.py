"""What a deployed model must carry so that serving feeds it right: classes, modality order, normalisation,
the missing-modality convention it was trained with, and its network input size.

The same ``ModelMetadata`` comes from a robustseg checkpoint (``from_checkpoint``) or from an ONNX file
written by ``export_onnx`` (``read_onnx_metadata``: one JSON document under the ``robustseg`` key of the
file's ``metadata_props``). ``metadata_differences`` names what two of them disagree on, so a node
configured for one checkpoint refuses an ONNX file of another with the difference in the message.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..classes import CLASS_NAMES
from ..errors import UserError
from ..fusion_policy import validation_miou
from ..models import MISSING_CONVENTIONS
from ..models.checkpoint import normalization_differences

#: The ``metadata_props`` key holding the JSON document, and the document's format tag.
ONNX_METADATA_KEY = "robustseg"
ONNX_FORMAT = "robustseg-onnx/1"
#: Graph inputs and output of an exported model.
ONNX_INPUTS = ("images", "present")
ONNX_OUTPUT = "logits"


class ModelMetadataError(UserError, ValueError):
    """A model file without usable metadata, or one that disagrees with what serving is configured for."""


@dataclass(frozen=True)
class ModelMetadata:
    """Plain facts about a trained model (JSON-serialisable).

    ``normalization``: modality -> [mean[3], std[3]] applied after scaling to [0, 1];
    ``missing_convention``: "drop" or "zero", as in training; ``eval_size``: the network input short side
    (px) it was evaluated at, or None; ``architecture``: the checkpoint's architecture dict;
    ``checkpoint_sha256``: of the checkpoint file an ONNX model was exported from; ``validation_miou``: its mIoU
    (%) on the validation split per modality combination (``{"RD": 34.0, ...}``, what the ``validated`` fusion
    policy ranks subsets by; only the full combination for a teacher); ``source``: the file this metadata was
    read from (not stored).
    """

    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    normalization: dict[str, list]
    missing_convention: str = "drop"
    eval_size: int | None = None
    architecture: dict = field(default_factory=dict)
    checkpoint_sha256: str = ""
    validation_miou: dict[str, float] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], source: str | os.PathLike = "") -> ModelMetadata:
        """Metadata of a loaded checkpoint dict (``load_checkpoint``); a teacher (no ``student`` section in its
        config) counts as "drop"."""
        meta = state.get("meta", {})
        config = meta.get("config", {})
        architecture = dict(state["architecture"])
        return cls(
            classes=tuple(meta.get("classes", CLASS_NAMES)),
            modalities=tuple(architecture["modalities"]),
            normalization={name: [list(part) for part in value] for name, value in meta.get("normalization", {}).items()},
            missing_convention=config.get("student", {}).get("convention", "drop"),
            eval_size=config.get("data", {}).get("eval_size"),
            architecture=architecture,
            validation_miou=validation_miou(meta.get("scores")),
            source=str(source),
        )

    def to_json(self) -> str:
        """The JSON document stored in an ONNX file (with the format tag and the graph's inputs)."""
        document = {"format": ONNX_FORMAT, "inputs": {
            "images": "float32 [B, M, 3, H, W], normalised, M in `modalities` order, H and W multiples of 32",
            "present": "bool [B, M], at least one True per sample"}, "output": "logits float32 [B, K, H, W]",
            **asdict(self)}
        del document["source"]
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelMetadata:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise ModelMetadataError(f"{source}: robustseg metadata is not JSON ({error})") from error
        if document.get("format") != ONNX_FORMAT:
            raise ModelMetadataError(f"{source}: metadata format {document.get('format')!r}, expected {ONNX_FORMAT!r} "
                                     "(re-export it with export_onnx)")
        try:
            metadata = cls(classes=tuple(document["classes"]), modalities=tuple(document["modalities"]),
                           normalization=dict(document["normalization"]),
                           missing_convention=document["missing_convention"], eval_size=document.get("eval_size"),
                           architecture=dict(document.get("architecture", {})),
                           checkpoint_sha256=document.get("checkpoint_sha256", ""),
                           validation_miou=dict(document.get("validation_miou", {})), source=source)
        except (KeyError, TypeError) as error:
            raise ModelMetadataError(f"{source}: robustseg metadata lacks {error}") from error
        if metadata.missing_convention not in MISSING_CONVENTIONS:
            raise ModelMetadataError(f"{source}: missing_convention {metadata.missing_convention!r} is not one of "
                                     f"{MISSING_CONVENTIONS}")
        return metadata


def read_onnx_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The ``ModelMetadata`` of an ONNX file written by ``export_onnx``; ``ModelMetadataError`` naming the file
    when it is missing, not ONNX, or carries no robustseg metadata. Reads the graph structure only (``onnx``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelMetadataError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others on foreign files
        raise ModelMetadataError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") from error
    props = {prop.key: prop.value for prop in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ModelMetadataError(f"{path}: no robustseg metadata (classes, modalities, normalisation); export the "
                                 "checkpoint with `export_onnx --checkpoint CK --out model.onnx`")
    inputs = tuple(value.name for value in model.graph.input)
    if inputs != ONNX_INPUTS:
        raise ModelMetadataError(f"{path}: graph inputs {inputs}, expected {ONNX_INPUTS}")
    return ModelMetadata.from_json(props[ONNX_METADATA_KEY], str(path))


def metadata_differences(found: ModelMetadata, expected: ModelMetadata) -> list[str]:
    """One line per compared key (classes, modality order, normalisation) on which ``found`` differs from
    ``expected``; empty when they agree."""
    differences = []
    if found.classes != expected.classes:
        changed = [f"{index}: {a!r} vs {b!r}" for index, (a, b) in enumerate(zip(found.classes, expected.classes))
                   if a != b][:3]
        differences.append(f"classes: {len(found.classes)} vs {len(expected.classes)} expected"
                           + (f" (first differences {', '.join(changed)})" if changed else ""))
    if found.modalities != expected.modalities:
        differences.append(f"modality order: {list(found.modalities)} vs {list(expected.modalities)} expected")
    if found.normalization != expected.normalization:
        names = sorted(name for name in set(found.normalization) | set(expected.normalization)
                       if found.normalization.get(name) != expected.normalization.get(name))
        differences.append("normalisation of " + ", ".join(
            f"{name}: {found.normalization.get(name)} vs {expected.normalization.get(name)} expected" for name in names))
    return differences


def check_metadata(found: ModelMetadata, expected: ModelMetadata | None) -> None:
    """``ModelMetadataError`` naming each difference of ``found`` from ``expected`` (when given) and from the
    normalisation the sensor encoders apply now."""
    differences = metadata_differences(found, expected) if expected is not None else []
    differences += normalization_differences(found.normalization or None, found.modalities)
    if differences:
        against = f" and the checkpoint {expected.source}" if expected is not None else ""
        raise ModelMetadataError(f"{found.source}: the model does not match what serving is configured for"
                                 f"{against}: " + "; ".join(differences))
