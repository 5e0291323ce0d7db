"""JAX arrays: JAX's own differentiation and compilation through convmm.

The ``xp`` fixture runs every namespace test on JAX arrays as well (``helpers``); here,
``jax.vjp`` and ``jax.grad`` through ``conv`` and ``conv_transpose`` against convmm's own
``conv_backward`` and ``conv_transpose_backward``, and ``jax.jit`` against the eager call,
on random configurations (every padding form and mode, strides, dilations, groups, both
layouts, real and complex dtypes, and the methods that run on JAX arrays), each with x64 on
(float64 and complex128, as the other backends) and at JAX's default (x64 off: float32 and
complex64 only).  JAX compiles every operation anew for each shape, seconds per
configuration, so each sweep takes a few seeds.
"""

import subprocess
import sys

import numpy as np
import pytest

import convmm
from convmm._engines import capabilities
from helpers import (assert_close, make_conv_inputs, namespace, random_array, random_config,
                     random_transpose_case)

jax = pytest.importorskip("jax")
jnp = namespace("jax")            # x64 on: float64 and complex128 as the other backends
SEEDS = range(3)
METHODS = capabilities.methods("array API with fft")   # what runs on JAX arrays
WIDE = ("float32", "float64", "complex64", "complex128")
NARROW = ("float32", "complex64")


@pytest.fixture(params=[True, False], ids=["x64", "default"])
def dtypes(request):
    """The dtypes a test draws from, with JAX's x64 mode set to match for its duration:
    on, all four; off (JAX's default), the single-precision two."""
    jax.config.update("jax_enable_x64", request.param)
    yield WIDE if request.param else NARROW
    jax.config.update("jax_enable_x64", True)


def _jax(a):
    return None if a is None else jnp.asarray(a)


def _conj(a):
    """conj(a) for complex arrays.  ``jax.vjp`` gives Jᵀ·ct without conjugation; convmm's
    gradients are Cᴴ·g (PyTorch's convention), so Cᴴ·g = conj(Jᵀ·conj(g))."""
    return jnp.conj(a) if jnp.iscomplexobj(a) else a


@pytest.mark.parametrize("seed", SEEDS)
def test_vjp_through_conv_is_conv_backward(seed, dtypes):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=dtypes)
    x, w, b = make_conv_inputs(rng, cfg)
    method = str(rng.choice(METHODS))
    keywords = dict(padding_mode=cfg.padding_mode, method=method, **cfg.kwargs())
    x, w = _jax(x), _jax(w)
    b = _jax(b) if b is not None else jnp.zeros(cfg.out_channels, dtype=x.dtype)
    y, pullback = jax.vjp(lambda x, w, b: convmm.conv(x, w, b, **keywords), x, w, b)
    g = _jax(random_array(rng, y.shape, cfg.dtype))
    got = [_conj(a) for a in pullback(_conj(g))]
    want = convmm.conv_backward(g, x, w, **keywords)
    for have, expected in zip(got, (want.input, want.weight, want.bias)):
        assert isinstance(have, jax.Array)
        assert_close(have, expected, jnp, factor=4)


@pytest.mark.parametrize("seed", SEEDS)
def test_vjp_through_conv_transpose_is_conv_transpose_backward(seed, dtypes):
    rng = np.random.default_rng(seed)
    cfg, x, w, _, keywords = random_transpose_case(rng, dtypes)
    keywords["method"] = str(rng.choice(METHODS))
    x, w = _jax(x), _jax(w)
    y, pullback = jax.vjp(lambda x, w: convmm.conv_transpose(x, w, **keywords), x, w)
    g = _jax(random_array(rng, y.shape, cfg.dtype))
    got = [_conj(a) for a in pullback(_conj(g))]
    want = convmm.conv_transpose_backward(g, x, w, **keywords)
    assert_close(got[0], want.input, jnp, factor=4)
    assert_close(got[1], want.weight, jnp, factor=4)


def test_jax_grad_of_a_loss_is_conv_backward():
    """The README's use: ``jax.grad`` of a real loss through a strided, reflect-padded conv."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 3, 11, 9)))
    w = jnp.asarray(rng.standard_normal((4, 3, 3, 3)))
    b = jnp.asarray(rng.standard_normal(4))
    target = jnp.asarray(rng.standard_normal((2, 4, 6, 5)))
    keywords = dict(stride=2, padding=1, padding_mode="reflect")

    def loss(x, w, b):
        return 0.5 * jnp.sum((convmm.conv(x, w, b, **keywords) - target) ** 2)

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    want = convmm.conv_backward(convmm.conv(x, w, b, **keywords) - target, x, w, **keywords)
    for have, expected in zip(grads, want):
        assert_close(have, expected, jnp)


@pytest.mark.parametrize("seed", range(4))
def test_jit_gives_the_eager_result(seed, dtypes):
    rng = np.random.default_rng(100 + seed)
    cfg = random_config(rng, dtypes=tuple(d for d in dtypes if d.startswith("float")))
    x, w, b = (_jax(a) for a in make_conv_inputs(rng, cfg))
    keywords = dict(padding_mode=cfg.padding_mode, method=str(rng.choice(METHODS)),
                    **cfg.kwargs())
    eager = convmm.conv(x, w, b, **keywords)
    compiled = jax.jit(lambda x, w, b: convmm.conv(x, w, b, **keywords))(x, w, b)
    assert_close(compiled, eager, jnp)
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.abs(convmm.conv(x, w, **keywords)) ** 2),
                            argnums=(0, 1)))(x, w)
    y = convmm.conv(x, w, **keywords)
    want = convmm.conv_backward(2 * y, x, w, needs=("input", "weight"), **keywords)
    assert_close(grad[0], want.input, jnp, factor=4)
    assert_close(grad[1], want.weight, jnp, factor=4)


@pytest.mark.parametrize("boundary", ["zeros", "symmetric"])
def test_jit_of_correlate_takes_the_traced_path(boundary, dtypes):
    """Under ``jax.jit`` the inputs are tracers, whose finiteness cannot be read: correlate
    then keeps to the path that is right for any values (``validation.all_finite`` says
    None), and gives the eager result."""
    rng = np.random.default_rng(5)
    in1 = jnp.asarray(random_array(rng, (9, 8), dtypes[0]))
    in2 = jnp.asarray(random_array(rng, (3, 4), dtypes[0]))
    eager = convmm.correlate(in1, in2, mode="same", boundary=boundary)
    traced = jax.jit(lambda a, b: convmm.correlate(a, b, mode="same", boundary=boundary))
    assert_close(traced(in1, in2), eager, jnp)


def test_jax_at_its_default_float32():
    """Without x64 (JAX's default) float32 arrays stay float32 and agree with NumPy's, and
    no convmm call asks JAX for a float64 it lacks (JAX warns; the warnings are errors)."""
    code = """
import jax.numpy as jnp, numpy as np, convmm
op = convmm.ConvOperator(jnp.ones((3, 2, 3, 3)), (2, 8, 8), padding=1)
want = convmm.ConvOperator(np.ones((3, 2, 3, 3)), (2, 8, 8), padding=1)
assert abs(op.norm() - want.norm()) < 1e-4 * want.norm(), (op.norm(), want.norm())
assert want.norm() <= op.norm_bound() < 1.01 * want.norm_bound()
rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 3, 9, 9), np.float32), rng.standard_normal((4, 3, 3, 3), np.float32)
y = convmm.conv(jnp.asarray(x), jnp.asarray(w), stride=2, padding="same", padding_mode="circular")
t = convmm.conv_transpose(y, jnp.asarray(w), stride=2, padding="same", padding_mode="circular")
want = convmm.conv(x, w, stride=2, padding="same", padding_mode="circular")
back = convmm.conv_transpose(want, w, stride=2, padding="same", padding_mode="circular")
print(y.dtype, t.dtype, float(np.max(np.abs(np.asarray(y) - want))),
      float(np.max(np.abs(np.asarray(t) - back))))
"""
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    y_dtype, t_dtype, y_error, t_error = done.stdout.split()
    assert (y_dtype, t_dtype) == ("float32", "float32")
    assert float(y_error) < 1e-5 and float(t_error) < 1e-4
