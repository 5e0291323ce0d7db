"""The suite's own machinery: the backend matrix and its budgets of seeds and cases."""

from types import SimpleNamespace

from helpers import BACKEND, BACKENDS, backend_names, within_budget


def _item(function="test_f", sweep=False, **params):
    indices = {name: value for name, value in params.items() if name == "seed"}
    ident = "-".join(str(value) for value in params.values())
    return SimpleNamespace(callspec=SimpleNamespace(params=params, indices=indices),
                           nodeid=f"tests/test_x.py::{function}[{ident}]",
                           get_closest_marker=lambda name: object() if sweep else None)


def _budget(backend):
    return 40 if backend.seeds is None else backend.seeds


def test_numpy_runs_every_seed_and_the_other_namespaces_their_budget():
    for backend in BACKENDS:
        items = [_item(xp=backend.name, seed=seed) for seed in range(40)]
        assert within_budget(items) == items[:_budget(backend)], backend
    assert BACKEND["numpy"].seeds is None and BACKEND["cupy"].seeds is None
    assert all(BACKEND[name].seeds for name in ("array_api_strict", "torch", "jax"))


def test_a_sweep_of_cases_runs_its_first_cases_on_each_budgeted_backend():
    for backend in BACKENDS:
        items = [_item(sweep=True, xp=backend.name, factor=factor, dtype=dtype)
                 for factor in range(1, 6) for dtype in ("float32", "float64")]
        other = [_item("test_g", sweep=True, xp=backend.name, factor=1)]
        assert within_budget(items + other) == items[:_budget(backend)] + other, backend


def test_tests_without_a_sweep_or_a_backend_always_run():
    plain = [_item(xp="torch", method=method) for method in ("auto", "im2col", "fft", "direct")]
    assert within_budget(plain) == plain                     # a grid, but not marked a sweep
    seeded = _item(seed=39)                                  # a seed sweep without xp
    assert within_budget([seeded]) == [seeded]
    lone = SimpleNamespace()                                 # not parametrized at all
    assert within_budget([lone]) == [lone]


def test_the_matrix_lists_numpy_first_and_only_what_is_present():
    names = backend_names()
    assert names[0] == "numpy" and set(names) <= {backend.name for backend in BACKENDS}
    assert all(BACKEND[name].available() for name in names)
