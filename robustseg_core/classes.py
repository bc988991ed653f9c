"""Dataset-wide constants: DELIVER's 25 classes, their palette, the ignore label, its conditions,
failure cases and splits, and the modality order.

Class ids, names and palette follow DELIVER's own loader (docs/method.md, "Data"). Modality order
follows DELIVER and RobustSeg: ``rgb, depth, event, lidar`` (tensor index 0..3), each named by one
letter in combination names such as ``"RDEL"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler",
    "Bus", "Truck",
)
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255

#: RGB colour of each class id, shape [25, 3], uint8.
PALETTE = np.array(
    [
        (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153),
        (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142),
        (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81), (150, 100, 100),
        (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160), (170, 120, 50),
        (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
    ],
    dtype=np.uint8,
)

#: Class id by name, e.g. ``CLASS_ID["Road"] == 6``.
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

#: DELIVER's weather folders, sensor-failure cases (tagged by substring in the scene path) and splits.
CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")
FAILURE_CASES: tuple[str, ...] = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
SPLITS: tuple[str, ...] = ("train", "val", "test")

MODALITIES: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
#: One-letter codes used in combination names such as ``"RDEL"``.
MODALITY_LETTERS: tuple[str, ...] = ("R", "D", "E", "L")


def combination_name(modalities: Iterable[str]) -> str:
    """Letters of ``modalities`` in model order: ``("lidar", "rgb") -> "RL"``; ``""`` for none.

    Raises ``ValueError`` naming any entry that is not one of ``MODALITIES``.
    """
    chosen = set(modalities)
    unknown = sorted(chosen - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
    return "".join(letter for modality, letter in zip(MODALITIES, MODALITY_LETTERS) if modality in chosen)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class-id map [H, W] (255 = unknown, drawn black) -> RGB image [H, W, 3] uint8."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[labels]


def list_difference(first: Sequence[str], second: Sequence[str], names: tuple[str, str], what: str = "class") -> str:
    """How two ordered lists of names (classes, modalities) differ, "" when equal: the counts, or the first
    position whose names differ. ``names`` says whose lists they are, e.g. ("checkpoint", "data set")."""
    first, second = list(first), list(second)
    plural = what + ("es" if what.endswith("s") else "s")
    if len(first) != len(second):
        return f"the {names[0]} has {len(first)} {plural}, the {names[1]} {len(second)}"
    for index, (a, b) in enumerate(zip(first, second)):
        if a != b:
            return f"{what} {index} is {a!r} in the {names[0]} and {b!r} in the {names[1]} (another {what} order)"
    return ""
