"""The crash-safety tests' kill points: each write step of the store passes `checkpoint(step)`.

Tests set CRASH_HOOK to a step name, or to k for the k-th step of the process, and the process SIGKILLs
itself there; `tests.fixtures.write_steps` replaces `checkpoint` to list the steps of a run. Callers call
it as `crash.checkpoint(...)`, so that replacement reaches every module.
"""
from __future__ import annotations

import os
import signal

CRASH_HOOK = "FEATURES_STORE_CRASH_AT"
_passed = 0


def checkpoint(step: str) -> None:
    """A write step passed: die here when CRASH_HOOK names it (or its number)."""
    global _passed
    target = os.environ.get(CRASH_HOOK)
    if not target:
        return
    _passed += 1
    if target == step or target == str(_passed):
        os.kill(os.getpid(), signal.SIGKILL)
