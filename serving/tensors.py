"""TensorProto <-> numpy for the request path, without per-element Python.

`tf.make_ndarray` and `tf.make_tensor_proto` handle every dtype and layout a TensorProto can
have, and cost tens of microseconds per tensor in Python bookkeeping (dtype objects, shape
products, a copy of the content); a 100-candidate request has eleven inputs. The common layouts
take one numpy call here:

- ``tensor_content`` (what `tf.make_tensor_proto` writes for numeric arrays): a read-only numpy
  view (``np.frombuffer``) on the content bytes protobuf hands out, with no further copy;
- ``string_val`` / ``int64_val`` / ``float_val`` ... with one value per element: one array from
  the repeated field;

anything else (fewer values than elements, which TF pads with the last one; half, complex and
quantized dtypes) is left to `tf.make_ndarray`, so the result is always the same array.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# dtype enum -> (numpy dtype, the repeated field that holds its values when there is no content)
_FIELDS = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_STRING: (object, "string_val"),
}
_ENUMS = {np.dtype(d): e for e, (d, _) in _FIELDS.items() if d is not object}


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The array a TensorProto holds (equal to `tf.make_ndarray`'s; numeric content is a
  read-only view on the content bytes). Raises ValueError / TypeError on malformed protos."""
  shape = tuple(d.size for d in proto.tensor_shape.dim)
  if proto.dtype in _FIELDS:
    dtype, field = _FIELDS[proto.dtype]
    if proto.tensor_content and dtype is not object:
      return np.frombuffer(proto.tensor_content, dtype).reshape(shape)
    values = getattr(proto, field)
    if not proto.tensor_content and len(values) == math.prod(shape):
      return np.array(list(values), dtype=dtype).reshape(shape)
  return tf.make_ndarray(proto)


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """A TensorProto of `array` (numeric arrays as ``tensor_content`` bytes, as
  `tf.make_tensor_proto` writes them; other dtypes by `tf.make_tensor_proto`)."""
  array = np.asarray(array)
  enum = _ENUMS.get(array.dtype)
  if enum is None:
    return tf.make_tensor_proto(array)
  return tensor_pb2.TensorProto(
      dtype=enum, tensor_content=np.ascontiguousarray(array).tobytes(),
      tensor_shape=tensor_shape_pb2.TensorShapeProto(
          dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
