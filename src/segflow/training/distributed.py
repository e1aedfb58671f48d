"""Data-parallel training: PyTorch DDP, one process per device, launched by torchrun.

`train.processes` > 1 (or auto with several GPUs) makes the train stage start itself again
under ``torchrun --standalone`` on this machine: gloo between CPU processes, NCCL between
GPUs. On several machines run torchrun yourself with its rendezvous flags (README); the
stage sees torchrun's RANK/WORLD_SIZE and does not launch again.

Every process builds the same model from the same seed; DDP averages gradients, so the
weights stay identical (checked at the end of a run). `train.batch_size` is the global
batch: each process takes its share of it from a `DistributedSampler` seeded by
(seed, epoch), so a resumed epoch replays exactly, on any number of processes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from segflow.errors import ConfigError, SegflowError

__all__ = [
    "World",
    "ONE_PROCESS",
    "current_world",
    "resolve_processes",
    "launch",
    "process_group",
    "all_sum",
    "from_latest",
    "sync_buffers",
    "weights_digest",
    "check_same_weights",
    "check_batch",
]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs to MLflow, writes the outputs and registers the model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


#: The world of a plain (not distributed) run.
ONE_PROCESS = World()


def current_world() -> World:
    """The world torchrun describes in the environment; one process without it."""
    return World(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def resolve_processes(choice: int | str, device: str) -> int:
    """Processes to train with: `choice`, or for auto one per GPU (one on a CPU machine,
    where a second process only splits the same cores)."""
    if choice != "auto":
        return int(choice)
    if device != "cpu" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def launch(processes: int, argv: Sequence[str] | None = None) -> None:
    """Run this script (`argv`, default sys.argv) again as `processes` torchrun workers on
    this machine, and wait for them.

    Each CPU worker gets an equal share of the cores as its thread count (torchrun's
    default is one thread), unless OMP_NUM_THREADS is set.

    Raises:
        SegflowError: a worker failed (its own log says why); the others were stopped.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = list(sys.argv if argv is None else argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={processes}", *argv]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        raise SegflowError(
            f"training process {rank} of {processes} failed ({how}; its log is above) and the others "
            "were stopped; rerun to resume after the last finished epoch"
        ) from None


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the other processes (NCCL on CUDA, gloo on CPU) for the duration of a run."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_sum(values: np.ndarray | Sequence[float], world: World, device: torch.device) -> np.ndarray:
    """Element-wise sum of `values` over all processes (itself alone in one process)."""
    array = np.asarray(values, dtype=np.float64)
    if not world.distributed:
        return array
    tensor = torch.from_numpy(array.copy()).to(device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy().astype(array.dtype)


def from_latest(value: object, epoch: int, world: World) -> object:
    """In every process, the `value` of the process whose `epoch` is the highest (the
    lowest rank among equals; pickled, for small objects such as the resume state).

    On several machines the resume file is on the disk of whichever machine held rank 0
    when the run stopped, and torchrun's c10d rendezvous may give rank 0 to another
    machine on the rerun: each machine offers its own file (-1: none) and the newest wins.
    """
    if not world.distributed:
        return value
    epochs: list[object] = [None] * world.size
    dist.all_gather_object(epochs, epoch)
    source = max(range(world.size), key=lambda rank: (int(epochs[rank]), -rank))
    box = [value if world.rank == source else None]
    dist.broadcast_object_list(box, source)
    return box[0]


def sync_buffers(model: torch.nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP broadcasts them before each forward pass, so after an epoch's last step each
    process still holds the statistics of its own last batch; validation and the saved
    model use rank 0's.
    """
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_same_weights(model: torch.nn.Module, world: World) -> list[str]:
    """Every process's weights digest; raises if two processes ended with different weights.

    Raises:
        SegflowError: the processes diverged (a bug, or non-deterministic kernels on CUDA
            with buffers that DDP does not broadcast).
    """
    digest = weights_digest(model)
    if not world.distributed:
        return [digest]
    digests: list[str | None] = [None] * world.size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise SegflowError(f"training processes ended with different weights: {digests}")
    return [str(d) for d in digests]


def check_batch(batch_size: int, world: World) -> int:
    """Each process's share of the global batch `batch_size`.

    Raises:
        ConfigError: the batch does not divide evenly among the processes.
    """
    if batch_size % world.size:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch and must divide among the "
            f"{world.size} training processes (train.processes); use a multiple of {world.size}"
        )
    return batch_size // world.size
