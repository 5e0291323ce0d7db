"""Per-call overhead: checks and plans cached per call signature, small work on the caller's
thread.  The cache must never let a call skip a check it would fail, nor hand one call
another's plan."""

import numpy as np
import pytest

import convmm
from conftest import PRODUCTION_WORK_PER_THREAD
from helpers import tune
from convmm._core import validation
from convmm._engines import policy, tunables

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 9, 9)).astype(np.float32)
W = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)


def test_a_repeated_call_is_checked_and_planned_once(monkeypatch):
    checked, planned = [], []
    real_checked, real_planned = validation._checked, policy._planned
    monkeypatch.setattr(validation, "_checked", lambda *a, **k: checked.append(1) or real_checked(*a, **k))
    monkeypatch.setattr(policy, "_planned", lambda *a, **k: planned.append(1) or real_planned(*a, **k))
    x = RNG.standard_normal((2, 4, 11, 9)).astype(np.float32)   # a shape no other test uses
    first = convmm.conv(x, W, padding=1)
    for _ in range(3):
        np.testing.assert_array_equal(convmm.conv(x, W, padding=1), first)
    assert len(checked) == 1 and len(planned) == 1
    convmm.conv(x, W, padding=2)                     # another keyword: checked anew
    convmm.conv(x[:1], W, padding=1)                 # another batch: checked anew
    assert len(checked) == 3 and len(planned) == 3


@pytest.mark.parametrize("keywords, error", [
    (dict(stride=1.0), TypeError), (dict(stride=True), TypeError), (dict(groups=True), TypeError),
    (dict(padding=(1.0, 1)), TypeError), (dict(padding_mode="reflects"), ValueError),
])
def test_a_cached_signature_never_lets_a_bad_keyword_through(keywords, error):
    good = {"stride": 1, "groups": 1, "padding": (1, 1), "padding_mode": "zeros"}
    convmm.conv(X, W, **{**good, **{k: good[k] for k in keywords}})
    with pytest.raises(error):
        convmm.conv(X, W, **{**good, **keywords})


def test_cached_checks_bind_each_calls_arrays():
    """Dtype promotion, the batch axis and bias are redone for every call."""
    expected = convmm.conv(X.astype(np.float64), W.astype(np.float64), padding=1)
    assert convmm.conv(X, W, padding=1).dtype == np.float32
    mixed = convmm.conv(X, W.astype(np.float64), padding=1)
    assert mixed.dtype == np.float64
    np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-5)
    for _ in range(2):
        single = convmm.conv(X[0], W, padding=1)
        assert single.shape == expected.shape[1:]
    bias = np.arange(6, dtype=np.float32)
    for _ in range(2):
        np.testing.assert_allclose(convmm.conv(X, W, bias, padding=1),
                                   expected + bias[:, None, None], rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="dtype"):
        convmm.conv(X.astype(np.int32), W, padding=1)
    with pytest.raises(ValueError, match="bias"):
        convmm.conv(X, W, np.ones(5, np.float32), padding=1)


def test_inputs_are_never_modified_through_the_cache():
    x, w = X.copy(), W.copy()
    for _ in range(2):
        convmm.conv(x, w, padding=1)
        convmm.conv_backward(np.ones((2, 6, 9, 9), np.float32), x, w, padding=1)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(w, W)


def test_the_cache_is_bounded():
    for size in range(5, 5 + validation.CALL_CACHE_SIZE + 10):
        convmm.conv(np.ones((1, 1, size), np.float32), np.ones((1, 1, 1), np.float32))
    assert len(validation._calls) <= validation.CALL_CACHE_SIZE
    assert len(policy._plans) <= policy.PLAN_CACHE_SIZE


def test_the_plan_cache_forgets_its_least_recent_plans(monkeypatch):
    monkeypatch.setattr(policy, "PLAN_CACHE_SIZE", 4)
    policy._plans.clear()
    for size in range(5, 12):
        convmm.conv(np.ones((1, 1, size), np.float32), np.ones((1, 1, 1), np.float32))
    assert len(policy._plans) == 4
    assert {key[0] for key in policy._plans.keys()} == {key[0] for key in policy._plans.keys()[-4:]}
    newest = policy._plans.keys()[-1]
    convmm.conv(np.ones((1, 1, 5), np.float32), np.ones((1, 1, 1), np.float32))
    assert len(policy._plans) == 4 and newest in policy._plans
    assert policy._plans.keys()[0] != newest


def test_small_work_runs_on_the_callers_thread(monkeypatch):
    tune(monkeypatch, work_per_thread=PRODUCTION_WORK_PER_THREAD)
    previous = convmm.set_num_threads(2)
    try:
        small = "on 1 thread(s)"
        assert small in convmm.explain(convmm.conv, X, W, padding=1)
        big = np.ones((8, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32)
        assert "on 2 thread(s)" in convmm.explain(convmm.conv, *big, padding=1)
    finally:
        convmm.set_num_threads(previous)


def test_workspaces_are_reused_aligned_and_bounded(monkeypatch):
    from convmm._engines.cpu import threads

    first = threads.workspace("test", (100, 3), np.float32)
    again = threads.workspace("test", (100, 3), np.float32)
    assert again.ctypes.data == first.ctypes.data and first.ctypes.data % 64 == 0
    smaller = threads.workspace("test", (7,), np.float64)      # a view of the same buffer
    assert smaller.shape == (7,) and smaller.dtype == np.float64
    monkeypatch.setattr(threads, "ARENA_BYTES", 4096)
    big = threads.workspace("huge", (10_000,), np.float32)      # over the bound: not kept
    assert big.shape == (10_000,) and "huge" not in threads._arena.buffers
    again = threads.workspace("huge", (10_000,), np.float32)    # a fresh one each time
    assert again is not big and "huge" not in threads._arena.buffers


def test_a_plan_is_made_for_the_thread_setting_its_key_holds():
    """The setting is read once per plan (a set_num_threads between two reads once stored
    a two-thread plan under a one-thread key)."""
    x = np.ones((8, 16, 40, 40), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    call = validation.prepare(x, w, None, None, transposed=False, stride=1, padding=1,
                              dilation=1, groups=1, padding_mode="zeros",
                              data_format="channels_first", method="tiled_blas")
    previous = convmm.set_num_threads(2)
    try:
        assert policy._planned(call, "weight_grad", 1, tunables.current()).threads == 1
        assert policy._planned(call, "weight_grad", 2, tunables.current()).threads == 2
    finally:
        convmm.set_num_threads(previous)


def test_a_stride_wider_than_the_image_keeps_the_workspace_small():
    x = np.ones((1, 16, 200, 3), np.float32)
    w = np.ones((16, 16, 1, 3), np.float32)
    plan = convmm.explain(convmm.conv, x, w, stride=(1, 10 ** 8))
    assert plan.startswith("conv: tiled_blas (implicit_gemm would pad each image")
    with pytest.raises(ValueError, match="method='auto' takes one"):
        convmm.conv(x, w, stride=(1, 10 ** 6), method="implicit_gemm")
    y = convmm.conv(x, w, stride=(1, 10 ** 6))
    np.testing.assert_array_equal(y, convmm.conv(x, w, stride=(1, 10 ** 6), method="im2col"))


def test_explain_checks_grad_output_as_the_backward_pass_does():
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        convmm.explain(convmm.conv_backward, np.ones((5, 7, 1, 1)), X, W, padding=1)
