"""Data-parallel training over Gloo through ``torch.distributed`` (the ``distributed`` extra).

* :mod:`asyncnet.distributed.store` — rendezvous store handlers (file or TCP).
* :mod:`asyncnet.distributed.comm` — :class:`CommonWorld`, a Gloo process group whose
  collectives return ``concurrent.futures.Future`` objects and hold no thread while the
  network works.
* :mod:`asyncnet.distributed.data_parallel` — turning a training net into a data-parallel one.
* :mod:`asyncnet.distributed.launch` — starting N local workers (``asyncnet launch``).

Importing this package does not import torch; torch is imported when a store or a
communicator is first created (:func:`asyncnet.distributed._torch.torch_dist`).
"""

from __future__ import annotations

from asyncnet.distributed._torch import EXTRA_HINT, CollectiveError, DistributedUnavailableError

__all__ = ["EXTRA_HINT", "CollectiveError", "DistributedUnavailableError"]
