"""``export_onnx``: a robustseg checkpoint as an ONNX model that is right for every modality combination.

``torch.onnx.export(model, (images, present))`` of the segmentor itself passes the ONNX checker and is
wrong: its masked-mean fusion selects the present (sample, modality) pairs and adds them up with
``index_add``, which the exporter writes as a ScatterElements without reduction, so with two or more
modalities present the last one overwrites the others. The export here traces ``PresenceMaskedSegmentor``
instead: every modality slot is encoded, absent slots are zeroed by the presence mask (a graph input),
and the fusion is the masked sum divided by the number of present modalities; height and width are
dynamic (multiples of 32), and so is the batch.

Right after the export the file is checked with onnxruntime against the checkpoint's own forward on all
non-empty modality combinations (15 for R, D, E, L) at a size other than the traced one; the file is
written (atomically) only when every logit agrees within ``|onnx - torch| <= ATOL + RTOL * |torch|``.
The checkpoint's classes, modality order, normalisation, missing-modality convention and eval size
are stored in the file (``robustseg_core.deploy.metadata``)::

    export_onnx --checkpoint robustseg_ros/models/robustseg_student.pt --out student.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import write_bytes_atomic, write_text_atomic
from ..classes import combination_name
from ..cli import console_script
from ..errors import UsageError, UserError, cause
from ..models import MultimodalSegmentor
from ..models.checkpoint import build_model_from_checkpoint, file_sha256
from ..output_folder import check_not_an_input
from .metadata import ONNX_INPUTS, ONNX_METADATA_KEY, ONNX_OUTPUT, ModelMetadata, ModelMetadataError

#: Tolerance of the post-export check, on every logit: |onnx - torch| <= ATOL + RTOL * |torch|.
ATOL = 1e-3
RTOL = 1e-3
OPSET = 17
#: Opsets the export supports: attention (``aten::scaled_dot_product_attention``) needs 14, and 20 is the newest
#: torch's TorchScript exporter writes (torch 2.13).
OPSETS = range(14, 21)
#: Input sizes (height, width) of the trace and of the check: different, so dynamic sizes are exercised.
TRACE_SIZE = (64, 64)
CHECK_SIZE = (96, 128)


PROG = "export_onnx"


class ExportCheckError(UserError, RuntimeError):
    """The export failed, or the exported model disagrees with the checkpoint; the message names the opset, or the
    combinations and the errors."""


class PresenceMaskedSegmentor(nn.Module):
    """The segmentor in the form that exports: images [B, M, 3, H, W] float, present [B, M] bool ->
    logits [B, K, H, W].

    Every slot is encoded (absent ones too, their features then zeroed), and each stage's fusion is the
    sum over present slots divided by their count: the masked mean of ``MultimodalSegmentor.forward``
    without data-dependent indexing. A sample without any present slot gives the head's output for
    all-zero features instead of an error (serving never sends one).
    """

    def __init__(self, model: MultimodalSegmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, present: Tensor) -> Tensor:
        absent = ~present[:, :, None, None, None]
        count = present.sum(dim=1).clamp(min=1).to(images.dtype)[:, None, None, None]
        fused = [stage.masked_fill(absent, 0.0).sum(dim=1) / count for stage in self.model.encode_all(images)]
        return self.model.decode(fused, images.shape[-2:])


@dataclass(frozen=True)
class ExportCheck:
    """The post-export comparison: per combination name, the largest |onnx - torch| logit difference and the
    fraction of pixels whose class (argmax) agrees."""

    max_abs_error: dict[str, float]
    label_agreement: dict[str, float]
    size: tuple[int, int]

    def summary(self) -> str:
        worst = max(self.max_abs_error, key=self.max_abs_error.get)
        return (f"onnxruntime vs torch on {len(self.max_abs_error)} modality combinations at "
                f"{self.size[1]}x{self.size[0]}: largest logit error {self.max_abs_error[worst]:.2e} ({worst}), "
                f"tolerance {ATOL:g} + {RTOL:g} x |logit|; labels agree on "
                f"at least {100 * min(self.label_agreement.values()):.3f} % of pixels in every combination")


def modality_combinations(modalities: tuple[str, ...]) -> list[tuple[bool, ...]]:
    """Presence masks of every non-empty subset of ``modalities``, smallest first (R, D, ..., RDEL)."""
    return [tuple(modality in subset for modality in modalities)
            for size in range(1, len(modalities) + 1) for subset in itertools.combinations(modalities, size)]


def check_onnx_against_torch(onnx_model: bytes | str | os.PathLike, model: MultimodalSegmentor,
                             size: tuple[int, int] = CHECK_SIZE, seed: int = 0) -> ExportCheck:
    """Run an ONNX model (bytes or a path) with onnxruntime (CPU) and ``model`` (the checkpoint's own forward)
    on one batch holding every modality combination of random normalised images [C, M, 3, H, W]; raise
    ``ExportCheckError`` naming each combination whose logits differ beyond the tolerance."""
    import onnxruntime

    modalities = tuple(model.modalities)
    masks = modality_combinations(modalities)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((len(masks), len(modalities), 3, *size), generator=generator)
    present = torch.tensor(masks)
    with torch.inference_mode():
        expected = model.eval()(images, present).numpy()
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    [logits] = session.run([ONNX_OUTPUT], {"images": images.numpy(), "present": present.numpy()})
    if logits.shape != expected.shape:
        raise ExportCheckError(f"ONNX logits have shape {logits.shape}, torch {expected.shape}")
    errors, agreement, failed = {}, {}, []
    for index, mask in enumerate(masks):
        name = combination_name(m for m, keep in zip(modalities, mask) if keep)
        difference = np.abs(logits[index] - expected[index])
        errors[name] = float(difference.max())
        agreement[name] = float((logits[index].argmax(0) == expected[index].argmax(0)).mean())
        if not (difference <= ATOL + RTOL * np.abs(expected[index])).all():
            failed.append(f"{name} (largest logit error {errors[name]:.3g})")
    if failed:
        raise ExportCheckError(f"the ONNX model disagrees with the checkpoint beyond {ATOL:g} + {RTOL:g} x |logit| "
                               f"for {len(failed)} of {len(masks)} modality combinations: {', '.join(failed)}")
    return ExportCheck(errors, agreement, size)


@contextlib.contextmanager
def native_stdout_discarded():
    """File descriptor 1 goes to /dev/null inside the block (the C++ side of torch writes there directly)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def onnx_bytes(model: MultimodalSegmentor, metadata: ModelMetadata, opset: int = OPSET) -> bytes:
    """Trace ``PresenceMaskedSegmentor(model)`` to ONNX (dynamic batch, height, width) with ``metadata``
    stored under the ``robustseg`` key; returns the serialized model (checked by the ONNX checker)."""
    import onnx

    wrapper = PresenceMaskedSegmentor(model.eval()).eval()
    images = torch.zeros((2, len(model.modalities), 3, *TRACE_SIZE))
    present = torch.ones((2, len(model.modalities)), dtype=torch.bool)
    dynamic_axes = {"images": {0: "batch", 3: "height", 4: "width"}, "present": {0: "batch"},
                    ONNX_OUTPUT: {0: "batch", 2: "height", 3: "width"}}
    with tempfile.TemporaryDirectory(prefix="robustseg_export_") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        traced = Path(folder) / "model.onnx"
        try:
            with native_stdout_discarded():  # on failure the exporter prints the whole TorchScript graph there
                torch.onnx.export(wrapper, (images, present), str(traced), dynamo=False,
                                  input_names=list(ONNX_INPUTS), output_names=[ONNX_OUTPUT],
                                  dynamic_axes=dynamic_axes, opset_version=opset)
        except ImportError:
            raise
        except Exception as error:  # an opset the exporter or an operator does not support, among others
            raise ExportCheckError(f"torch.onnx.export failed at opset {opset} ({cause(error)})") from error
        graph = onnx.load(str(traced))
    onnx.checker.check_model(graph)
    graph.doc_string = f"robustseg {model.preset} segmentor, {len(metadata.classes)} classes"
    onnx.helper.set_model_props(graph, {ONNX_METADATA_KEY: metadata.to_json()})
    return graph.SerializeToString()


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, opset: int = OPSET) -> ExportCheck:
    """Export ``checkpoint`` to ``out`` (written only once the check against torch passes); returns the check.

    Raises ``CheckpointError`` for an unusable checkpoint and ``ExportCheckError`` when the export is wrong.
    """
    model, state = build_model_from_checkpoint(checkpoint)
    metadata = replace(ModelMetadata.from_checkpoint(state, checkpoint), checkpoint_sha256=file_sha256(checkpoint))
    serialized = onnx_bytes(model, metadata, opset)
    check = check_onnx_against_torch(serialized, model)
    write_bytes_atomic(out, serialized)
    return check


def cached_onnx(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike, metadata: ModelMetadata) -> Path:
    """The verified ONNX export of ``checkpoint`` in ``cache_dir`` (``<sha256 prefix>.onnx``), exported now
    when absent, damaged (its bytes no longer have the SHA-256 recorded beside it in ``<name>.onnx.sha256``
    when it was exported) or stale (its stored metadata differs from ``metadata``, the checkpoint's, with
    the checkpoint hash: another checkpoint, or an upgrade that stores more metadata)."""
    from .metadata import read_onnx_metadata

    sha256 = file_sha256(checkpoint)
    path = Path(cache_dir) / f"{Path(checkpoint).stem}-{sha256[:16]}.onnx"
    digest_file = path.with_name(path.name + ".sha256")
    if path.is_file():
        expected = replace(metadata, checkpoint_sha256=sha256)
        try:
            if digest_file.read_text().strip() == file_sha256(path) and read_onnx_metadata(path) == expected:
                return path
        except (OSError, ModelMetadataError):
            pass
    export_onnx(checkpoint, path)
    write_text_atomic(digest_file, file_sha256(path) + "\n")
    return path


def default_cache_dir() -> Path:
    """``$ROBUSTSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/robustseg_ros``, else ``~/.cache/robustseg_ros``."""
    if os.environ.get("ROBUSTSEG_CACHE_DIR"):
        return Path(os.environ["ROBUSTSEG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robustseg_ros"


def check_writable_file(path: Path) -> None:
    """``UsageError`` when ``path`` is a folder or its folder cannot be created or written to."""
    if path.is_dir():
        raise UsageError(f"--out {path}: is a folder; give the ONNX file to write (e.g. {path / 'student.onnx'})")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: cannot write into {folder}")


def main(argv: list[str] | None = None) -> Path:
    """Export and check (``argv``: the command line without the program name); returns the ONNX file."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="robustseg checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=OPSET, metavar="OPSET",
                        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1}")
    args = parser.parse_args(argv)
    check_not_an_input("--out", args.out, [args.checkpoint], "the checkpoint exported")
    check_writable_file(Path(args.out))  # before minutes of export and checking, not after
    try:
        check = export_onnx(args.checkpoint, args.out, args.opset)
    except ImportError as error:
        raise UserError(f"{error.name or error} is not installed: pip install 'robustseg_ros[onnx]'") from error
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"{PROG}: wrote {args.out} ({size_mb:.1f} MB); {check.summary()}")
    return Path(args.out)


cli = console_script(main, PROG)


if __name__ == "__main__":
    sys.exit(cli())
