"""One ``xp`` fixture over every array namespace present; a test's id names its backend.

Every test runs the CPU engine's work on as many worker threads as the thread
setting allows, however small: production plans give a thread only to work
worth one (``Tunables.work_per_thread``), and the tests' small arrays would
otherwise never reach the threaded paths (tiles, partial sums in order).
``PRODUCTION_WORK_PER_THREAD`` is the real value, for the tests of that choice.
"""

import os
import sys

import pytest

from convmm._engines import policy, tunables
from helpers import backend_names, namespace, tune, within_budget

PRODUCTION_WORK_PER_THREAD = tunables.TUNABLES.work_per_thread

MEASURED_RATES = {"gemm": 1.5e11, "fft": 6.7e9, "bandwidth": 2.4e10, "mix": 1.7e9,
                  "mix_small": 9.4e8}
"""The rates ``machine_rates`` injects unless a test names others: fixed numbers of the
order a 2-core AMD EPYC Zen 4 measures (float32, two threads; its GEMM there is nearer
9e10), so that the choices tests assert follow from them alone."""


def pytest_configure(config):
    """A calibration cache of the run's own (below), and in each pytest-xdist worker (one
    per core): BLAS and OpenMP (PyTorch's, loaded
    later, reads ``OMP_NUM_THREADS`` when imported) on one thread, as SciPy's conftest
    does, so that the workers' threads do not spin against each other; the engine on at
    least two, so that its threaded paths (tiles, partial sums in order) run in every
    worker, as in one process."""
    if "CONVMM_CACHE_DIR" not in os.environ:
        # Tests that run convmm in subprocesses calibrate there, while the suite keeps the
        # cores busy: into a folder of this run's own (removed at the end), never into the
        # user's cache.
        import tempfile

        config._convmm_cache_dir = tempfile.mkdtemp(prefix="convmm-tests-")
        os.environ["CONVMM_CACHE_DIR"] = config._convmm_cache_dir
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    import convmm
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config._convmm_blas_limit = threadpool_limits(limits=1, user_api="blas")
    convmm.set_num_threads(max(2, (os.cpu_count() or 1) // int(workers)))


def pytest_unconfigure(config):
    folder = getattr(config, "_convmm_cache_dir", None)
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        del os.environ["CONVMM_CACHE_DIR"]


@pytest.fixture(autouse=True)
def _threads_for_small_work(monkeypatch):
    tune(monkeypatch, work_per_thread=1)


@pytest.fixture(autouse=True)
def machine_rates(monkeypatch):
    """The calibration's record (``calibration.record``, which ``rates`` reads) replaced by
    given rates, so that a choice ``auto`` makes from measured speeds is asserted from these,
    never from this machine's speed or load: in every test (the calibration's own tests
    put the real one back and inject its measurements instead).  Yields ``inject(**rates)``, which sets rates
    over ``MEASURED_RATES`` (already injected) and drops the plans chosen from other rates."""
    from convmm._engines.cpu import calibration

    def inject(**rates):
        chosen = {**MEASURED_RATES, **rates}

        def record(dtype, threads, fresh=False):
            return {"rates": dict(chosen), "peak": 2 * chosen["gemm"] / threads,
                    "dtype": calibration._normalised(dtype).name, "threads": threads,
                    "plausible": True, "attempts": 1, "measured": "injected"}

        monkeypatch.setattr(calibration, "record", record)
        policy._plans.clear()

    inject()
    yield inject
    policy._plans.clear()


@pytest.fixture(params=backend_names())
def xp(request):
    """Each namespace of the backend matrix (``helpers.BACKENDS``) present here."""
    return namespace(request.param)


def pytest_collection_modifyitems(config, items):
    """Each backend's budget of seeds and cases (``helpers.within_budget``)."""
    kept = within_budget(items)
    if len(kept) < len(items):
        chosen = set(map(id, kept))
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in chosen])
        items[:] = kept


@pytest.fixture(autouse=True)
def _jax_compilations_freed():
    """JAX keeps every operation it compiled for each new shape, for the process's life: over
    the suite's random shapes, gigabytes.  Dropped after each test that imported JAX."""
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
