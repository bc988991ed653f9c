"""The bag evaluation's report: ``report.md`` and the plots ``miou_over_time.png``,
``latency_histogram.png`` and ``samples.png``, from ``Evaluation.results()`` (docs/bags.md).

The plots are drawn in memory; ``write_report`` then writes them, ``report.md`` and ``metrics.json`` (each
atomically, within milliseconds) and deletes the plots an earlier run left that this run did not draw
(``--no-plots``, no sample frames), so the folder shows one run, and a run cut short while evaluating or drawing
leaves the previous run's files as they were.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from robustseg_core.atomic import write_bytes_atomic, write_text_atomic
from robustseg_core.classes import colorize
from robustseg_ros.bagtools.scoring import Evaluation

TIMING_LABELS = {"processing": "processing time per frame (ms)", "latency": "end-to-end latency per frame (ms)"}
#: Plot name -> file name of every plot ``draw_plots`` may draw.
PLOT_FILES = {"miou_over_time": "miou_over_time.png", "latency_histogram": "latency_histogram.png",
              "samples": "samples.png"}


def _png(figure) -> bytes:
    """``figure`` as a PNG (100 dpi)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_files(plots: dict[str, bytes]) -> dict[str, str]:
    """Plot name -> file name of the ``PLOT_FILES`` among ``plots`` (file name -> PNG)."""
    return {name: file for name, file in PLOT_FILES.items() if file in plots}


def write_report(output: Path, result: dict, plots: dict[str, bytes]) -> list[Path]:
    """This run's ``plots`` (file name -> PNG), ``report.md`` and ``metrics.json`` of ``result`` into ``output``;
    deletes the plots of ``PLOT_FILES`` an earlier run left that this run did not draw and returns them."""
    for name, png in plots.items():
        write_bytes_atomic(output / name, png)
    write_text_atomic(output / "report.md", report_markdown(result, plot_files(plots)))
    write_text_atomic(output / "metrics.json", json.dumps(result, indent=1, sort_keys=True, allow_nan=False) + "\n")
    stale = [output / name for name in PLOT_FILES.values() if name not in plots and (output / name).exists()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def draw_plots(evaluation: Evaluation, result: dict, start_s: float) -> dict[str, bytes]:
    """miou_over_time.png, latency_histogram.png and samples.png (times relative to the bag start ``start_s``),
    in memory: file name -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plots = {}
    figure, axis = plt.subplots(figsize=(12, 3.5))
    colors = plt.get_cmap("tab10")
    for index, fault in enumerate(evaluation.faults):
        axis.axvspan(fault.start_s - start_s, fault.end_s - start_s, color=colors(index % 10), alpha=0.2,
                     label=fault.name)
    times = [frame.stamp_s - start_s for frame in evaluation.frames]
    if result["accuracy"] is not None:
        scored = [(t, frame.miou) for t, frame in zip(times, evaluation.frames) if frame.miou is not None]
        axis.plot([t for t, _ in scored], [value for _, value in scored], "k.-", label="frame mIoU (present classes)")
        axis.set_ylabel("mIoU (%)")
    else:
        axis.step(times, [len(frame.fed.strip("-")) for frame in evaluation.frames], "k-", where="post",
                  label="modalities fed")
        axis.set_ylabel("modalities fed")
    axis.set_xlabel("bag time (s)")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title("mIoU over time" if result["accuracy"] is not None else "modalities fed over time")
    figure.tight_layout()
    plots[PLOT_FILES["miou_over_time"]] = _png(figure)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(result["timing"]["per_frame_ms"] or [0.0], bins=30, color="tab:blue")
    axis.axvline(result["timing"]["late_threshold_ms"], color="tab:red", linestyle="--", label="camera period")
    axis.set_xlabel(TIMING_LABELS[result["timing"]["measure"]])
    axis.set_ylabel("frames")
    axis.legend(fontsize=8)
    figure.tight_layout()
    plots[PLOT_FILES["latency_histogram"]] = _png(figure)
    plt.close(figure)

    if evaluation.samples:
        rows = len(evaluation.samples)
        figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
        for row, sample in enumerate(evaluation.samples):
            blank = np.zeros((*sample.prediction.shape, 3), np.uint8)
            panels = (("RGB", sample.rgb if sample.rgb is not None else blank),
                      ("label", colorize(sample.label) if sample.label is not None else blank),
                      ("prediction", colorize(sample.prediction)), ("confidence", sample.confidence))
            for column, (name, image) in enumerate(panels):
                axes[row][column].imshow(image, vmin=0.0, vmax=1.0, cmap="viridis" if image.ndim == 2 else None)
                axes[row][column].set_axis_off()
                axes[row][column].set_title(f"{name}: {sample.title}" if column == 0 else name, fontsize=7, loc="left")
        figure.tight_layout()
        plots[PLOT_FILES["samples"]] = _png(figure)
        plt.close(figure)
    return plots


def report_markdown(result: dict, files: dict[str, str]) -> str:
    """``report.md``: frames, accuracy (or the modalities fed), faults, timing and the plots in ``files``."""
    lines = [f"# Bag evaluation: `{result['bag']}`", "",
             f"Checkpoint `{result['checkpoint']}` on `{result['device']}`; ground truth: "
             f"`{result['ground_truth_topic'] or 'none (no accuracy)'}`.", ""]
    frames = result["frames"]
    lines += ["## Frames", "", "| frames | camera | timer | scored | camera messages | without frame | "
              "dropped | skipped | failed |", "|---|---|---|---|---|---|---|---|---|",
              f"| {frames['total']} | {frames['camera']} | {frames['timer']} | {frames['scored']} | "
              f"{frames['camera_messages']} | {frames['camera_messages_without_frame']} | "
              f"{frames.get('pipeline_frames_dropped', 0)} | {frames.get('pipeline_frames_skipped', 0)} | "
              f"{frames['failed']} |", ""]
    if result["accuracy"] is not None:
        accuracy = result["accuracy"]
        lines += ["## Accuracy", "", f"mIoU {accuracy['miou']:.2f} % (all 25 classes), "
                  f"{accuracy['miou_present']:.2f} % (classes present), pixel accuracy "
                  f"{accuracy['pixel_accuracy']:.2f} %.", "",
                  "| window | frames | mIoU present (%) | pixel acc. (%) |", "|---|---|---|---|"]
        lines += [f"| {name} | {value['frames']} | {value['miou_present']:.2f} | {value['pixel_accuracy']:.2f} |"
                  for name, value in result["accuracy_by_window"].items()]
        lines += ["", "| modalities fed | frames | mIoU present (%) | pixel acc. (%) |", "|---|---|---|---|"]
        lines += [f"| {code} | {value['frames']} | {value['miou_present']:.2f} | {value['pixel_accuracy']:.2f} |"
                  for code, value in result["accuracy_by_modalities"].items()]
        lines.append("")
    else:
        lines += ["## Modalities fed", "", "| modalities | frames |", "|---|---|"]
        lines += [f"| {code} | {count} |" for code, count in result["frames_by_modalities"].items()]
        lines.append("")
    if result["faults"]:
        lines += ["## Faults", "", "| fault | reference message (s) | STALE at (s) | delay (s) | worst state | "
                  "recovered at (s) |", "|---|---|---|---|---|---|"]
        for fault in result["faults"]:
            lines.append(f"| {fault['name']} | {_text(fault['reference_message_s'])} | {_text(fault['stale_at_s'])} | "
                         f"{_text(fault['stale_delay_s'])} | {fault['worst_state'] or '-'} | "
                         f"{_text(fault['recovered_at_s'])} |")
        lines.append("")
    lines += _degradation_lines(result)
    timing = result["timing"]["frame_ms"]
    if timing["count"]:
        lines += [f"## {TIMING_LABELS[result['timing']['measure']].capitalize()}", "",
                  "| mean | p50 | p90 | p95 | p99 | max | late frames |",
                  "|---|---|---|---|---|---|---|",
                  f"| {timing['mean']} | {timing['p50']} | {timing['p90']} | {timing['p95']} | {timing['p99']} | "
                  f"{timing['max']} | {result['timing']['late_frames']} (> {result['timing']['late_threshold_ms']} "
                  "ms) |", ""]
    captions = {"miou_over_time": "Accuracy over time (fault windows shaded)",
                "latency_histogram": TIMING_LABELS[result["timing"]["measure"]].capitalize(),
                "samples": "Sample frames"}
    for key, name in files.items():
        lines += [f"### {captions[key]}", "", f"![{captions[key]}]({name})", ""]
    return "\n".join(lines)


def _degradation_lines(result: dict) -> list[str]:
    """The report's tables of sensors that lie: per content fault the delay to DEGRADED, the delay to clear and
    the window's mIoU as configured, with and without fusing the sensor; false alarms per sensor."""
    lines = []
    quality = [fault for fault in result["faults"] if "degraded_at_s" in fault]
    if quality:
        lines += ["## Degraded sensors", "", "Delays in seconds: to DEGRADED from the fault's onset, to its end "
                  "from the fault's end. mIoU (classes present, %) over the window's frames as configured "
                  "(`health.fuse_degraded`), with every DEGRADED sensor fused and with none (offline only).", "",
                  "| fault | DEGRADED after | cleared after | worst state | frames | mIoU configured | mIoU fused | "
                  "mIoU not fused |", "|---|---|---|---|---|---|---|---|"]
        for fault in quality:
            policies = fault["accuracy_by_policy"] or {}
            miou = {policy: f"{value['miou_present']:.2f}" for policy, value in policies.items()}
            frames = next(iter(policies.values()))["frames"] if policies else "-"
            lines.append(f"| {fault['name']} | {_text(fault['degraded_delay_s'])} | {_clear_text(fault)} | "
                         f"{fault['worst_state'] or '-'} | {frames} | {miou.get('configured', '-')} | "
                         f"{miou.get('fused', '-')} | {miou.get('not_fused', '-')} |")
        lines.append("")
    names = {"whole_drive": "Whole drive", "frames_with_a_degraded_sensor": "Frames with a DEGRADED sensor"}
    for scope, policies in (result.get("accuracy_by_policy") or {}).items():
        lines += [f"{names[scope]} ({policies['fused']['frames']} frames), mIoU (classes present): "
                  f"{policies['configured']['miou_present']:.2f} % as configured, {policies['fused']['miou_present']:.2f}"
                  f" % fusing every DEGRADED sensor, {policies['not_fused']['miou_present']:.2f} % leaving them out.",
                  ""]
    agreement = result.get("feature_agreement_by_window") or {}
    if agreement:
        modalities = sorted({modality for table in agreement.values() for modality in table})
        lines += ["## Feature agreement", "", "Model-side evidence: per window, the mean cosine similarity of each "
                  "modality's deepest encoder features with the fused ones, with every present sensor fused "
                  "(offline; live: the sensors that fed). Reported, not used to judge.", "",
                  "| window | " + " | ".join(modalities) + " |", "|---|" + "---|" * len(modalities)]
        lines += [f"| {window} | " + " | ".join(f"{table[m]:.3f}" if m in table else "-" for m in modalities) + " |"
                  for window, table in agreement.items()]
        lines.append("")
    if result.get("false_alarms"):
        lines += ["## False alarms", "", "Messages outside every fault window of their sensor (and more than "
                  "1 s after one ended) that arrived while the sensor was DEGRADED.", "",
                  "| sensor | nominal messages | DEGRADED | fraction |", "|---|---|---|---|"]
        lines += [f"| {sensor} | {value['nominal_messages']} | {value['degraded']} | {value['fraction']:.2%} |"
                  for sensor, value in result["false_alarms"].items()]
        lines.append("")
    return lines


def _text(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _clear_text(fault: dict) -> str:
    """The delay to clear, or how long after the fault's end the bag still showed the sensor DEGRADED."""
    observed_until = fault.get("observed_until_s")
    if fault["clear_delay_s"] is not None or fault["degraded_at_s"] is None or observed_until is None:
        return _text(fault["clear_delay_s"])
    return f"not by the sensor's last message (+{observed_until - fault['end_s']:.3f})"
