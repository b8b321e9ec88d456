"""Reads PyTorch's legacy serialization (``torch.save(..., _use_new_zipfile_serialization=False)``,
the format of torch < 1.6) into NumPy arrays, without PyTorch.

The file is five pickle streams followed by raw bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version ``1001``;
3. system information (byte order, sizes of short / int / long);
4. the object itself (here a state dict: an ``OrderedDict`` of name -> tensor). A tensor is
   pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``; the
   storage is a *persistent id* ``("storage", <StorageType>, key, location, numel, view)``
   whose bytes come later;
5. the list of storage keys, in the order their bytes follow;

then, for each key of that list, an int64 element count and the storage's raw little-endian
bytes. ``load_state_dict`` unpickles with an allow-list of globals (``OrderedDict``, the tensor
rebuild functions and the storage types; anything else is refused), reads the storages and
returns ``{name: numpy array}`` with each tensor's size, stride and offset applied. The
zip-based format of torch >= 1.6 is refused with a message saying so.
"""

from __future__ import annotations

import collections
import pickle
import struct
from typing import Any, BinaryIO, Dict, Optional, Tuple

import numpy as np

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFormatError(ValueError):
  """The file is not a legacy PyTorch file this reader understands."""


class _StorageType:
  """Stands for ``torch.<Name>Storage`` in the pickle stream."""

  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _Storage:
  """A storage announced by a persistent id; its bytes are filled in after the pickles."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: Optional[np.ndarray] = None


class _Tensor:
  """A tensor as pickled: a view (offset, size, stride in elements) of a storage."""

  def __init__(self, storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def numpy(self) -> np.ndarray:
    storage, offset = self.storage, self.offset
    if isinstance(storage, tuple):          # a view of a storage: (base storage, element offset)
      storage, base = storage
      offset += base
    data = storage.data
    if data is None:
      raise TorchFormatError(f"storage {storage.key!r} was never read")
    needed = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1 if all(self.size) else 0
    if needed > data.size:
      raise TorchFormatError(f"tensor of size {self.size} at offset {offset} exceeds storage "
                             f"{storage.key!r} of {data.size} elements")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(data[offset:], self.size, [s * item for s in self.stride])
    return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
  return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Unpickles the object stream with an allow-list of globals and lazy storages."""

  def __init__(self, f: BinaryIO, storages: Dict[str, _Storage]):
    super().__init__(f)
    self.storages = storages

  def find_class(self, module, name):
    if (module, name) in _GLOBALS:
      return _GLOBALS[(module, name)]
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} "
                                 "(not part of a tensor state dict)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) == 6):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _location, numel, view = pid
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    storage = self.storages.get(key)
    if storage is None:
      storage = self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
    if view is not None:                    # (view key, offset, view size)
      return (storage, int(view[1]))
    return storage


class _NoGlobalsUnpickler(pickle.Unpickler):
  """For the header pickles: plain values only."""

  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} in a header")


def _load_pickle(f: BinaryIO, what: str) -> Any:
  try:
    return _NoGlobalsUnpickler(f).load()
  except Exception as e:  # pylint: disable=broad-except
    raise TorchFormatError(f"cannot read the {what} of a legacy PyTorch file: {e}") from e


def _to_numpy(obj):
  if isinstance(obj, _Tensor):
    return obj.numpy()
  if isinstance(obj, dict):
    return {k: _to_numpy(v) for k, v in obj.items()}
  return obj


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """The state dict saved in a legacy (non-zip) PyTorch file, as ``{name: numpy array}`` in the
  file's order. Raises ``TorchFormatError`` for a zip-based file, a wrong magic number or
  protocol, a big-endian file, a storage whose bytes are short or whose element count differs
  from the one announced, trailing bytes, or a top-level object that is not a dict of tensors."""
  with open(path, "rb") as f:
    head = f.read(4)
    if head.startswith(b"PK"):
      raise TorchFormatError(f"{path} is a zip-based PyTorch file (torch >= 1.6); this reader "
                             "handles the legacy format only")
    f.seek(0)
    magic = _load_pickle(f, "magic number")
    if magic != MAGIC_NUMBER:
      raise TorchFormatError(f"{path}: wrong magic number {magic!r}, not a legacy PyTorch file")
    protocol = _load_pickle(f, "protocol version")
    if protocol != PROTOCOL_VERSION:
      raise TorchFormatError(f"{path}: unsupported protocol version {protocol!r}")
    sys_info = _load_pickle(f, "system information")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
      raise TorchFormatError(f"{path}: big-endian files are not supported ({sys_info!r})")
    storages: Dict[str, _Storage] = {}
    try:
      obj = _Unpickler(f, storages).load()
    except pickle.UnpicklingError as e:
      raise TorchFormatError(f"{path}: {e}") from e
    keys = _load_pickle(f, "storage key list")
    if sorted(map(str, keys)) != sorted(storages):
      raise TorchFormatError(f"{path}: the storage key list {keys} does not match the storages "
                             f"the tensors use {sorted(storages)}")
    for key in keys:
      storage = storages[key]
      header = f.read(8)
      if len(header) != 8:
        raise TorchFormatError(f"{path}: file ends before storage {key!r}")
      (numel,) = struct.unpack("<q", header)
      if numel != storage.numel:
        raise TorchFormatError(f"{path}: storage {key!r} holds {numel} elements, "
                               f"its persistent id announced {storage.numel}")
      raw = f.read(numel * storage.dtype.itemsize)
      if len(raw) != numel * storage.dtype.itemsize:
        raise TorchFormatError(f"{path}: storage {key!r} is truncated")
      storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if f.read(1):
      raise TorchFormatError(f"{path}: unexpected bytes after the last storage")
  if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
    raise TorchFormatError(f"{path}: the saved object is not a state dict of tensors "
                           f"({type(obj).__name__})")
  return _to_numpy(obj)
