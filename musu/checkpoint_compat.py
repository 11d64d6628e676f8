"""Let mmengine's own checkpoints load under torch >= 2.6 without unpickling freely.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine 0.10
checkpoints hold more than tensors (its message hub's ``HistoryBuffer``s, numpy
arrays and scalars, the dataset meta), so ``resume=True`` fails with
"Weights only load failed". Rather than loading with ``weights_only=False``
everywhere (arbitrary code execution for any file), this module adds just the
types mmengine writes to torch's safe-globals allowlist. Unrelated loads keep
the safe default; a checkpoint holding anything else still fails loudly.
"""
from __future__ import annotations

import codecs
import collections
import pickle

import numpy as np
import torch


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    # Concrete dtype classes (numpy >= 1.25 pickles dtypes through them).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


def history_buffer_getattr(obj, name: str):
    """Stands in for ``builtins.getattr`` while unpickling: only HistoryBuffer's own
    statistics methods may be fetched (mmengine pickles them by reference as
    ``getattr(HistoryBuffer, 'min')``). A general getattr would let a crafted
    file reach methods such as ``ndarray.tofile`` and write files."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith("_") \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed in a checkpoint")


def mmengine_safe_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, collections.OrderedDict, collections.Counter, collections.defaultdict,
            (history_buffer_getattr, "builtins.getattr"), (codecs.encode, "_codecs.encode"), *_numpy_globals()]


def register() -> None:
    """Allowlist mmengine checkpoint types for weights-only loading (idempotent)."""
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(mmengine_safe_globals())


register()
