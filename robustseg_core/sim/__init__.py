"""Procedural multimodal driving scenes and sequences, rendered by vectorised ray casting.

Entry points:

* ``Drive(seed, DriveConfig(...))``: one scene, an ego vehicle and moving actors; ``frame(i)`` /
  ``frame_at(t)`` render RGB, depth, labels, a LiDAR scan and events, reproducibly from (seed, t);
* ``encode_frame(frame)``: the frame as the network's images (the same encoders the ROS node uses);
* ``writer.write_dataset`` (scenes planned by ``generate.plan_scenes``) / ``generate.main``
  (console script ``generate_dataset``): a data set in DELIVER's on-disk layout.
"""

from __future__ import annotations

from robustseg_core.sim.drive import Drive, DriveConfig, Frame, encode_frame
from robustseg_core.sim.scene import Scene
from robustseg_core.sim.sensors_sim import CONDITIONS, FAILURES, EventModel, LidarModel
from robustseg_core.sim.writer import SceneJob, read_png, semantic_rgba, write_dataset, write_scene

__all__ = ["CONDITIONS", "FAILURES", "Drive", "DriveConfig", "EventModel", "Frame", "LidarModel", "Scene",
           "SceneJob", "encode_frame", "read_png", "semantic_rgba", "write_dataset", "write_scene"]
