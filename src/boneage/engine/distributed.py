"""Training on several processes with PyTorch's own engine (``torchrun`` + DDP).

``torchrun --nproc_per_node N -m boneage train RECIPE --out DIR`` starts N copies of the
training command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`session` then
joins them into one process group (gloo on CPU, NCCL on CUDA, each process on GPU
``LOCAL_RANK``) and leaves it again, also on errors. The loop splits each epoch with the
samplers of :mod:`boneage.engine.sampling`, wraps the trained networks in
DistributedDataParallel (:func:`wrap`) and lets only the main process write files.

``train.batch_size`` stays the global batch: each process takes ``batch_size / N`` items of
every step, and the samplers' strided shares make step k's items across the processes
exactly step k's batch of a one-process run. DDP averages the gradients, so N processes
follow the one-process optimisation (up to BatchNorm statistics, which each process takes
over its own share of the batch).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import tempfile
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from boneage.data.datasets import PreprocessedCache
from boneage.engine.sampling import distributed_world
from boneage.errors import ConfigError

logger = logging.getLogger(__name__)

#: How long a process waits for the others. Longer than NCCL's 10-minute default because the
#: others wait while the main process preprocesses the whole data set (:func:`shared_cache`)
#: and validates; a process that dies is noticed at once anyway, as torchrun then stops the
#: rest.
TIMEOUT = datetime.timedelta(minutes=60)


def planned_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process before any process group exists:
    the caller's group if it made one, else what torchrun put in the environment, else a
    single process (0, 0, 1)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = distributed_world()
        return rank, int(os.environ.get("LOCAL_RANK", rank)), world
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun), got "
                          f"{os.environ.get('WORLD_SIZE')!r}, {os.environ.get('RANK')!r}, "
                          f"{os.environ.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"WORLD_SIZE {world} and RANK {rank} do not describe a process of a group")
    return rank, local, world


def check_world(batch_size: int, n_train: int, world: int) -> None:
    """Refuse a process count the recipe and data cannot feed: each process needs at least
    one training image and an equal share of every batch."""
    if world <= 1:
        return
    if world > n_train:
        images = "image" if n_train == 1 else "images"
        raise ConfigError(f"{world} processes (torchrun --nproc_per_node) but only {n_train} training "
                          f"{images}: every process needs at least one; start at most {n_train}")
    if batch_size % world:
        raise ConfigError(f"train.batch_size {batch_size} does not split evenly over {world} processes "
                          f"(it is the global batch: each process takes batch_size / {world}); "
                          f"use a multiple of {world}")


@contextlib.contextmanager
def session(device: torch.device, world: int) -> Iterator[None]:
    """Join the process group torchrun launched this process into (``world`` > 1 and none
    made by the caller yet) and destroy it on the way out, whether training ended or failed.
    A group the caller initialised is used as it is and left to the caller."""
    owned = False
    if world > 1 and not dist.is_initialized():
        if not dist.is_available():  # pragma: no cover - every supported build has it
            raise ConfigError("this PyTorch build has no torch.distributed; run one process")
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} says this is one of {world} processes, but "
                              f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                              "start them with torchrun --nproc_per_node N -m boneage train ...")
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        owned = True
    try:
        yield
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if _active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``src``'s ``obj`` (any picklable value) on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Each value summed over all processes (e.g. loss totals and item counts)."""
    if not _active():
        return [float(v) for v in values]
    # NCCL reduces GPU tensors only; float64 keeps sums of many losses exact enough.
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap(networks: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """The networks as training calls them: in DistributedDataParallel under a process
    group (gradients averaged over processes in backward, buffers taken from the main
    process at each forward), unchanged otherwise. Call again after parameters are frozen
    or unfrozen: DDP fixes the set it reduces when it is built."""
    if not _active():
        return dict(networks)
    ids = [device.index] if device.type == "cuda" else None
    # A network with nothing to train (frozen in this phase) has no gradients to reduce. One
    # that routes items to parts of itself (a per-sex model: a process's share may hold one
    # sex only) says so, and DDP then looks for the parameters a step left unused.
    return {name: DistributedDataParallel(
                net, device_ids=ids,
                find_unused_parameters=bool(getattr(net, "may_leave_parameters_unused", False)))
            if any(p.requires_grad for p in net.parameters()) else net
            for name, net in networks.items()}


def shared_cache(samples, recipe, progress: bool):
    """The recipe's :class:`~boneage.data.datasets.PreprocessedCache` of ``samples``,
    preprocessed once for all processes.

    In one process it is built in memory as always. Under a process group the main process
    preprocesses (on all its threads) and writes the cache to a temporary folder while the
    others wait; every process then memory-maps that file, so the machine holds one copy in
    its page cache rather than one per process, and the folder is removed once all have
    mapped it. A process that cannot see the folder (another machine, whose temporary
    folder differs) or a main process that cannot write it (disk full) falls back to
    preprocessing in memory.
    """
    if not _active():
        return PreprocessedCache(samples, recipe, progress=progress)
    rank = dist.get_rank()
    folder = built = None
    if rank == 0:
        built = PreprocessedCache(samples, recipe, progress=progress)
        try:
            folder = tempfile.mkdtemp(prefix="boneage-cache-")
            built.save(folder)
        except OSError as exc:
            logger.warning(f"could not write the shared preprocessing cache ({exc}); every "
                           "process preprocesses the data itself")
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            folder = None
    folder = broadcast_object(folder)
    cache = built
    if folder is not None and os.path.isfile(os.path.join(folder, PreprocessedCache.PIXELS)):
        cache = PreprocessedCache.load(folder, samples)
        if built is not None:
            cache.extras = built.extras  # the main process validates: it keeps every copy
    elif cache is None:
        cache = PreprocessedCache(samples, recipe, progress=False)
    barrier()  # every process has mapped the file: unlinking it frees nothing they still use
    if rank == 0 and folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return cache
