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

MEASURED_RATES = {"gemm": 1.5e11, "fft": 6.7e9, "bandwidth": 2.4e10, "mix": 1.7e9,
                  "mix_small": 9.4e8}
"""The cost model's rates of one machine (a 2-core AMD EPYC Zen 4, float32, idle): the
rates ``machine_rates`` injects unless a test names others."""


@pytest.fixture(autouse=True)
def _threads_for_small_work(monkeypatch):
    monkeypatch.setattr(policy, "WORK_PER_THREAD", 1)


@pytest.fixture
def machine_rates(monkeypatch):
    """The calibration's rates (``calibration.rates``) replaced by given numbers, so that a
    choice ``auto`` makes from measured speeds is asserted from these, never from this
    machine's speed or load.  Yields ``inject(**rates)``, which sets rates over
    ``MEASURED_RATES`` (already injected) and drops the plans chosen from other rates."""
    from convmm._engines.cpu import calibration

    def inject(**rates):
        record = {**MEASURED_RATES, **rates}
        monkeypatch.setattr(calibration, "rates", lambda dtype, threads: dict(record))
        with policy._plans_lock:
            policy._plans.clear()

    inject()
    yield inject
    with policy._plans_lock:
        policy._plans.clear()


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
