"""How many CPU threads the network uses: one rule for `glcic`, `glcic-eval`, the daemon and
the trainer.

torch starts one thread per core and keeps them spinning between operations. That is the
fastest choice on an idle machine, and a slow one on a busy one: when another process (a
training run, a second daemon, the host application itself) already occupies the cores, the
threads wait on each other. See `default_threads` for the rule and the measurements behind it.
"""

from __future__ import annotations

import os

#: Largest value accepted: more threads than this never helps a single completion.
MAX_THREADS = 256


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


#: The standard variable of OpenMP (which torch's CPU kernels use); a count set there is kept.
OMP_VARIABLE = "OMP_NUM_THREADS"


def _from_environment() -> int | None:
    try:
        value = int(os.environ.get(OMP_VARIABLE, ""))
    except ValueError:
        return None
    return value if 1 <= value <= MAX_THREADS else None


def default_threads() -> int:
    """The thread count used when the user names none: OMP_NUM_THREADS if it is set (the user
    already chose), else all usable cores but one, at least one.

    Why not torch's own default (every core): the network rarely has the machine to itself.
    Krita or GIMP runs beside the daemon, and a training run or a second job may hold the
    cores. torch's threads spin while they wait for each other, so one thread too many costs far
    more than one too few. Measured with benchmarks/threads.py (a 512x512 completion) on a
    2-core AMD EPYC while a training run held both cores (load average 6-15): one thread took
    a median 1.6-3.5 s, two threads 2.9-4.1 s; one thread was faster in 4 of 5 alternating
    pairs, by up to 2.3x, and 5 % slower in the fifth. Leaving one core free gives one thread
    on such a machine, and nearly all of a bigger machine's cores, where an idle machine's
    speed-up is worth having. OMP_NUM_THREADS, when set, is the user's choice and is kept.
    `--threads` overrides it.
    """
    chosen = _from_environment()
    return chosen if chosen is not None else max(1, usable_cores() - 1)


def default_threads_rule() -> str:
    """The default in words, for help texts: the rule and what it gives on this machine."""
    if _from_environment() is not None:
        return f"{default_threads()}, from {OMP_VARIABLE}"
    return f"all cores but one, at least one: {default_threads()} here"


def set_threads(threads: int | None) -> int:
    """Make torch use `threads` threads (None: `default_threads()`); returns the count set."""
    import torch

    count = default_threads() if threads is None else threads
    if not 1 <= count <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {count}")
    torch.set_num_threads(count)
    return count
