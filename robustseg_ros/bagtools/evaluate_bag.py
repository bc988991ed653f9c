"""``evaluate_bag``: run the perception pipeline over a rosbag2 bag and report accuracy, health and timing.

Offline (the default, ``offline.OfflineEvaluation``): the bag is read in bag-timestamp order and fed
in-process to ``PerceptionPipeline``, the object ``perception_node`` wraps, with the node clock set to
each message's bag time; two runs over one bag give the same frames, predictions and metrics, only the
``timing`` section (wall-clock processing time) varies.

Parameters: the node's defaults < ``--params-file`` (config/perception.yaml layout) < the rig
parameters recorded in the bag's fault timeline (``record_synthetic``) < ``-p name:=value``.
Sensor topics are the node's parameters (relative names get a leading "/").

Ground truth: a label image topic (``--labels-topic``; class ids, 255 ignore, as mono8 or 8UC1, or mono16 /
16UC1 with no value above 255; ``scoring.LABEL_ENCODINGS``) matched to output frames by header stamp; another
encoding or aspect ratio stops the run. Without it the report has everything but accuracy. With
``lidar.use_tf`` the offline LiDAR extrinsic comes from the bag's ``/tf_static`` (``offline``). Fault windows
come from the ``/robustseg/fault_timeline`` topic or the ``fault_timeline.json`` in the bag folder.

Live mode (``--mode live``, ``live.LiveEvaluation``): the bag is replayed over DDS with ``/clock`` into a
perception node on sim time (running elsewhere, or in this process with ``--spawn-node``), and the
node's outputs and ``/diagnostics`` are recorded and scored the same way (``scoring``); not repeatable
(DDS, CPU load).

Outputs in ``--output``: ``metrics.json`` (fields in docs/bags.md), ``report.md``,
``miou_over_time.png``, ``latency_histogram.png``, ``samples.png``. ``--record-outputs OUT`` also writes
the inputs and every output of the node into a new MCAP bag ``OUT`` (``recorder``) to open in Foxglove
with ``config/foxglove_layout.json`` or to replay into RViz.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from sensor_msgs.msg import Image

from robustseg_core.cli import (console_script, non_negative_float, non_negative_int, positive_float,
                                split_ros_args)
from robustseg_core.output_folder import FolderLock, check_not_an_input
from robustseg_ros.bagtools.bag_io import (
    FAULT_TIMELINE_TOPIC, GROUND_TRUTH_TOPIC, BagError, BagReader, message_type_name,
)
from robustseg_ros.bagtools.faults import faults_from_record, read_fault_record
from robustseg_ros.bagtools.live import run_live
from robustseg_ros.bagtools.offline import OfflineEvaluation
from robustseg_ros.bagtools.recorder import BagRecorder
from robustseg_ros.bagtools.report import draw_plots, plot_files, write_report
from robustseg_ros.conversions import nanoseconds_to_seconds
from robustseg_ros.params import (
    PARAMETER_DEFAULTS,
    SENSOR_OF_MODALITY,
    SENSORS,
    PerceptionParams,
    absolute_topic,
    load_segmenter,
    parse_override,
    read_params_file,
)
from robustseg_ros.pipeline import input_message_types


def resolve_parameters(args, record: dict) -> PerceptionParams:
    """The node's defaults < ``--params-file`` < the rig parameters of the timeline ``record`` (unless
    ``--ignore-rig``) < ``-p name:=value`` < ``--checkpoint`` / ``--device``."""
    values = dict(PARAMETER_DEFAULTS)
    if args.params_file:
        values.update(read_params_file(args.params_file))
    if not args.ignore_rig:
        rig = {name: tuple(value) if isinstance(value, list) else value
               for name, value in record.get("rig_parameters", {}).items()}
        try:
            PerceptionParams({**PARAMETER_DEFAULTS, **rig})
        except ValueError as error:  # the bag's, not the user's: status 1, and the way round it
            raise BagError(f"bag {args.bag}: the rig_parameters of its fault timeline ({args.timeline_topic}) are "
                           f"refused: {error}; evaluate without them with --ignore-rig") from error
        values.update(rig)
    for text in args.param:
        name, value = parse_override(text)
        values[name] = value
    if args.checkpoint:
        values["checkpoint"] = args.checkpoint
    if args.device:
        values["device"] = args.device
    return PerceptionParams(values)


#: The parameter that sets each input's message type (``pipeline.input_message_types``).
TYPE_PARAMETERS = {"camera": "camera.transport", "depth": "depth.transport", "events": "events.input_type"}


def check_input_topics(bag: BagReader, params: PerceptionParams, topics: dict[str, str], sensors: list[str],
                       labels_topic: str = "") -> None:
    """``BagError`` naming the inputs the bag lacks, or holds with another message type than the parameters
    configure, with the parameters that fix it. CameraInfo is an input only with depth or LiDAR (their
    encodings need the camera's intrinsics); ``labels_topic`` (when given) must hold ``sensor_msgs/Image``."""
    inputs = [*sensors, *(["camera_info"] if {"depth", "lidar"} & set(sensors) else [])]
    try:  # types are compared below: the expected ones are importable, so is a topic that holds one
        bag.require([topics[name] for name in inputs], what="sensor", check_types=False)
    except BagError as error:
        absent = [name for name in inputs if topics[name] not in bag.topics]
        hints = [f"-p {name}.topic:=/name or -p {name}.enabled:=false" if name != "camera_info"
                 else "-p camera.info_topic:=/name" for name in absent]
        raise BagError(f"{error}. Point the node at the bag's topics or disable the sensor: "
                       f"{'; '.join(hints)}") from error
    types = input_message_types(params)
    expected = {topics[name]: (types[name], f" (set by {TYPE_PARAMETERS[name]})" if name in TYPE_PARAMETERS else "")
                for name in inputs}
    if labels_topic:
        expected[labels_topic] = (Image, " (--labels-topic: a label image of class ids)")
    wrong = [f"{topic} holds {bag.topics[topic]}, not {message_type_name(cls)}{hint}"
             for topic, (cls, hint) in expected.items() if bag.topics[topic] != message_type_name(cls)]
    if wrong:
        raise BagError(f"bag {bag.path}: {'; '.join(wrong)}")


def evaluate(args) -> dict:
    """Evaluate ``args.bag`` (offline, or live with ``--mode live``); writes the JSON, report and plots and
    returns the JSON dict."""
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    bag_path = Path(args.bag)
    output = output_folder(args)
    check_not_an_input("--record-outputs", args.record_outputs, [output, bag_path],
                       "the report folder (--output) or the bag evaluated")
    created = not output.exists()
    lock = FolderLock(output)  # before minutes of evaluation: writable, and no other evaluation writing there
    lock.acquire()
    recorder = None
    try:
        recorder = BagRecorder(args.record_outputs) if args.record_outputs else None
        result, plots = _evaluate(args, bag_path, recorder)
        if recorder is not None:
            recorder.close()
            result["recording"] = {"bag": str(recorder.path), "messages": dict(sorted(recorder.counts.items()))}
            print(f"evaluate_bag: recorded {recorder.summary()}")
        result["report_files"] = {"json": "metrics.json", "markdown": "report.md", **plot_files(plots)}
        write_report(output, result, plots)  # only now: a run cut short leaves the previous run's files as they were
    except BaseException:
        if recorder is not None:
            recorder.close(complete=False)
        lock.release()
        if created:  # a failed first evaluation leaves no empty output folder behind
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    lock.release()
    return result


def output_folder(args) -> Path:
    """``--output``, or ``<bag>_evaluation`` next to the bag (its path resolved first: ``evaluate_bag .``)."""
    if args.output:
        return Path(args.output)
    bag_path = Path(args.bag).resolve()
    return bag_path.with_name(bag_path.name + "_evaluation")


def _evaluate(args, bag_path: Path, recorder: BagRecorder | None) -> tuple[dict, dict[str, bytes]]:
    """Run the evaluation (offline or live) and draw its plots; returns the result and the plots (file name ->
    PNG), written by the caller."""
    with BagReader(bag_path, skip_damaged=args.skip_damaged_chunks) as bag:
        for note in bag.notes:
            print(f"evaluate_bag: {note}", file=sys.stderr)
        record = read_fault_record(bag, args.timeline_topic)
        params = resolve_parameters(args, record)
        options = {"faults": faults_from_record(record), "sample_count": args.samples,
                   "labels_topic": args.labels_topic if args.labels_topic in bag.topics else "",
                   "bag_classes": record.get("classes")}
        integrity = {"checked_chunks": bag.integrity.checked_chunks, "unchecked_chunks": bag.integrity.unchecked_chunks,
                     "skipped_chunks": len(bag.integrity.damaged),
                     "unchecked_files": [file.name for file in bag.integrity.unchecked_files]}
        if args.labels_topic and not options["labels_topic"] and args.labels_topic != GROUND_TRUTH_TOPIC:
            bag.require([args.labels_topic], what="ground-truth")
        start_s, storage = nanoseconds_to_seconds(bag.start_ns), bag.storage
        if args.mode == "offline":
            torch.manual_seed(0)
            checkpoint, segmenter = load_segmenter(params)
            evaluation = OfflineEvaluation(bag_path, params, segmenter, recorder=recorder, **options)
            check_input_topics(bag, params, evaluation.topics, list(evaluation.pipeline.active_sensors),
                               options["labels_topic"])
            evaluation.run(bag)
            extra = {"checkpoint": str(checkpoint), "device": str(segmenter.device)}
        else:
            check_input_topics(bag, params, params.topics(absolute_topic),
                               [sensor for sensor in SENSORS if params[f"{sensor}.enabled"]], options["labels_topic"])
    if args.mode == "live":
        evaluation, extra = run_live(bag_path, params, ros_args=args.ros_args, spawn_node=args.spawn_node,
                                     node_name=args.node_name, rate=args.rate, wait_for_node_s=args.wait_for_node,
                                     settle_s=args.settle, skip_damaged=args.skip_damaged_chunks, recorder=recorder,
                                     **options)
    if evaluation.label_error:
        raise BagError(f"bag {bag_path}: {evaluation.label_error}")
    result = evaluation.results()
    result.update({**extra, "mode": args.mode, "storage": storage, "bag_start_s": round(start_s, 9),
                   "faults_source": record.get("generator", "none"), "bag_integrity": integrity})
    plots = draw_plots(evaluation, result, start_s) if not args.no_plots else {}
    return result, plots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate_bag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("--output", "-o", default="", help="output folder; default <bag>_evaluation next to the bag")
    parser.add_argument("--checkpoint", default="", help="checkpoint (.pt); default the params' / packaged one")
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto; default the params' (auto)")
    parser.add_argument("--params-file", default="", help="perception_node params YAML (config/perception.yaml)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter override, repeatable (e.g. -p lidar.topic:=/velodyne_points)")
    parser.add_argument("--labels-topic", default=GROUND_TRUTH_TOPIC,
                        help="ground-truth label topic (class ids: mono8, 8UC1, or mono16/16UC1 <= 255); '' for none")
    parser.add_argument("--timeline-topic", default=FAULT_TIMELINE_TOPIC,
                        help="fault timeline topic (std_msgs/String JSON)")
    parser.add_argument("--ignore-rig", action="store_true",
                        help="do not apply the rig parameters recorded in the bag's fault timeline")
    parser.add_argument("--samples", type=non_negative_int, default=6, help="sample frames in samples.png (one per window)")
    parser.add_argument("--torch-threads", type=non_negative_int, default=0,
                        help="CPU threads for torch (torch.set_num_threads); 0: torch's default")
    parser.add_argument("--mode", choices=("offline", "live"), default="offline",
                        help="offline: the pipeline in-process, deterministic; live: replay over DDS with /clock into "
                             "a perception node on sim time and record its outputs")
    parser.add_argument("--spawn-node", action="store_true",
                        help="live: run perception_node in this process (use_sim_time, the resolved parameters)")
    parser.add_argument("--node-name", default="/perception_node",
                        help="live: fully qualified name of the running node (its outputs are <name>/segmentation...)")
    parser.add_argument("--rate", type=positive_float, default=1.0, help="live: replay speed factor")
    parser.add_argument("--wait-for-node", type=non_negative_float, default=30.0,
                        help="live: seconds to wait for the node to subscribe to the camera topic")
    parser.add_argument("--settle", type=non_negative_float, default=2.0, help="live: seconds to wait for outputs after the replay")
    parser.add_argument("--no-plots", action="store_true", help="JSON and Markdown only")
    parser.add_argument("--skip-damaged-chunks", action="store_true",
                        help="evaluate a bag with damaged MCAP chunks without their messages (counted in the report) "
                             "instead of refusing it")
    parser.add_argument("--record-outputs", default="", metavar="OUT",
                        help="also write the inputs and every node output into a new MCAP bag OUT (Foxglove, RViz)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Evaluate the bag; returns the ``metrics.json`` dict."""
    own, ros_args = split_ros_args(argv)
    args = build_parser().parse_args(own)
    if args.spawn_node and args.mode != "live":
        build_parser().error("--spawn-node: runs a node for --mode live; offline, the pipeline runs in this process")
    args.ros_args = ros_args
    result = evaluate(args)
    frames, accuracy = result["frames"], result["accuracy"]
    labels_topic = result["ground_truth_topic"]
    labels = result["message_counts"].get(labels_topic, 0) if labels_topic else 0
    if accuracy:
        summary = f"mIoU {accuracy['miou']:.2f} %"
    elif labels and frames["total"]:
        summary = "no accuracy"
        print(f"evaluate_bag: warning: none of the {frames['total']} frames has a ground-truth label of its header "
              f"stamp, though {labels_topic} holds {labels} labels: a label must carry its camera image's stamp "
              "exactly", file=sys.stderr)
    else:
        summary = "no ground truth"
    print(f"evaluate_bag: {frames['total']} frames, {summary}; report in {output_folder(args)}")
    if frames["total"] == 0:
        raise BagError(f"bag {result['bag']}: no frame was segmented from its {frames['camera_messages']} camera "
                       f"messages; the sensors' last states: {last_states(result['state_transitions'])}")
    return result


def last_states(transitions: list[dict]) -> str:
    """"depth, camera STALE (stale: ...); lidar OK" from the ``state_transitions`` of ``metrics.json``."""
    sensors_by_state: dict[str, list[str]] = {}
    for modality, item in {item["modality"]: item for item in transitions}.items():
        state = item["state"] + (f" ({item['message']})" if item["message"] else "")
        sensors_by_state.setdefault(state, []).append(SENSOR_OF_MODALITY[modality])
    return "; ".join(f"{', '.join(sensors)} {state}" for state, sensors in sensors_by_state.items()) or "none recorded"


cli = console_script(main, "evaluate_bag")


if __name__ == "__main__":
    sys.exit(cli())
