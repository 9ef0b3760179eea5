"""A minimal TensorBoard event-file writer for scalars: no TensorFlow, no tensorboard package.

Why this exists
    The reference GPU machine has no TensorFlow, and neither jax nor flax ships a writer that
    works without it (`flax.metrics.tensorboard` imports tensorflow). Scalars need only two
    tiny protobuf messages, encoded here by hand.

Format
    An event file is a TFRecord stream: each record is
        uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
    (little endian), where data is a serialized `tensorflow.Event`:
        Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
                  Summary summary = 5; }
        Summary { repeated Value value = 1; }
        Value   { string tag = 1; float simple_value = 2; }
    The first record carries file_version "brain.Event:2".
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 is encoded as its two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(*, wall_time: float, step: int = 0, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        out += _varint(2 << 3 | 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5)
                         + struct.pack("<f", float(value)))
            for tag, value in scalars.items())
        out += _bytes_field(5, summary)
    return out


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


class EventFileWriter:
    """Scalars to `{logdir}/events.out.tfevents.{time}.{host}`; flushed on every write."""

    def __init__(self, logdir: str | os.PathLike):
        Path(logdir).mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = Path(logdir) / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(self.path, "ab")
        self._file.write(tfrecord(encode_event(wall_time=now, file_version="brain.Event:2")))
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if v is not None}
        if finite:
            self._file.write(tfrecord(encode_event(wall_time=time.time(), step=step,
                                                   scalars=finite)))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """(step, tag, value) from an event file, checking every CRC; for tests and debugging."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if len_crc != masked_crc32c(header):
            raise ValueError(f"bad length CRC at byte {pos} of {path}")
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if body_crc != masked_crc32c(body):
            raise ValueError(f"bad data CRC at byte {pos} of {path}")
        out += _decode_scalars(body)
        pos += 16 + length
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _decode_scalars(event: bytes) -> list[tuple[int, str, float]]:
    step, summary = 0, None
    for number, value in _fields(event):
        if number == 2:
            step = value
        elif number == 5:
            summary = value
    out = []
    for number, value in _fields(summary or b""):
        if number != 1:
            continue
        tag, scalar = "", None
        for n2, v2 in _fields(value):
            if n2 == 1:
                tag = v2.decode()
            elif n2 == 2:
                (scalar,) = struct.unpack("<f", v2)
        if scalar is not None:
            out.append((step, tag, scalar))
    return out
