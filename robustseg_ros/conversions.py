"""sensor_msgs <-> numpy, without cv_bridge or sensor_msgs_py.

Reading is zero-copy where the layout allows it: the returned array is a strided view over the
message's ``data`` buffer (``np.shares_memory(result, msg.data)``), so it must be treated as
read-only and lives as long as the message. A copy is made only when it has to be: a byte swap
(big-endian data on a little-endian host), a channel reorder (bgr -> rgb), a unit change (depth) or
a gather of PointCloud2 fields into a dense array.

Malformed input raises ``MessageError`` (a ``ValueError``) whose text names the topic and field,
when known, and the problem, e.g. ``"/camera/image: field 'step': 30 bytes per row is smaller
than width 16 x 3 bytes per pixel = 48"``.

Conventions:

* Image: ``rgb8, bgr8, rgba8, bgra8, mono8`` -> uint8 [H, W, C] (mono8 -> [H, W]); ``32FC1`` ->
  float32 [H, W]; ``16UC1`` -> uint16 [H, W]. Rows may be padded (``step``); trailing bytes after
  the last row are ignored.
* Depth (REP 118): ``32FC1`` in metres or ``16UC1`` in millimetres -> float32 metres, with 0 for
  "no measurement" (0, negative, NaN and inf all become 0).
* PointCloud2: read through a numpy structured dtype built from the ``PointField`` list (offsets,
  datatypes, ``is_bigendian``, ``point_step``, ``row_step``). A field's ``count`` of 0 or 1 both
  mean one value. An empty cloud (width x height == 0) is not an error: it gives an empty array,
  whatever its fields.
* Event packets as PointCloud2: fields ``x``, ``y``, ``t``, ``polarity``. ``t`` FLOAT64 is absolute
  time in seconds; an integer ``t`` is nanoseconds relative to ``header.stamp`` (PointField has no
  64-bit integer type, so integer times can only be offsets). ``polarity`` of any numeric type:
  > 0 -> +1, otherwise -1.
* CameraInfo: only ``k`` (and width, height, binning) is used; distortion is ignored, images are
  assumed rectified.
* Time: header stamps <-> float seconds (the node clock) <-> integer nanoseconds (bag timestamps).
"""

from __future__ import annotations

import array
import math
import sys
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from robustseg_core.sensors.camera import CameraIntrinsics
from robustseg_core.sensors.events import EVENT_DTYPE

HOST_IS_BIGENDIAN = sys.byteorder == "big"
NANOSECONDS_PER_SECOND = 1_000_000_000


class MessageError(ValueError):
    """A message that cannot be converted; the text names the topic, the field and the problem."""

    def __init__(self, problem: str, *, topic: str | None = None, field: str | None = None) -> None:
        self.problem = problem
        self.topic = topic
        self.field = field
        where = []
        if topic:
            where.append(topic)
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {problem}" if where else problem)

    def counted_as(self, prefix: str = "") -> str:
        """Short kind for counting: the faulty field ("step", "data", "encoding"...) or an ``UnusableMessage``'s
        kind ("empty cloud", "no valid depth")."""
        return prefix + (getattr(self, "kind", None) or self.field or "message")


@dataclass(frozen=True)
class ImageEncoding:
    """Pixel layout of one ``sensor_msgs/Image`` encoding."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel."""
        return self.dtype.itemsize * self.channels


IMAGE_ENCODINGS: dict[str, ImageEncoding] = {
    "rgb8": ImageEncoding(np.dtype(np.uint8), 3),
    "bgr8": ImageEncoding(np.dtype(np.uint8), 3),
    "rgba8": ImageEncoding(np.dtype(np.uint8), 4),
    "bgra8": ImageEncoding(np.dtype(np.uint8), 4),
    "mono8": ImageEncoding(np.dtype(np.uint8), 1),
    "32FC1": ImageEncoding(np.dtype(np.float32), 1),
    "16UC1": ImageEncoding(np.dtype(np.uint16), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
MILLIMETRES_PER_METRE = 1000.0

#: PointField datatype -> numpy scalar type (byte order applied separately).
POINT_FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}
_NUMPY_TO_POINT_FIELD = {dtype: datatype for datatype, dtype in POINT_FIELD_DTYPES.items()}


# --------------------------------------------------------------------------------------------
# time: the one place where stamps, float seconds and integer nanoseconds (bag timestamps) convert


def stamp_to_seconds(stamp: Time) -> float:
    """``builtin_interfaces/Time`` (or anything with ``sec`` and ``nanosec``) -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_nanoseconds(stamp: Time) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec`` and ``nanosec``) -> integer nanoseconds (exact)."""
    return int(stamp.sec) * NANOSECONDS_PER_SECOND + int(stamp.nanosec)


def nanoseconds_to_seconds(nanoseconds: int) -> float:
    """Integer nanoseconds (a bag timestamp, the node clock) -> seconds (float)."""
    return nanoseconds * 1e-9


def seconds_to_nanoseconds(seconds: float) -> int:
    """Seconds -> integer nanoseconds, rounded to the nearest nanosecond."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot convert {seconds} s to nanoseconds")
    return int(round(seconds * NANOSECONDS_PER_SECOND))


def nanoseconds_to_stamp(nanoseconds: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (exact)."""
    sec, nanosec = divmod(int(nanoseconds), NANOSECONDS_PER_SECOND)
    if not -(2**31) <= sec < 2**31:
        raise ValueError(f"{nanoseconds} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return Time(sec=sec, nanosec=nanosec)


def seconds_to_stamp(seconds: float) -> Time:
    """Seconds -> ``builtin_interfaces/Time``, rounded to the nearest nanosecond."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot convert {seconds} s to a stamp")
    return nanoseconds_to_stamp(seconds_to_nanoseconds(seconds))


# --------------------------------------------------------------------------------------------
# buffers


def _message_bytes(data, *, topic: str | None, field: str = "data") -> np.ndarray:
    """A uint8 view over a message's ``uint8[]`` field (array.array, bytes, memoryview; lists copied)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as error:
            raise MessageError(f"not a byte buffer ({type(data).__name__})", topic=topic, field=field) from error


def _to_byte_array(values: np.ndarray) -> array.array:
    """One copy of a C-contiguous array's bytes into the ``array.array('B')`` rclpy stores for uint8[]."""
    contiguous = np.ascontiguousarray(values)
    buffer = array.array("B")
    buffer.frombytes(memoryview(contiguous.reshape(-1)).cast("B"))
    return buffer


def _row_buffer(data, *, rows: int, row_bytes: int, stride: int, stride_field: str, row_text: str, content: str,
                topic: str | None) -> np.ndarray:
    """uint8 view over a message's ``rows`` rows of ``row_bytes`` bytes, ``stride`` bytes apart.

    Errors name the stride field when it is shorter than a row and ``data`` when bytes are missing.
    """
    if stride < row_bytes:
        raise MessageError(f"{stride_field} {stride} is smaller than {row_text} = {row_bytes} bytes",
                           topic=topic, field=stride_field)
    buffer = _message_bytes(data, topic=topic)
    needed = stride * (rows - 1) + row_bytes
    if buffer.size < needed:
        raise MessageError(f"truncated: {buffer.size} bytes, {content} with {stride_field} {stride} need {needed}",
                           topic=topic, field="data")
    return buffer


def _native(values: np.ndarray) -> np.ndarray:
    """The array in native byte order (a copy only when it is not)."""
    if values.dtype.isnative:
        return values
    return values.astype(values.dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------
# Image


def image_to_numpy(msg: Image, *, topic: str | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> array [H, W] (one channel) or [H, W, C], dtype from the encoding.

    A view over ``msg.data`` (honouring ``step``) when the data is in host byte order; a
    byte-swapped copy otherwise. Channel order is the encoding's (bgr8 stays BGR).
    """
    encoding = IMAGE_ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise MessageError(
            f"unsupported encoding '{msg.encoding}'; supported: {', '.join(IMAGE_ENCODINGS)}",
            topic=topic, field="encoding",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MessageError(f"empty image ({width}x{height} pixels)", topic=topic, field="width/height")
    data = _row_buffer(
        msg.data, rows=height, row_bytes=width * encoding.pixel_bytes, stride=step, stride_field="step",
        row_text=f"width {width} x {encoding.pixel_bytes} bytes per pixel ({msg.encoding})",
        content=f"a {width}x{height} {msg.encoding} image", topic=topic,
    )
    dtype = encoding.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape: tuple[int, ...] = (height, width, encoding.channels)
    strides: tuple[int, ...] = (step, encoding.pixel_bytes, dtype.itemsize)
    if encoding.channels == 1:
        shape, strides = shape[:2], strides[:2]
    view = np.ndarray(shape, dtype=dtype, buffer=data, strides=strides)
    return _native(view)


def _image_of_kind(msg: Image, encodings: tuple[str, ...], kind: str, joiner: str, *, topic: str | None) -> np.ndarray:
    """``image_to_numpy`` of an image whose encoding must be one of ``encodings`` (``MessageError`` naming
    ``kind`` and the encodings, joined by ``joiner``, otherwise)."""
    if msg.encoding not in encodings:
        raise MessageError(f"expected {kind} ({joiner.join(encodings)}), got '{msg.encoding}'",
                           topic=topic, field="encoding")
    return image_to_numpy(msg, topic=topic)


def camera_image_to_rgb(msg: Image, *, topic: str | None = None) -> np.ndarray:
    """Colour or mono image -> uint8 [H, W, 3] in RGB order.

    rgb8 and rgba8 are views over ``msg.data`` (rgba8 drops alpha through a stride); bgr8 and
    bgra8 are reordered into a new array; mono8 is repeated into three channels (a copy).
    """
    pixels = _image_of_kind(msg, COLOR_ENCODINGS, "a colour image", ", ", topic=topic)
    if msg.encoding == "mono8":
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if msg.encoding in ("rgb8", "rgba8"):
        return pixels[:, :, :3]
    rgb = np.empty(pixels.shape[:2] + (3,), dtype=np.uint8)
    for channel in range(3):
        rgb[:, :, channel] = pixels[:, :, 2 - channel]
    return rgb


def depth_image_to_metres(msg: Image, *, topic: str | None = None) -> np.ndarray:
    """Depth image -> float32 [H, W] metres (a new array); 0 where there is no valid measurement.

    ``32FC1`` is metres, ``16UC1`` millimetres (REP 118). NaN, inf, 0 and negative values become 0.
    """
    raw = _image_of_kind(msg, DEPTH_ENCODINGS, "a depth image", " or ", topic=topic)
    if msg.encoding == "16UC1":
        return raw.astype(np.float32) / np.float32(MILLIMETRES_PER_METRE)
    valid = np.isfinite(raw) & (raw > 0)
    return np.where(valid, raw, np.float32(0.0)).astype(np.float32, copy=False)


def numpy_to_image(values: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Array -> ``sensor_msgs/Image`` (unpadded rows, host byte order); one copy of the bytes.

    Shapes: [H, W] for one-channel encodings (mono8, 32FC1, 16UC1; [H, W, 1] also accepted) and
    [H, W, C] for the others; the dtype must match the encoding (uint8, float32, uint16).
    """
    layout = IMAGE_ENCODINGS.get(encoding)
    if layout is None:
        raise ValueError(f"unsupported encoding '{encoding}'; supported: {', '.join(IMAGE_ENCODINGS)}")
    values = np.asarray(values)
    if layout.channels == 1 and values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    expected_ndim = 2 if layout.channels == 1 else 3
    if values.ndim != expected_ndim or (expected_ndim == 3 and values.shape[2] != layout.channels):
        wanted = "[H, W]" if layout.channels == 1 else f"[H, W, {layout.channels}]"
        raise ValueError(f"{encoding} needs an array of shape {wanted}, got {values.shape}")
    if values.dtype.newbyteorder("=") != layout.dtype:
        raise ValueError(f"{encoding} needs dtype {layout.dtype}, got {values.dtype}")
    values = _native(values)
    height, width = values.shape[:2]
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = HOST_IS_BIGENDIAN and layout.dtype.itemsize > 1
    msg.step = int(width * layout.pixel_bytes)
    msg.data = _to_byte_array(values)
    return msg


# --------------------------------------------------------------------------------------------
# PointCloud2


def _field_by_name(msg: PointCloud2) -> dict[str, PointField]:
    return {field.name: field for field in msg.fields}


def _field_dtype(field: PointField, byte_order: str, *, topic: str | None) -> np.dtype:
    scalar = POINT_FIELD_DTYPES.get(int(field.datatype))
    if scalar is None:
        raise MessageError(
            f"unsupported PointField datatype {field.datatype} (expected 1..8: INT8..FLOAT64)",
            topic=topic, field=field.name,
        )
    return scalar.newbyteorder(byte_order)


def _cloud_records(msg: PointCloud2, wanted: dict[str, PointField], *, topic: str | None) -> np.ndarray:
    """The cloud as a 1-D structured array holding only the ``wanted`` fields (a view over ``data``)."""
    point_step, width, height = int(msg.point_step), int(msg.width), int(msg.height)
    byte_order = ">" if msg.is_bigendian else "<"
    for field in msg.fields:
        scalar = POINT_FIELD_DTYPES.get(int(field.datatype))
        if scalar is None:
            continue
        end = int(field.offset) + scalar.itemsize * max(int(field.count), 1)
        if end > point_step:
            raise MessageError(
                f"point_step {point_step} is smaller than field '{field.name}' (offset {field.offset}, "
                f"ends at byte {end})",
                topic=topic, field="point_step",
            )
    names, formats, offsets = [], [], []
    for name, field in wanted.items():
        names.append(name)
        formats.append(_field_dtype(field, byte_order, topic=topic))
        offsets.append(int(field.offset))
    record = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})

    row_bytes = width * point_step
    row_step = int(msg.row_step) or row_bytes
    data = _row_buffer(
        msg.data, rows=height, row_bytes=row_bytes, stride=row_step, stride_field="row_step",
        row_text=f"width {width} x point_step {point_step}", content=f"{width}x{height} points of {point_step} bytes",
        topic=topic,
    )
    if row_step == row_bytes or height == 1:
        return np.ndarray((height * width,), dtype=record, buffer=data, strides=(point_step,))
    rows = np.ndarray((height, width), dtype=record, buffer=data, strides=(row_step, point_step))
    return rows.reshape(-1)


def _require_fields(msg: PointCloud2, names: tuple[str, ...], *, topic: str | None) -> dict[str, PointField]:
    fields = _field_by_name(msg)
    missing = [name for name in names if name not in fields]
    if missing:
        raise MessageError(
            f"missing field(s) {', '.join(missing)}; the cloud has {', '.join(fields) or 'no fields'}",
            topic=topic, field="fields",
        )
    for name in names:
        if int(fields[name].count) > 1:
            raise MessageError(f"count {fields[name].count}, expected 1", topic=topic, field=name)
    return {name: fields[name] for name in names}


def pointcloud2_to_xyzi(
    msg: PointCloud2,
    *,
    intensity_field: str = "intensity",
    intensity_scale: float = 1.0,
    max_points: int | None = None,
    topic: str | None = None,
) -> np.ndarray:
    """PointCloud2 -> float32 [N, 4] (x, y, z in metres, intensity x ``intensity_scale``).

    x, y, z must be FLOAT32 or FLOAT64; the intensity field may be any numeric type and is 0 when
    the cloud has none (non-finite intensities also become 0). Points with a non-finite
    coordinate are dropped. The LiDAR encoder expects intensity in [0, 1]: pass e.g.
    ``intensity_scale=1/255`` for a driver reporting 0..255. A cloud of more than ``max_points``
    points (width x height) is read uniformly subsampled, every ceil(n / max_points)-th point in
    the message's order, so reading it costs what reading ``max_points`` points costs.
    """
    with_intensity = intensity_field in _field_by_name(msg)
    return _read_xyz(msg, intensity_field if with_intensity else None, intensity_scale, max_points, topic=topic)


def pointcloud2_to_xyz(msg: PointCloud2, *, topic: str | None = None) -> np.ndarray:
    """PointCloud2 -> float32 [N, 3] metres; non-finite points dropped (see ``pointcloud2_to_xyzi``)."""
    return _read_xyz(msg, None, 1.0, None, topic=topic)[:, :3]


def _read_xyz(msg: PointCloud2, intensity_field: str | None, intensity_scale: float, max_points: int | None, *,
              topic: str | None) -> np.ndarray:
    if int(msg.width) * int(msg.height) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    wanted = _require_fields(msg, ("x", "y", "z"), topic=topic)
    for name, field in wanted.items():
        if int(field.datatype) not in (PointField.FLOAT32, PointField.FLOAT64):
            raise MessageError(f"datatype {field.datatype}; x, y, z must be FLOAT32 (7) or FLOAT64 (8)",
                               topic=topic, field=name)
    if intensity_field is not None:
        wanted.update(_require_fields(msg, (intensity_field,), topic=topic))
    records = _cloud_records(msg, wanted, topic=topic)
    if max_points is not None and records.shape[0] > max_points:
        records = records[:: -(-records.shape[0] // max_points)]
    points = np.zeros((records.shape[0], 4), dtype=np.float32)
    for column, name in enumerate(("x", "y", "z")):
        points[:, column] = records[name]
    if intensity_field is not None:
        intensity = records[intensity_field].astype(np.float32) * np.float32(intensity_scale)
        points[:, 3] = np.where(np.isfinite(intensity), intensity, np.float32(0.0))
    finite = np.isfinite(points[:, :3]).all(axis=1)
    return points if finite.all() else points[finite]


def pointcloud2_to_events(msg: PointCloud2, *, topic: str | None = None) -> np.ndarray:
    """Event packet as PointCloud2 -> ``EVENT_DTYPE`` array [N] (x, y uint16; t float64 s; polarity +-1).

    ``t`` FLOAT64 is absolute seconds; an integer ``t`` is nanoseconds after ``header.stamp``.
    FLOAT32 ``t`` is rejected (it cannot hold absolute seconds to better than minutes). Events
    with a non-finite ``t`` or coordinates outside 0..65535 (or non-integral float coordinates)
    are dropped.
    """
    if int(msg.width) * int(msg.height) == 0:
        return np.zeros(0, dtype=EVENT_DTYPE)
    wanted = _require_fields(msg, ("x", "y", "t", "polarity"), topic=topic)
    t_type = int(wanted["t"].datatype)
    if t_type == PointField.FLOAT32:
        raise MessageError("FLOAT32 cannot hold absolute seconds; use FLOAT64 seconds or integer "
                           "nanoseconds after header.stamp", topic=topic, field="t")
    records = _cloud_records(msg, wanted, topic=topic)
    x, y = records["x"], records["y"]
    if t_type == PointField.FLOAT64:
        t = records["t"].astype(np.float64)
    else:
        t = stamp_to_seconds(msg.header.stamp) + records["t"].astype(np.float64) * 1e-9
    keep = np.isfinite(t)
    for coordinate in (x, y):
        if coordinate.dtype.newbyteorder("=") != np.dtype(np.uint16):  # uint16 always fits; others are checked
            keep &= (coordinate >= 0) & (coordinate <= np.iinfo(np.uint16).max)
            if coordinate.dtype.kind == "f":
                keep &= coordinate == np.floor(coordinate)
    polarity = records["polarity"]
    if not keep.all():  # gather only when something is dropped: a boolean gather of every field is costly
        x, y, t, polarity = x[keep], y[keep], t[keep], polarity[keep]
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = t
    events["polarity"] = np.where(polarity > 0, 1, -1)
    return events


def numpy_to_pointcloud2(
    values: np.ndarray,
    header: Header | None = None,
    *,
    intensity_field: str = "intensity",
    is_bigendian: bool = HOST_IS_BIGENDIAN,
) -> PointCloud2:
    """Points or a structured array -> PointCloud2 (``is_dense`` false, row_step = width x point_step).

    * [N, 3] / [N, 4] numbers -> float32 fields x, y, z (+ ``intensity_field``), point_step 12 / 16;
    * a structured array [N] (unorganised) or [H, W] (organised) -> one PointField per numpy field
      with its offset and type; ``itemsize`` (including padding) is the point_step. An
      ``EVENT_DTYPE`` array gives the event packet layout (x, y uint16, t float64 s, polarity int8).

    ``is_bigendian`` chooses the byte order written (default: the host's).
    """
    values = np.asarray(values)
    if values.dtype.names is None:
        if values.ndim != 2 or values.shape[1] not in (3, 4):
            raise ValueError(f"points must be [N, 3] or [N, 4], or a structured array; got {values.shape}")
        names = ("x", "y", "z", intensity_field)[: values.shape[1]]
        record = np.dtype([(name, np.float32) for name in names])
        structured = np.empty(values.shape[0], dtype=record)
        for column, name in enumerate(names):
            structured[name] = values[:, column]
        values = structured
    if values.ndim not in (1, 2):
        raise ValueError(f"structured clouds must be [N] or [H, W], got shape {values.shape}")
    height, width = (1, values.shape[0]) if values.ndim == 1 else values.shape

    byte_order = ">" if is_bigendian else "<"
    names, formats, offsets, fields = [], [], [], []
    for name in values.dtype.names:
        field_type, offset = values.dtype.fields[name][:2]
        if field_type.subdtype is not None:
            scalar, shape = field_type.subdtype
            count = int(np.prod(shape))
        else:
            scalar, count = field_type, 1
        datatype = _NUMPY_TO_POINT_FIELD.get(scalar.newbyteorder("="))
        if datatype is None:
            raise ValueError(f"field '{name}' has dtype {scalar}, which PointField cannot describe")
        names.append(name)
        formats.append(np.dtype((scalar.newbyteorder(byte_order), count)) if count > 1
                       else scalar.newbyteorder(byte_order))
        offsets.append(offset)
        fields.append(PointField(name=name, offset=int(offset), datatype=datatype, count=count))
    record = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                       "itemsize": values.dtype.itemsize})
    packed = np.zeros(values.shape, dtype=record)
    for name in names:
        packed[name] = values[name]

    msg = PointCloud2()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(height), int(width)
    msg.fields = fields
    msg.is_bigendian = bool(is_bigendian)
    msg.point_step = int(values.dtype.itemsize)
    msg.row_step = int(width * values.dtype.itemsize)
    msg.data = _to_byte_array(packed.view(np.uint8) if packed.size else np.zeros(0, np.uint8))
    msg.is_dense = False
    return msg


def events_to_pointcloud2(events: np.ndarray, header: Header | None = None, **kwargs) -> PointCloud2:
    """``EVENT_DTYPE`` events [N] -> event packet PointCloud2 (x, y uint16, t float64 s, polarity int8)."""
    events = np.asarray(events)
    missing = [name for name in EVENT_DTYPE.names if name not in (events.dtype.names or ())]
    if missing:
        raise ValueError(f"events must have fields x, y, t, polarity; missing {missing}")
    return numpy_to_pointcloud2(events.astype(EVENT_DTYPE), header, **kwargs)


# --------------------------------------------------------------------------------------------
# CameraInfo


def camera_info_to_intrinsics(msg: CameraInfo, *, topic: str | None = None) -> CameraIntrinsics:
    """``CameraInfo`` -> ``CameraIntrinsics`` of the published image, from ``k`` (fx, fy, cx, cy).

    Distortion (``d``, ``distortion_model``) is ignored: the image is assumed rectified. Skew
    (k[1]), ``r`` and ``p`` are ignored too. Binning divides the size and rescales the
    intrinsics; a region of interest smaller than the full image is rejected.
    """
    width, height = int(msg.width), int(msg.height)
    if width == 0 or height == 0:
        raise MessageError(f"zero image size ({width}x{height})", topic=topic, field="width/height")
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise MessageError(f"{k.size} values, expected 9 (3x3 row-major)", topic=topic, field="k")
    fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
        raise MessageError(f"focal lengths must be positive and finite, got fx={fx}, fy={fy} "
                           "(an uncalibrated camera?)", topic=topic, field="k")
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise MessageError(f"principal point must be finite, got cx={cx}, cy={cy}", topic=topic, field="k")
    roi = msg.roi
    if (roi.width, roi.height) not in ((0, 0), (width, height)):
        raise MessageError(f"a region of interest ({roi.width}x{roi.height} at {roi.x_offset},{roi.y_offset}) "
                           "is not supported", topic=topic, field="roi")
    intrinsics = CameraIntrinsics(width, height, float(fx), float(fy), float(cx), float(cy))
    binning_x, binning_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if binning_x > width or binning_y > height:
        raise MessageError(f"binning {binning_x}x{binning_y} is larger than the {width}x{height} image",
                           topic=topic, field="binning_x/binning_y")
    if binning_x > 1 or binning_y > 1:
        intrinsics = intrinsics.scaled(width // binning_x, height // binning_y)
    return intrinsics


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: Header | None = None) -> CameraInfo:
    """``CameraIntrinsics`` -> ``CameraInfo`` of a rectified pinhole camera (plumb_bob, zero distortion)."""
    msg = CameraInfo()
    msg.header = header if header is not None else Header()
    msg.width, msg.height = int(intrinsics.width), int(intrinsics.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    fx, fy, cx, cy = (float(value) for value in (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy))
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
