"""Correct code as users write it: the type check (tests/test_docs.py) must pass it with
no error, so that convmm's hints never reject a call that runs."""

from __future__ import annotations

from typing import Literal

import numpy as np

import convmm

rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 4, 16, 16)), rng.standard_normal((8, 4, 3, 3))

# NumPy integers where ints go; keywords as PyTorch users pass them.
y = convmm.conv(x, w, stride=np.int64(1), padding=np.int64(1), groups=np.int64(1))
y2 = convmm.conv2d(x, w, padding="same", padding_mode="symmetric", method="auto")
t = convmm.conv_transpose(y, w, padding=[(1, 1), (1, 1)], method="zero_insertion")

# The gradients' fields used directly after asking for them.
grads = convmm.conv_backward(y, x, w, padding=1, needs=("input", "weight"))
shapes = (grads.input.shape, grads.weight.shape)
gi, gw, gb = convmm.conv_transpose_backward(t, y, w, padding=1)

# Plain arrays, a name held in an annotated variable.
mode: Literal["same"] = "same"
z = convmm.correlate(x[0, 0], w[0, 0], mode, boundary="reflect")
z2 = convmm.convolve(x[0, 0], w[0, 0])

op = convmm.ConvOperator(w, (4, 16, 16), padding=1)
v = op.matvec(np.ones(op.shape[1])) + op.T.matvec(np.ones(op.shape[0]))[:1]
norm: float = op.norm() + op.norm_bound(iterations=np.int64(2))
cols = convmm.im2col(x, 3, padding=1)
image = convmm.col2im(cols, (16, 16), (3, 3), padding=1)
up = convmm.upsample_bilinear(x, (2, 2))
size: tuple[int, ...] = convmm.conv_output_shape((16, 16), 3, stride=2)
plan: str = convmm.explain(convmm.conv, x, w)
previous = convmm.set_num_threads(np.int64(1))
convmm.set_num_threads(previous)
