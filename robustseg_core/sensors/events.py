"""Event-camera packets -> the network's event image.

Events are a numpy structured array of ``EVENT_DTYPE``: pixel column ``x`` and row ``y`` (uint16,
sensor pixels), timestamp ``t`` (float64 seconds, any epoch) and ``polarity`` (int8, +1 brighter,
-1 darker).

Event image, uint8 [H, W, 3] (H, W = sensor size, or ``output_size``):

* channel 0, positive events per pixel: ``min(255, round(255 * count / count_saturation))``
  (default saturation 8 events: one event = 32, 8 or more = 255);
* channel 1, negative events per pixel, same scale;
* channel 2, time surface: timestamp of the newest event at the pixel, normalised over the
  window, ``round(1 + 254 * (t - t_start) / (t_end - t_start))`` (1 = window start, 255 = end),
  0 where the pixel has no event.

Events outside the window ``t_start <= t <= t_end`` (both ends included), outside the sensor
(``x >= width`` or ``y >= height``) or with a polarity other than +-1 are ignored.

Low-resolution event sensors (DELIVER's ``eventlowres`` case): encode at the sensor's own size and
let the loader upsample with nearest neighbour (what the DELIVER-layout writer does), or pass
``output_size=(W, H)`` to bin the events straight into a larger or smaller grid: an event at
sensor pixel (x, y) goes to ``(floor(x * W / width), floor(y * H / height))``.
"""

from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype([("x", np.uint16), ("y", np.uint16), ("t", np.float64), ("polarity", np.int8)])
EVENT_COUNT_SATURATION = 8


def empty_events() -> np.ndarray:
    """A zero-length event array."""
    return np.zeros(0, dtype=EVENT_DTYPE)


def check_events(events: np.ndarray) -> np.ndarray:
    """Validate a 1-D structured event array with fields x, y, t, polarity."""
    events = np.asarray(events)
    names = events.dtype.names or ()
    missing = [field for field in EVENT_DTYPE.names if field not in names]
    if missing:
        raise ValueError(f"events must be a structured array with fields x, y, t, polarity "
                         f"(EVENT_DTYPE); missing {missing}")
    if events.ndim != 1:
        raise ValueError(f"events must be 1-D, got shape {events.shape}")
    return events


def events_to_frame(
    events: np.ndarray,
    width: int,
    height: int,
    t_start: float,
    t_end: float,
    *,
    count_saturation: int = EVENT_COUNT_SATURATION,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Events of a ``width`` x ``height`` sensor in [t_start, t_end] (seconds) -> event image uint8 [H, W, 3]."""
    events = check_events(events)
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"sensor size must be positive, got {width}x{height}")
    if not t_end >= t_start:
        raise ValueError(f"t_end ({t_end}) must not be before t_start ({t_start})")
    if count_saturation < 1:
        raise ValueError(f"count_saturation must be >= 1, got {count_saturation}")
    out_width, out_height = (int(width), int(height)) if output_size is None else map(int, output_size)
    if out_width <= 0 or out_height <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")

    # Events that do not count go to a spare bin past the last pixel instead of being filtered out (a boolean
    # gather of every field costs more than the rest of the encoding).
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    t = events["t"]
    polarity = events["polarity"]
    keep = (x < width) & (y < height) & (t >= t_start) & (t <= t_end) & ((polarity == 1) | (polarity == -1))
    if output_size is not None:
        x = x * out_width // int(width)
        y = y * out_height // int(height)
    num_pixels = out_width * out_height
    pixel = np.where(keep, y * out_width + x, num_pixels)

    counts = np.bincount(pixel * 2 + (polarity < 0), minlength=2 * num_pixels + 2)[: 2 * num_pixels]
    span = t_end - t_start
    # The time surface of a pixel is rint(1 + 254 * (t_newest - t_start) / span); rint and the scaling are
    # monotonic, so it is the largest of the events' own levels.
    level = np.rint(1.0 + 254.0 * (t - t_start) / span) if span > 0 else np.full(len(t), 255.0)
    surface = np.zeros(num_pixels + 1, dtype=np.uint8)
    np.maximum.at(surface, pixel, np.clip(level, 0, 255).astype(np.uint8))

    frame = np.empty((num_pixels, 3), dtype=np.uint8)
    scale = 255.0 / count_saturation
    frame[:, :2] = np.minimum(255, np.rint(counts.reshape(num_pixels, 2) * scale)).astype(np.uint8)
    frame[:, 2] = surface[:num_pixels]
    return frame.reshape(out_height, out_width, 3)
