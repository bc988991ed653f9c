"""``record_outputs``: record a running perception node's inputs and every output into an MCAP bag, for
Foxglove (``config/foxglove_layout.json``) and RViz.

    record_outputs /tmp/run_outputs                                    # until Ctrl-C
    record_outputs /tmp/run_outputs --duration 30 --params-file config/perception.yaml
    record_outputs /tmp/run_outputs --ros-args -p use_sim_time:=true   # stamps on /clock during a replay

The inputs are the node's sensor and CameraInfo topics as its parameters name them (``--params-file``,
``-p name:=value``; compressed transports included), subscribed best effort; the outputs are
``<node>/segmentation``, ``segmentation_color``, ``confidence``, ``overlay``, ``latency_ms``,
``sensor_status``, ``class_names`` and ``/diagnostics``. Each message is written at this recorder's clock
time. SIGINT and SIGTERM end the recording cleanly (exit 0, the bag finished); a recording that fails is
left unfinished at ``OUT.partial`` (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from robustseg_core.cli import console_script, non_negative_float, split_ros_args
from robustseg_ros.bagtools.recorder import DEFAULT_NODE, BagRecorder, output_topics, subscribe_outputs
from robustseg_ros.params import (PARAMETER_DEFAULTS, PerceptionParams, absolute_topic, parse_override,
                                  read_params_file, topic_name_problem)
from robustseg_ros.pipeline import input_message_types
from robustseg_ros.shutdown import spin_until, stop_on_signals

PROG = "record_outputs"


def recorded_topics(params: PerceptionParams, node_name: str, with_inputs: bool) -> tuple[dict[str, type], frozenset]:
    """Topic -> type of everything to record, and the input topics among them (subscribed best effort): relative
    input topics resolved, as the node does, in the namespace of ``node_name``."""
    inputs = {}
    if with_inputs:
        namespace = node_name.rsplit("/", 1)[0] or "/"
        types, topics = input_message_types(params), params.topics(lambda name: absolute_topic(name, namespace))
        inputs = {topics[name]: kind for name, kind in types.items()
                  if name == "camera_info" or params[f"{name}.enabled"]}
    return {**inputs, **output_topics(node_name)}, frozenset(inputs)


def node_name(text: str) -> str:
    """argparse type of ``--node``: a node's fully qualified name (``/perception`` or ``/robot1/perception``; a
    relative one is taken from the root namespace), refused with the reason before anything is recorded."""
    problem = topic_name_problem(text)
    if not problem and ("~" in text or "{" in text):
        problem = "a node name has no ~ or {} substitutions"
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node name: {problem}")
    return absolute_topic(text)


def main(argv: list[str] | None = None) -> Path:
    """Record until the duration ends, SIGINT or SIGTERM (``argv``: the command line without the program
    name); returns the bag folder written."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the MCAP bag folder to create (must not exist)")
    parser.add_argument("--node", type=node_name, default=DEFAULT_NODE,
                        help="fully qualified name of the perception node")
    parser.add_argument("--params-file", default="", help="the node's params YAML, for its input topics")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter override for the input topics, repeatable")
    parser.add_argument("--no-inputs", action="store_true", help="record the outputs only")
    parser.add_argument("--duration", type=non_negative_float, default=0.0, help="seconds to record; 0: until Ctrl-C")
    own, ros_args = split_ros_args(argv)
    args = parser.parse_args(own)
    values = dict(PARAMETER_DEFAULTS)
    if args.params_file:
        values.update(read_params_file(args.params_file))
    values.update(parse_override(text) for text in args.param)
    topics, inputs = recorded_topics(PerceptionParams(values), args.node, not args.no_inputs)
    with stop_on_signals() as stop:
        rclpy.init(args=[PROG, *ros_args], signal_handler_options=SignalHandlerOptions.NO)
        recorder, node = None, None
        try:
            recorder = BagRecorder(args.out)
            node = Node("robustseg_output_recorder")
            subscribe_outputs(node, recorder, topics, best_effort=inputs)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
            print(f"{PROG}: recording {len(topics)} topics into {args.out} "
                  f"({'for %g s' % args.duration if args.duration > 0 else 'until Ctrl-C'})", flush=True)
            spin_until(executor, lambda: stop.is_set() or time.monotonic() >= deadline or not rclpy.ok())
            executor.shutdown()
        except BaseException:  # the recording did not end as asked: it stays at OUT.partial
            if recorder is not None:
                recorder.close(complete=False)
            raise
        else:
            recorder.close()
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    print(f"{PROG}: wrote {recorder.summary()}")
    return recorder.path


cli = console_script(main, PROG)


if __name__ == "__main__":
    sys.exit(cli())
