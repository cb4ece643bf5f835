"""A process group for weight sync that lives beside, not inside, torch.distributed's default group.

Learner rank 0 is already a member of the learners' default group, and vLLM workers have their own; the sync
group (learner rank 0 + every rollout worker) must not disturb either. So it is built from parts, without
`init_process_group`: a `TCPStore` hosted by rank 0 for the rendezvous, then a `ProcessGroupGloo` (CPU tensors) or
`ProcessGroupNCCL` (GPU tensors) constructed on that store. Nothing is registered globally.

Joining never hangs: members count themselves in through the store, and a member that does not arrive within
`timeout_s` fails every other member with a message that says how many came.
"""

from __future__ import annotations

import datetime
import logging
import socket
import time
from typing import Literal

import torch
import torch.distributed as dist

Backend = Literal["gloo", "nccl"]
log = logging.getLogger(__name__)


def local_ip_towards(address: str) -> str:
    """The IP of the interface this machine uses to reach `address` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def host_store(ip: str, world_size: int, timeout_s: float) -> dist.TCPStore:
    """Rank 0's rendezvous store on a free port the OS picks (`store.port`): no race for a port."""
    return dist.TCPStore(ip, 0, world_size, is_master=True, timeout=datetime.timedelta(seconds=timeout_s),
                         wait_for_workers=False)


class SyncGroup:
    """One broadcast group; rank 0 is the sender."""

    def __init__(self, pg, store: dist.Store, rank: int, world_size: int, backend: Backend, device: torch.device):
        self.pg, self.store, self.rank, self.world_size = pg, store, rank, world_size
        self.backend, self.device = backend, device

    @classmethod
    def join(
        cls,
        master_addr: str,
        master_port: int,
        world_size: int,
        rank: int,
        backend: Backend = "gloo",
        timeout_s: float = 300.0,
        store: dist.TCPStore | None = None,
    ) -> SyncGroup:
        if not 0 <= rank < world_size:
            raise ValueError(f"sync group rank {rank} outside world size {world_size}")
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(master_addr, master_port, world_size, is_master=(rank == 0), timeout=timeout,
                                  wait_for_workers=False)
        _count_in(store, world_size, timeout_s, f"{master_addr}:{master_port}")
        if backend == "gloo":
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = timeout
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname=local_ip_towards(master_addr))]
            pg = dist.ProcessGroupGloo(store, rank, world_size, opts)
            device = torch.device("cpu")
        elif backend == "nccl":
            if not (torch.cuda.is_available() and hasattr(dist, "ProcessGroupNCCL")):
                raise RuntimeError("the nccl sync backend needs a CUDA GPU and a CUDA build of torch; use gloo")
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            pg = dist.ProcessGroupNCCL(store, rank, world_size, opts)
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            raise ValueError(f"unknown sync backend {backend!r}; expected gloo or nccl")
        return cls(pg, store, rank, world_size, backend, device)

    def broadcast(self, tensor: torch.Tensor):
        """Asynchronous broadcast from rank 0; returns the work handle (`.wait()`)."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        return self.pg.broadcast([tensor], opts)

    def close(self) -> None:
        shutdown = getattr(self.pg, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as e:  # noqa: BLE001 - a peer may already be gone; the group is being dropped anyway
                log.debug("closing sync group: %s", e)
        self.pg = self.store = None


def _count_in(store: dist.Store, world_size: int, timeout_s: float, where: str) -> None:
    store.add("members", 1)
    deadline = time.monotonic() + timeout_s
    while (n := store.add("members", 0)) < world_size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sync group at {where}: only {n} of {world_size} members joined within {timeout_s}s")
        time.sleep(0.01)
