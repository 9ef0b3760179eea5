"""One context manager: run tiny-matrix scipy/numpy work on a single BLAS thread.

Why: scipy's L-BFGS-B calls BLAS on 5-vectors every iteration. With OpenBLAS free to
use every core, its threads spin and yield around each call; on the 2-core CI machine
(and worse under pytest-xdist) that made each L-BFGS-B iteration ~10x slower (measured:
1 ms instead of 0.1 ms per `setulb` call). Limiting BLAS to one thread, only inside the
fits, removes that without touching the caller's global settings.
"""

from threadpoolctl import threadpool_limits


def single_thread_blas():
    return threadpool_limits(limits=1, user_api="blas")
