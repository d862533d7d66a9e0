"""TFRecord files without TensorFlow: ``tf.train.Example`` protos encoded from a handful of
protobuf wire-format fields, framed as TFRecord (length, masked CRC-32C of the length, data,
masked CRC-32C of the data). ``tf.data.TFRecordDataset`` reads what this writes.

The CRC loop is compiled by numba, which librosa already depends on: a pure-Python loop
would cost as much as extracting the features.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()


def _crc_loop(crc, data, table):
    for i in range(data.shape[0]):
        crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
    return crc


try:  # librosa depends on numba; a pure-Python loop would cost as much as the features
    import numba

    try:
        _crc_update = numba.njit(cache=True, nogil=True)(_crc_loop)
    except RuntimeError:  # pragma: no cover  (nowhere to cache the compiled loop)
        _crc_update = numba.njit(nogil=True)(_crc_loop)
except ImportError:  # pragma: no cover
    def _crc_update(crc, data, table):
        t = table.tolist()
        for b in bytes(data):
            crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord frames use."""
    return int(_crc_update(0xFFFFFFFF, np.frombuffer(data, np.uint8), _CRC_TABLE)) ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    c = crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def write_record(f, data: bytes) -> None:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    f.write(length + _masked_crc(length))
    f.write(data)
    f.write(_masked_crc(data))


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes | Sequence[int]]) -> bytes:
    """A serialised ``tf.train.Example``: ``bytes`` values become a BytesList of one, int
    sequences an Int64List (packed). Keys are written sorted: the same input, the same bytes."""
    entries = []
    for key in sorted(features):
        value = features[key]
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))  # Feature.bytes_list, BytesList.value
        else:
            packed = b"".join(_varint(int(v)) for v in value)
            feature = _field(3, _field(1, packed) if packed else b"")  # Feature.int64_list
        entries.append(_field(1, _field(1, key.encode()) + _field(2, feature)))
    return _field(1, b"".join(entries))  # Example.features{map<string, Feature> feature}
