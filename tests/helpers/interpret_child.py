"""`in_child`: run a test of a multi-warpgroup Mosaic GPU kernel in the interpreter in a child
pytest process, retried only when the child hangs (no tests here).

Why: the interpreter runs each warpgroup as its own XLA CPU execution, and a warpgroup blocked
in a barrier wait holds the XLA worker thread it runs on. On a two-core host the workers can
all be held (by the kernel's own callback and one waiting warpgroup) while the execution of
the warpgroup it waits for is still queued: the interpreter deadlocks, not the kernel. A CI
run on such a host hung in one whole-op check of the fused two-warpgroup backward after many
runs that passed; a state pass whose two warpgroups meet every chunk hung far more often.
The child gets CHILD_CPU_DEVICES fake CPU devices, and with them a larger XLA worker pool
(XLA sizes it by the device count: 2 threads at one device on two cores, 8 at eight). On
two cores, with two or three runs at once, 5 of 10 runs of the worst case (the fused backward
at the 370M heads, bf16) hung with one device; with four, 18 of 18 passed, 10 s each. The
retry stays as insurance: a test that fails (an exception, a wrong value) fails at once; only
a timeout is retried.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, xla_flags

_CHILD = "HYBRID_JAX_TEST_IN_CHILD"
CHILD_CPU_DEVICES = 4  # the child's computations run on the first; the rest size the pool


def in_child(test=None, *, timeout: float = 60.0, attempts: int = 4):
    """Decorator: the test body runs in `python -m pytest <its node id>` with a time limit,
    retried up to `attempts` times if the child hangs; a failing child fails the test with its
    output. Inside the child (or where `_CHILD` is set) the body runs directly. The limit is
    several times the slowest such test's child (9 s on 2 busy cores) and bounds what a hang
    adds to the suite."""
    if test is None:
        return functools.partial(in_child, timeout=timeout, attempts=attempts)

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get(_CHILD):
            return test(*args, **kwargs)
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" (", 1)[0]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", node]
        env = {**os.environ, _CHILD: "1", "XLA_FLAGS": xla_flags(CHILD_CPU_DEVICES)}
        for _ in range(attempts):
            try:
                run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            if run.returncode:
                raise AssertionError(f"{node} failed in its child process:\n"
                                     f"{run.stdout[-4000:]}\n{run.stderr[-2000:]}")
            return
        pytest.fail(f"{node}: the interpreter hung in all {attempts} attempts "
                    f"({timeout:.0f} s each)")

    return wrapper
