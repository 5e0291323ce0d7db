"""One ``xp`` fixture over every array namespace present; a test's id names its backend.

Every test runs the CPU engine's work on as many worker threads as the thread
setting allows, however small: production plans give a thread only to work
worth one (``policy.WORK_PER_THREAD``), and the tests' small arrays would
otherwise never reach the threaded paths (tiles, partial sums in order).
``PRODUCTION_WORK_PER_THREAD`` is the real value, for the tests of that choice.
"""

import sys

import pytest

from convmm._engines import policy
from helpers import backend_names, namespace

PRODUCTION_WORK_PER_THREAD = policy.WORK_PER_THREAD


@pytest.fixture(autouse=True)
def _threads_for_small_work(monkeypatch):
    monkeypatch.setattr(policy, "WORK_PER_THREAD", 1)


@pytest.fixture(params=backend_names())
def xp(request):
    return namespace(request.param)


@pytest.fixture(autouse=True)
def _jax_compilations_freed():
    """JAX keeps every operation it compiled for each new shape, for the process's life: over
    the suite's random shapes, gigabytes.  Dropped after each test that imported JAX."""
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
