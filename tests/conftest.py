"""One ``xp`` fixture over every array namespace present; a test's id names its backend.

Every test runs the CPU engine's work on as many worker threads as the thread
setting allows, however small: production plans give a thread only to work
worth one (``policy.WORK_PER_THREAD``), and the tests' small arrays would
otherwise never reach the threaded paths (tiles, partial sums in order).
``PRODUCTION_WORK_PER_THREAD`` is the real value, for the tests of that choice.
"""

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
