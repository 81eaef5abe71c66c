"""torch, imported on first use rather than with the package.

A process that never runs the network (a cluster worker with a stand-in segmenter, the
driver of a cluster run, `fastsam-stream config`) then does not pay torch's ~250 MB and seconds of
import: a Ray cluster of a hundred such workers fits one machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class _LazyTorch:
    """Stands for the torch module: the first attribute read imports it (later reads are a dict lookup)."""

    def __getattr__(self, name: str) -> Any:
        import torch

        return getattr(torch, name)


torch: Any = _LazyTorch()


def inference_mode(method: Callable) -> Callable:
    """`@torch.inference_mode()` without importing torch when the decorated class is defined."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return method(*args, **kwargs)

    return wrapped
