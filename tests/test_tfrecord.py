"""TFRecord framing and tf.train.Example encoding without TensorFlow, read back with it."""

import pytest

from speechrnn.tfrecord import crc32c, encode_example, write_record


def test_crc32c_is_castagnoli():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0


def test_tensorflow_reads_what_is_written(tmp_path):
    tf = pytest.importorskip("tensorflow")
    values = [{"a": b"\x00\x01", "n": [0, 1, 127, 128, 300, 2**40]},
              {"empty": [], "text": "é".encode()},
              {"big": bytes(range(256)) * 40, "neg": [-1, -(2**40)]}]
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as f:
        for v in values:
            write_record(f, encode_example(v))
    records = list(tf.data.TFRecordDataset(str(path)))  # checks both CRCs of each record
    assert len(records) == 3
    for raw, sent in zip(records, values):
        got = tf.train.Example.FromString(raw.numpy()).features.feature
        assert set(got) == set(sent)
        for key, value in sent.items():
            if isinstance(value, bytes):
                assert got[key].bytes_list.value == [value]
            else:
                assert list(got[key].int64_list.value) == value


def test_the_same_example_gives_the_same_bytes():
    a = encode_example({"x": [1, 2], "y": b"z"})
    assert a == encode_example({"y": b"z", "x": [1, 2]})  # keys sorted
    assert a != encode_example({"x": [2, 1], "y": b"z"})


def test_a_damaged_record_is_refused(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as f:
        write_record(f, encode_example({"x": [1, 2, 3]}))
    data = bytearray(path.read_bytes())
    data[14] ^= 0xFF  # a byte of the payload
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))
