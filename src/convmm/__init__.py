"""convmm: convolution, transposed convolution and their gradients as matrix multiplication.

One implementation written against the Python array API standard runs on any
namespace that array-api-compat recognises (NumPy, CuPy, PyTorch, array_api_strict);
results come back in the input's namespace and on its device.
"""

from ._api import (
    ConvGrads,
    col2im,
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_backward,
    conv_output_shape,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    conv_transpose_backward,
    conv_transpose_output_shape,
    explain,
    im2col,
    resolve_padding,
)
from ._bilinear import bilinear_kernel, upsample_bilinear
from ._operator import ConvOperator, toeplitz
from . import reference

__version__ = "0.1.0"

__all__ = [
    "ConvGrads",
    "ConvOperator",
    "bilinear_kernel",
    "col2im",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_backward",
    "conv_output_shape",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose_backward",
    "conv_transpose_output_shape",
    "explain",
    "im2col",
    "reference",
    "resolve_padding",
    "toeplitz",
    "upsample_bilinear",
]
