"""`extract.distributed.main_first` with two real gloo processes (spawned, CPU only)."""
from __future__ import annotations

import datetime
import multiprocessing
import socket

import pytest

from extract import distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _failing_setup(error: BaseException):
    def setup():
        raise error
    return setup


def _rank(rank: int, port: int, error: BaseException, results) -> None:
    import torch.distributed as dist

    # a short timeout: a rank left waiting in the broadcast fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=20))
    ranks = distributed.Ranks(rank=rank, world_size=2)
    try:
        distributed.main_first(ranks, _failing_setup(error), lambda: "follow", expected=(ValueError,))
        results.put((rank, "no error", None, None))
    except distributed.SetupFailed as failure:
        results.put((rank, "SetupFailed", str(failure), failure.expected))
    except BaseException as raised:  # noqa: BLE001  (reported to the test, which checks the type)
        results.put((rank, type(raised).__name__, str(raised), None))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(error: BaseException) -> dict[int, tuple]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_rank, args=(rank, port, error, results)) for rank in (0, 1)]
    for process in processes:
        process.start()
    outcome = {}
    for _ in processes:
        rank, *rest = results.get(timeout=60)
        outcome[rank] = tuple(rest)
    for process in processes:
        process.join(timeout=30)
    return outcome


@pytest.mark.parametrize("error, expected", [
    (ValueError("bad store"), True),
    (TypeError("a bug"), False),
])
def test_any_setup_error_on_rank_0_stops_the_other_ranks(error, expected):
    outcome = _run_two_ranks(error)
    assert outcome[0] == (type(error).__name__, str(error), None)  # re-raised as it was
    kind, message, is_expected = outcome[1]
    assert kind == "SetupFailed" and is_expected is expected
    assert message == ("bad store" if expected else "rank 0 failed in setup: TypeError: a bug")
