"""The one place that imports torch, lazily, with one clear error naming the extra."""

from __future__ import annotations

from typing import Any

from asyncnet.errors import AsyncNetError, UnsupportedError

EXTRA_HINT = "install the 'distributed' extra: pip install 'asyncnet[distributed]'"


class DistributedUnavailableError(UnsupportedError):
    """torch (with torch.distributed and Gloo) is not installed."""


class CollectiveError(AsyncNetError, RuntimeError):
    """A rendezvous or collective failed: a peer died, raised, never joined, or disagreed on shapes."""


def torch_dist() -> tuple[Any, Any]:
    """``(torch, torch.distributed)``; raises DistributedUnavailableError naming the extra."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:
        raise DistributedUnavailableError(f"Gloo collectives need torch ({EXTRA_HINT}): {e}") from e
    if not dist.is_available() or not dist.is_gloo_available():
        raise DistributedUnavailableError(f"this torch build has no Gloo backend for torch.distributed ({EXTRA_HINT})")
    return torch, dist
