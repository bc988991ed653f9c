"""``replay_bag``: publish a rosbag2 bag over DDS with its original timing, for machines without ``ros2 bag play``.

Messages go out in bag-timestamp order, each at ``(bag time - start) / rate`` seconds after the
start (wall clock). Options: ``--rate``, ``--start-offset`` and ``--duration`` (bag seconds),
``--loop``, ``--topics`` / ``--exclude-topics``, ``--remap old:=new``, and ``--clock``: publish
``/clock`` (bag time) before every message and at ``--clock-hz`` in between, for nodes run with
``use_sim_time:=true``. Fault injection, with windows in seconds from the bag's start:
``--drop TOPIC:START:END`` (no messages) and ``--freeze TOPIC:START:END`` (the window's first
message repeated with the stamps of the messages it replaces). The player is
``robustseg_ros.bagtools.player.BagPlayer``.

On a full ROS install ``ros2 bag play BAG --clock`` does the same (docs/bags.md).
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.signals import SignalHandlerOptions

from robustseg_core.cli import console_script, non_negative_float, positive_float, split_ros_args
from robustseg_core.errors import UsageError
from robustseg_ros.bagtools.faults import parse_topic_fault
from robustseg_ros.bagtools.player import BagPlayer
from robustseg_ros.params import topic_name_problem


def parse_remap(items: list[str]) -> dict[str, str]:
    """``--remap /old:=/new ...`` -> {old: new}; ``ValueError`` naming a malformed item or an invalid new name."""
    remap = {}
    for item in items:
        old, separator, new = item.partition(":=")
        if not separator or not old or not new:
            raise ValueError(f"--remap {item!r}: expected /old:=/new")
        problem = topic_name_problem(new)
        if problem:
            raise ValueError(f"--remap {item!r}: {new!r} is not a ROS topic name: {problem}")
        remap[old] = new
    return remap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay_bag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("-r", "--rate", type=positive_float, default=1.0, help="playback speed factor")
    parser.add_argument("--start-offset", type=non_negative_float, default=0.0, help="skip this many bag seconds")
    parser.add_argument("--duration", type=positive_float, default=None, help="play this many bag seconds")
    parser.add_argument("-l", "--loop", action="store_true", help="play again from the start when done")
    parser.add_argument("-d", "--delay", type=non_negative_float, default=0.5,
                        help="wait (s) after creating the publishers, so that subscribers discover them")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    parser.add_argument("--clock-hz", type=non_negative_float, default=40.0, help="/clock rate between messages (with --clock)")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument("--exclude-topics", nargs="+", default=[], help="not these topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish OLD as NEW")
    parser.add_argument("--drop", action="append", default=[], metavar="TOPIC:START:END",
                        help="publish nothing on TOPIC from START to END (s after the bag start); repeatable")
    parser.add_argument("--freeze", action="append", default=[], metavar="TOPIC:START:END",
                        help="repeat TOPIC's first message of the window, with fresh stamps; repeatable")
    parser.add_argument("--skip-damaged-chunks", action="store_true",
                        help="play a bag with damaged MCAP chunks without their messages (counted) instead of refusing it")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Play the bag; returns the number of messages published (0 when stopped before the first)."""
    own, ros_args = split_ros_args(argv)
    args = build_parser().parse_args(own)
    try:
        faults = ([parse_topic_fault("drop", text) for text in args.drop]
                  + [parse_topic_fault("freeze", text) for text in args.freeze])
        remap = parse_remap(args.remap)
    except ValueError as error:
        raise UsageError(str(error)) from error
    # rclpy's own SIGINT handler would shut the context down under a publish (a traceback, not "interrupted")
    rclpy.init(args=["replay_bag", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    player, count = None, 0
    try:
        player = BagPlayer(args.bag, rate=args.rate, start_offset_s=args.start_offset, duration_s=args.duration,
                           loop=args.loop, clock=args.clock, clock_hz=args.clock_hz, topics=args.topics,
                           exclude_topics=args.exclude_topics, remap=remap, faults=faults, delay_s=args.delay,
                           skip_damaged=args.skip_damaged_chunks)
        for note in player.bag.notes:
            print(f"replay_bag: {note}", file=sys.stderr)
        count = player.play()
        print(f"replay_bag: published {count} messages from {args.bag}")
    except KeyboardInterrupt:  # Ctrl-C ends a replay: not an error
        pass
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    return count


cli = console_script(main, "replay_bag")


if __name__ == "__main__":
    sys.exit(cli())
