"""convmm on JAX arrays, eagerly and under ``jax.jit``, against JAX's own convolution.

JAX's is ``jax.lax.conv_general_dilated`` with the reflect padding by ``jnp.pad``, under
``jit``; float32 at JAX's defaults, in one process (both run on JAX's own CPU backend);
medians of 15 calls in alternating rounds, after a first call that compiles.

    python tools/jax_timing.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

import convmm

rng = np.random.default_rng(0)
cases = [((8, 16, 32, 32), (32, 16, 3, 3), 1), ((8, 64, 28, 28), (64, 64, 3, 3), 2)]
for xs, ws, stride in cases:
    x = jnp.asarray(rng.standard_normal(xs), dtype=jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), dtype=jnp.float32)
    kw = dict(stride=stride, padding=1, padding_mode="reflect")
    eager = lambda: convmm.conv(x, w, **kw)
    jitted_f = jax.jit(lambda x, w: convmm.conv(x, w, **kw))
    jitted = lambda: jitted_f(x, w)
    lax_f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect"), w, (stride, stride), "VALID"))
    lax = lambda: lax_f(x, w)
    fns = dict(eager=eager, jit=jitted, lax=lax)
    for f in fns.values():
        f().block_until_ready()
    times = {k: [] for k in fns}
    for _ in range(15):
        for k, f in fns.items():
            s = time.perf_counter(); f().block_until_ready(); times[k].append(time.perf_counter() - s)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    err = float(jnp.max(jnp.abs(jitted() - lax())))
    print(f"x {xs} w {ws} stride {stride}: convmm eager {med['eager']:.2f} ms, convmm jit "
          f"{med['jit']:.2f} ms, lax.conv {med['lax']:.2f} ms (jit/lax {med['jit']/med['lax']:.2f}); max |Δ| {err:.1e}")
