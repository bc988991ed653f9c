"""rosbag2 tools: record a generated drive with sensor faults, replay a bag over DDS, evaluate the
perception pipeline on a bag (docs/bags.md).

The command-line modules ``record_synthetic``, ``replay_bag`` and ``evaluate_bag`` (console scripts of
the same names) never import one another; what they share lives in ``bag_io`` (reading and writing
bags, the drive-bag topics), ``faults`` (fault windows and the timeline record), ``player`` (publishing
a bag over DDS), ``scoring`` (what an evaluation collects and the metrics), ``offline`` and ``live``
(the two ways of producing the frames) and ``report`` (Markdown and plots).
"""
