"""One ``xp`` fixture over every array namespace present; a test's id names its backend."""

import pytest

from helpers import backend_names, namespace


@pytest.fixture(params=backend_names())
def xp(request):
    return namespace(request.param)
