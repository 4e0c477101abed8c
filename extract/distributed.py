"""Scale-out under torchrun: one process per device, each writing disjoint units of one store.

Rank 0 does the setup (create the store, add the backbone) while the others wait (`main_first`);
then each rank embeds its share of the pending units (`Ranks.owns`).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from extract.errors import UsageError

T = TypeVar("T")


class SetupFailed(RuntimeError):
    """Rank 0's setup failed; the other ranks stop too. `expected`: an error rank 0 reports itself
    in one line (bad input); otherwise rank 0 shows a traceback and the message here says what."""

    def __init__(self, message: str, *, expected: bool = True):
        super().__init__(message)
        self.expected = expected


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the torchrun processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, unit: int) -> bool:
        """Whether this rank embeds `unit` (units are dealt round-robin)."""
        return unit % self.world_size == self.rank


def ranks_from_env() -> Ranks:
    """Ranks from torchrun's environment variables."""
    try:
        return Ranks(rank=int(os.environ.get("RANK", 0)),
                     world_size=int(os.environ.get("WORLD_SIZE", 1)),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """The default process group (nccl on cuda, gloo on cpu) for the duration; no-op when alone."""
    if not ranks.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def main_first(ranks: Ranks, setup: Callable[[], T], follow: Callable[[], T], *,
               expected: tuple[type[BaseException], ...]) -> T:
    """Rank 0 runs `setup`; then the others run `follow`. Any exception on rank 0 (Ctrl-C included)
    re-raises there and becomes `SetupFailed` on the other ranks, which would otherwise wait in
    the broadcast forever; its `expected` says whether it was one of `expected`."""
    if not ranks.distributed:
        return setup()
    failure: list[tuple[str, bool] | None] = [None]
    result = None
    if ranks.is_main:
        try:
            result = setup()
        except BaseException as error:
            is_expected = isinstance(error, expected)
            text = str(error) if is_expected else f"rank 0 failed in setup: {type(error).__name__}: {error}"
            dist.broadcast_object_list([(text, is_expected)], src=0)
            raise
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise SetupFailed(failure[0][0], expected=failure[0][1])
    return result if ranks.is_main else follow()


def gather(ranks: Ranks, value: T) -> list[T]:
    """Every rank's `value` (picklable), in rank order; [value] when alone."""
    if not ranks.distributed:
        return [value]
    values: list = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values
