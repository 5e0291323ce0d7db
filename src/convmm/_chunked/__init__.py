"""Convolutions of Dask arrays: every block run by convmm's own NumPy or CuPy engine.

A convolution is cut along the grid of the Dask array it is given (the data: x,
or grad_output), and nothing is computed twice or lost:

batch axis
    Blockwise: each batch chunk is convolved alone.
spatial axes
    The whole array is padded first (``dask.array.pad``, np.pad's modes for
    convmm's: constant, reflect, edge, symmetric, wrap), so that every padding
    mode reads across the global edges exactly as on one array.  The output's
    chunks along an axis follow the input's: output ``o`` goes with the input
    chunk that holds sample ``o·s``, so an input chunk boundary ``b`` becomes the
    output boundary ⌈b/s⌉ (input chunks of a multiple of the stride give output
    chunks of that multiple, as regular as the input's).  Output chunk
    ``[o₀, o₁)`` reads the padded window ``[o₀·s, (o₁ − 1)·s + d·(K − 1) + 1)``:
    its chunk and a halo of the kernel's reach d·(K − 1) (less where the stride
    skips samples).  The windows are cut from the padded array and rechunked to
    one chunk each, so a chunk smaller than its halo, or misaligned with the
    stride, costs a rechunk and never a wrong shape.  Each window is convolved
    with ``padding=0``: a "valid" convolution of exactly the block's outputs.
input channels (the contraction)
    With ``groups == 1`` each input-channel chunk gives a partial convolution
    (the weight's matching slice), and the partials are summed in a fixed
    pairwise tree.  With groups the channel axis is rechunked to one chunk.
transposed maps
    The transpose (``conv_transpose``, the input gradient of ``conv``) is
    computed onto the padded grid, cut at o·s + before for the chunk boundaries o
    of its input, each chunk ``[z₀, z₁)`` of it from the outputs that reach it, and
    the padding's adjoint then folds the padded samples back onto the samples they
    copy (``lowering.pad_adjoint``'s order): the exact adjoint, for every padding mode.
weight gradients
    One partial gradient per (batch, spatial) block, summed by Dask's tree
    reduction (a fixed order: the same bits on every run).

A block runs convmm's maps (``_engines.dispatch``) on NumPy or CuPy chunks, with the
engine's threads: in a ``dask.distributed`` worker the block's convmm thread
count is the worker's ``nthreads`` (tasks running side by side share those
threads' slots, so a worker never computes on more), elsewhere convmm's own
setting (``convmm.set_num_threads``).

The wing's rooms: ``cuts`` (the arithmetic of the cuts, pure: no Dask), ``arrays`` (Dask
arrays as the checks see them: stand-ins, one namespace), ``graph`` (the graph layers:
windows, the padding's adjoint), ``maps`` (the three maps block by block, and the
executor interface ``_api`` composes the public functions over) and ``explain``.
"""

from .arrays import is_dask

__all__ = ["is_dask"]
