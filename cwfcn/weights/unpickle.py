"""A `torch.save`d state_dict read without torch: a zip archive and a restricted unpickler.

A pickle can call any function while it loads, so `StateDictUnpickler` resolves only the
globals a state_dict names (`ALLOWED_GLOBALS`: OrderedDict, torch's tensor and parameter
rebuilders, the storage types) and refuses every other. Tensors come back as numpy arrays
(`rebuild_tensor`). It needs numpy (and jax's bfloat16) only: nothing of the net or the importers.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import jax.numpy as jnp
import numpy as np

from cwfcn.data import files

# The numpy dtype of each torch storage type a state_dict may reference.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(jnp.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Stands in for `torch.FloatStorage` etc. in the pickle: only its dtype matters.

    Attributes:
      name: torch's name ("FloatStorage", ...).
      dtype: the numpy dtype of its elements.
    """

    name: str
    dtype: np.dtype


def rebuild_tensor(
    storage: np.ndarray,
    offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2` for numpy: a strided view of the storage, copied.

    Args:
      storage: the storage's elements, 1-d.
      offset: the tensor's first element in the storage.
      size: the tensor's shape.
      stride: its strides, in elements.
      requires_grad: autograd state, ignored.
      backward_hooks: autograd state, ignored.
      metadata: autograd state, ignored.

    Returns:
      A new array of shape `size` and the storage's dtype.

    Raises:
      pickle.UnpicklingError: the view runs outside the storage (a corrupt file).
    """
    del requires_grad, backward_hooks, metadata  # autograd state: irrelevant here
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor layout: size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride}, offset {offset} runs past its "
            f"storage of {storage.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]
    )
    return np.array(view)


def rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any) -> np.ndarray:
    """`torch._utils._rebuild_parameter`: a Parameter is its data here.

    Args:
      data: the parameter's tensor.
      requires_grad: autograd state, ignored.
      backward_hooks: autograd state, ignored.

    Returns:
      `data`.
    """
    del requires_grad, backward_hooks
    return data


# The only globals a state_dict pickle may name; anything else is refused (a pickle can
# otherwise call any function while loading).
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class StateDictUnpickler(pickle.Unpickler):
    """Unpickles torch's `data.pkl` with numpy arrays for tensors, and nothing else.

    Args:
      file: the open `data.pkl`.
      read_storage: (storage type, key, number of elements) -> the storage's elements,
        1-d; called for each storage the pickle references by persistent id.
    """

    def __init__(
        self, file: IO[bytes], read_storage: Callable[[StorageType, str, int], np.ndarray]
    ):
        super().__init__(file)
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global `module.name` (`ALLOWED_GLOBALS`).

        Raises:
          pickle.UnpicklingError: any other global.
        """
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a state_dict"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        """The storage that torch's persistent id `pid` names.

        Raises:
          pickle.UnpicklingError: a persistent id of another form.
        """
        # torch's persistent ids: ("storage", storage type, key, location, numel).
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
        ):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return self._read_storage(pid[1], str(pid[2]), int(pid[4]))


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a `torch.save`d state_dict (zip format, torch >= 1.6) without torch.

    The archive holds `<prefix>/data.pkl` (the pickled dict, whose tensors reference
    storages by persistent id), `<prefix>/data/<key>` (each storage's raw bytes),
    `<prefix>/byteorder` and `<prefix>/version`. Tensors are rebuilt from their storage
    with their offset, size and stride.

    Args:
      path: the .pth / .pt file.

    Returns:
      name -> numpy array (the storage's dtype; float32 for a usual checkpoint).

    Raises:
      MissingFileError: no such file.
      ValueError: not a zip-format torch file, a truncated or corrupt one, a pickle that
        names anything but tensors, storages and OrderedDict, or not a dict of tensors.
    """
    path = files.require_file(path, "weight file")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a zip-format torch file (truncated, corrupt, or saved "
            "by torch < 1.6 / _use_new_zipfile_serialization=False)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError(f"expected one data.pkl in the archive, found {pickles}")
            prefix = pickles[0][: -len("data.pkl")]
            byte_order = "little"
            if f"{prefix}byteorder" in archive.namelist():
                byte_order = archive.read(f"{prefix}byteorder").decode().strip()
            storages: dict[str, np.ndarray] = {}

            def read_storage(storage_type: StorageType, key: str, numel: int) -> np.ndarray:
                if key not in storages:
                    raw = archive.read(f"{prefix}data/{key}")
                    dtype = storage_type.dtype.newbyteorder("<" if byte_order == "little" else ">")
                    if len(raw) != numel * dtype.itemsize:
                        raise ValueError(
                            f"storage {key}: {len(raw)} bytes for {numel} "
                            f"{storage_type.name} elements"
                        )
                    storages[key] = np.frombuffer(raw, dtype).astype(storage_type.dtype)
                return storages[key]

            with archive.open(pickles[0]) as pickled:
                state_dict = StateDictUnpickler(pickled, read_storage).load()
    except Exception as e:  # BadZipFile, KeyError, UnpicklingError, EOFError, ...
        raise ValueError(
            f"{path}: cannot read as a torch state_dict ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state_dict.items()
    ):
        raise ValueError(
            f"{path}: holds a {type(state_dict).__name__}, not a state_dict of tensors"
        )
    return dict(state_dict)
