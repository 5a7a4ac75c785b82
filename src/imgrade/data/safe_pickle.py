"""Unpickle CUCUMBER-9's Python 2 pickles without letting them run code.

A pickle names the functions that rebuild its objects, so loading one can run anything.
:func:`safe_load_pickle` allows only the numpy globals that rebuild a uint8 array, each through a
checked stand-in, and the pure-Python unpickler, whose memory a crafted file cannot blow up.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from imgrade.core.errors import DataError

try:  # numpy >= 2 (numpy 1.x only has numpy.core)
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct


# The globals a CUCUMBER-9 pickle may name map to checked stand-ins, never to numpy itself: called
# as a pickle can call them, ndarray allocates any size a 100-byte file names and an object dtype
# crashes numpy's __setstate__ (it reads past a short list). Their empty __slots__ keep a pickle's
# BUILD from setting attributes on them.


class _NdarrayMarker:
    """Stands for numpy.ndarray, which a pickle may only pass to ``_reconstruct``."""

    __slots__ = ()


class _EmptyArray:
    """numpy's ``_reconstruct`` as ``ndarray.__reduce__`` calls it, ``(ndarray, (0,), 'b')``: an
    empty array that BUILD then fills (sized by the bytes BUILD gives it)."""

    __slots__ = ()

    def __call__(self, subtype, shape, dtype):
        if subtype is not _NDARRAY or shape != (0,):
            raise pickle.UnpicklingError("_reconstruct is called as numpy never writes it")
        return _numpy_reconstruct(np.ndarray, (0,), b"b")


class _PlainDtype:
    """numpy.dtype for plain numbers only, and always numpy's built-in instance, never a copy:
    numpy ignores the state BUILD then gives a built-in dtype, while a copy would take any flags
    the file names (object flags on uint8 memory crash numpy)."""

    __slots__ = ()

    def __call__(self, spec, align=False, copy=False):
        dtype = np.dtype(as_text(spec)) if isinstance(spec, (str, bytes)) else None
        if dtype is None or dtype.kind not in "biuf" or dtype is not np.dtype(dtype.char):
            raise pickle.UnpicklingError(f"dtype {str(spec)[:20]!r} is not a plain number type")
        return dtype


_NDARRAY = _NdarrayMarker()

# The real files use the numpy.core spelling (written by numpy 1.x); numpy >= 2 writes numpy._core.
SAFE_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _EmptyArray(),
    ("numpy._core.multiarray", "_reconstruct"): _EmptyArray(),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PlainDtype(),
}


class _Stream(io.BytesIO):
    def readline(self, size=-1) -> bytes:
        line = super().readline(size)
        if not line.endswith(b"\n"):  # the pure-Python unpickler would read a cut-off global name
            raise pickle.UnpicklingError("pickle data was truncated")
        return line


# The pure-Python unpickler: the C one grows its memo list to any index a PUT names, so 16 bytes
# could make it allocate and zero gigabytes. The files hold few opcodes, so it is as fast here.
class _BatchUnpickler(pickle._Unpickler):
    def __init__(self, data: bytes, name: str):
        # latin1: the files hold Python 2 str, for keys and for the raw array bytes alike
        super().__init__(_Stream(data), encoding="latin1")
        self.name = name

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return SAFE_PICKLE_GLOBALS[(module, name)]
        shown = " ".join(f"{module}.{name}".split())[:100]  # the names come from the file: keep one line
        raise DataError(
            f"refusing to unpickle {shown} in {self.name}: CUCUMBER-9 batches hold only numpy "
            "arrays; this file is not a CUCUMBER-9 batch"
        )

    def get_extension(self, code):
        # copyreg's extension codes name globals too, and its cache would hand them over unchecked
        raise DataError(
            f"refusing to unpickle extension code {code} in {self.name}: CUCUMBER-9 batches hold only numpy "
            "arrays; this file is not a CUCUMBER-9 batch"
        )


def error_line(error: Exception) -> str:
    """An exception as ``Type: message`` on one short line (tarfile's messages span lines)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:200]


def key_names(mapping: dict) -> list[str]:
    """A loaded file's keys for a message: text keys shortened, others by type (a crafted key can
    nest too deep to print)."""
    return sorted(key[:40] if isinstance(key, str) else type(key).__name__ for key in mapping)[:12]


def as_text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def safe_load_pickle(data: bytes, name: str) -> dict:
    """Unpickle one CUCUMBER-9 file, allowing only the numpy globals in ``SAFE_PICKLE_GLOBALS``.

    Args:
        data: the file's bytes.
        name: the file's name, for messages.

    Returns:
        The file's dict, with str keys.

    Raises:
        DataError: the file names any other global (it could run code), is truncated or corrupt,
            or does not hold a dict.

    >>> import pickle
    >>> safe_load_pickle(pickle.dumps({"labels": [5, 1]}, protocol=2), "data_batch_1")
    {'labels': [5, 1]}
    >>> safe_load_pickle(pickle.dumps(print, protocol=2), "data_batch_1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    imgrade.core.errors.DataError: refusing to unpickle ...print in data_batch_1: ...
    """
    try:
        obj = _BatchUnpickler(data, name).load()
    except DataError:
        raise
    except Exception as e:  # a damaged stream fails in many ways (EOFError, UnpicklingError, ValueError, ...)
        raise DataError(f"{name} is truncated or corrupt: {error_line(e)}; download the archive again") from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{name} holds a {type(obj).__name__}, not the dict of a CUCUMBER-9 file; download the archive again"
        )
    return {as_text(key): value for key, value in obj.items()}
