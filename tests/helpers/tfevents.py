"""TensorBoard event files read back without the tensorboard package.

An event file is a TFRecord stream: each record is
    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
(little endian), where data is a serialized Event (tensorboardX's protobufs are TensorFlow's).

`shown_scalars` applies the rule of TensorBoard's Python loader (EventAccumulator with
purge_orphaned_data, files of version brain.Event:2): a run's files are read in name order, and a
SessionLog START at step s drops every event read before it with step >= s.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c


def read_events(path: str | Path) -> list[Event]:
    """Every record of one event file, checking both CRCs of each."""
    data = Path(path).read_bytes()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        if pos + 12 > len(data):
            raise ValueError(f"record cut short at byte {pos} of {path}")
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked_crc32c(header):
            raise ValueError(f"bad length CRC at byte {pos} of {path}")
        if pos + 16 + length > len(data):
            raise ValueError(f"record cut short at byte {pos} of {path}")
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if body_crc != masked_crc32c(body):
            raise ValueError(f"bad data CRC at byte {pos} of {path}")
        events.append(Event.FromString(body))
        pos += 16 + length
    return events


def event_files(logdir: str | Path) -> list[Path]:
    """A run's event files in the order TensorBoard reads them (by name)."""
    return sorted(p for p in Path(logdir).iterdir() if "tfevents" in p.name)


def shown_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows them after purging."""
    shown: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(logdir):
        events = read_events(path)
        if not events or events[0].file_version != "brain.Event:2":
            raise ValueError(f"{path} does not start with file_version brain.Event:2")
        for event in events[1:]:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                shown = {tag: [(s, v) for s, v in points if s < event.step]
                         for tag, points in shown.items()}
            for value in event.summary.value:
                shown.setdefault(value.tag, []).append((event.step, value.simple_value))
    return shown
