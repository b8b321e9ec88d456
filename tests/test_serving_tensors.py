"""The server's TensorProto codec (`serving/tensors.py`) against TensorFlow's own
`tf.make_ndarray` / `tf.make_tensor_proto` and hand-written values, on every layout a client may
send: content bytes, one value per element, fewer values than elements (TF pads with the last
one), no values, scalars, strings with arbitrary bytes, and malformed content."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.tensors import to_array, to_proto


def _proto(dtype, shape, **fields):
  return tensor_pb2.TensorProto(dtype=dtype, tensor_shape={"dim": [{"size": d} for d in shape]}, **fields)


CASES = {
    "int64 content": tf.make_tensor_proto(np.array([3, -1, 2 ** 40], np.int64)),
    "float content 2-d": tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
    "double content": tf.make_tensor_proto(np.array([0.1, 1e300])),
    "int32 content": tf.make_tensor_proto(np.array([[1], [2]], np.int32)),
    "bool content": tf.make_tensor_proto(np.array([True, False, True])),
    "strings": tf.make_tensor_proto([b"ad00018", b"", b"w2_6 w2_2", b"\xff\x00\xfe"]),
    "string scalar": tf.make_tensor_proto(b"u00002"),
    "int64_val": _proto(types_pb2.DT_INT64, [3], int64_val=[7, 8, 9]),
    "int64_val 2-d": _proto(types_pb2.DT_INT64, [2, 2], int64_val=[1, 2, 3, 4]),
    "float_val": _proto(types_pb2.DT_FLOAT, [2], float_val=[0.25, -3.5]),
    "int_val int32": _proto(types_pb2.DT_INT32, [2], int_val=[5, -5]),
    "int64 one value broadcast": _proto(types_pb2.DT_INT64, [4], int64_val=[6]),
    "float two values padded": _proto(types_pb2.DT_FLOAT, [3], float_val=[1.0, 2.0]),
    "strings padded": _proto(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"]),
    "no values": _proto(types_pb2.DT_INT64, [2]),
    "empty": _proto(types_pb2.DT_STRING, [0]),
    "half": tf.make_tensor_proto(np.array([1.5, -2], np.float16)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_array_equals_tensorflow(name):
  proto = CASES[name]
  ours, theirs = to_array(proto), tf.make_ndarray(proto)
  assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
  assert ours.tolist() == theirs.tolist()


def test_to_array_by_hand():
  assert to_array(CASES["int64 one value broadcast"]).tolist() == [6, 6, 6, 6]
  assert to_array(CASES["float two values padded"]).tolist() == [1.0, 2.0, 2.0]
  assert to_array(CASES["strings"]).tolist() == [b"ad00018", b"", b"w2_6 w2_2", b"\xff\x00\xfe"]
  assert to_array(CASES["int64 content"]).tolist() == [3, -1, 2 ** 40]
  assert to_array(CASES["int64_val 2-d"]).tolist() == [[1, 2], [3, 4]]


def test_numeric_content_is_a_view_on_the_content_bytes():
  proto = CASES["int64 content"]
  array = to_array(proto)
  assert not array.flags.owndata and not array.flags.writeable
  assert array.tobytes() == proto.tensor_content


@pytest.mark.parametrize("content, shape", [(b"\x01\x02\x03", [2]),           # not whole int64s
                                            (np.arange(3, dtype=np.int64).tobytes(), [2])])  # 3 values for 2
def test_malformed_content_raises(content, shape):
  with pytest.raises((ValueError, TypeError)):
    to_array(_proto(types_pb2.DT_INT64, shape, tensor_content=content))


@pytest.mark.parametrize("array", [np.array([[0.125], [0.5]], np.float32), np.array([1, 2 ** 40], np.int64),
                                   np.zeros((0, 1), np.float32), np.float32(0.75), np.array([True, False]),
                                   np.array([b"x", b"yz"], dtype=object), np.array([1.5], np.float16)])
def test_to_proto_round_trips_through_tensorflow(array):
  proto = to_proto(array)
  back = tf.make_ndarray(proto)
  assert back.dtype == np.asarray(array).dtype and back.shape == np.shape(array)
  assert back.tolist() == np.asarray(array).tolist()
  assert proto.dtype == tf.make_tensor_proto(array).dtype


def test_to_proto_of_a_non_contiguous_array():
  array = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
  assert tf.make_ndarray(to_proto(array)).tolist() == [[0, 2], [4, 6], [8, 10]]
