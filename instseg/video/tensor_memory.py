"""Peak memory of the tensors a computation creates, on any device, meta included.

Why not the allocator: on CPU torch has no ``max_memory_allocated``, and on meta tensors (how the
efficiency study sizes the paper's features without allocating them) there is no memory at all.
This mode sees every op's outputs instead (a ``TorchDispatchMode``): each new storage (views and
in-place results share their input's) adds its bytes while the tensor that brought it lives; the
peak is the largest sum. Inputs made before the mode are not counted, and a view outliving its
base is (rarely) missed.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorMemory(TorchDispatchMode):
    """``with PeakTensorMemory() as m: ...`` then ``m.peak`` (bytes) and ``m.live`` (still held)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._tracked.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata  # the storage itself: shared by views and in-place results
            if key not in self._tracked:
                self._tracked.add(key)
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._release, key, storage.nbytes())
        return out
