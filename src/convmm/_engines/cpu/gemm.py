"""Numba GEMM: packed panels, the register-blocked micro-kernel, and implicit-GEMM convolution.

The classic GotoBLAS / BLIS loop nest around ``microkernel.microkernel``
(an MR×NR tile of C held in registers): for each NC-wide column block of C,
each KC-deep slice of the inner dimension is packed into NR-wide panels of B
(``bp[panel, p, j]``, kept in L2), and for each MC-high row block the matching
MR-high panels of A (``ap[panel, p, i]``, L1-sized) are packed; the macro-kernel
then walks the tiles.  Packing pads short panels with zeros, so the
micro-kernel never branches, and edge tiles are written through a small tile
buffer.

The implicit-GEMM convolutions never build the patch matrix.  The forward map
pads each image once into a channels-last copy and reads its A operand in place
(``microkernel_padded``: MR output positions of one row × the channels of one
tap, tap after tap), with the weight packed once into NR-wide panels:

    Y_n[l, o] = Σ_t Σ_c X̃_n[start(l) + offset(t), c] · W[t·C_g + c, o]

The weight gradient is the packed nest with its A operand packed straight from
the image through the im2col table (``index_tables.gather_index``):

    ΔW_g[k, o] += Σ_l P_n[k, l]·G_n[l, o]

Every kernel is serial and releases the GIL: ``engine`` runs them on worker
threads over disjoint column ranges, so no two threads write the same output.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from .kernels import REDUCTION_DEPTH, pad_plane, widen_plane
from .microkernel import MR, NR, microkernel, microkernel_padded

def _cache_bytes(level, fallback):
    """The size of CPU 0's level-``level`` data (or unified) cache from Linux's sysfs, or
    ``fallback`` where it says nothing (another OS, a VM that hides it)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(root)):
            def read(name):
                with open(os.path.join(root, index, name), encoding="ascii") as f:
                    return f.read().strip()
            if index.startswith("index") and read("level") == str(level) and \
                    read("type") in ("Data", "Unified"):
                text = read("size")
                return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (OSError, ValueError):
        pass
    return fallback


def blocking(l1, l2, itemsize=4, mr=MR, nr=NR):
    """(KC, MC, NC) of the packed GEMM for data caches of ``l1`` and ``l2`` bytes and an
    ``mr`` × ``nr`` register tile (this machine's, ``microkernel.TILE``).

    KC: a KC×NR panel of B stays in three quarters of L1 while the MR-row panels of
    A stream past it; MC: the MC×KC block of A takes a tenth of L2; NC: the KC×NC
    block of B fills L2.  Multiples of 64, MR and NR.  Measured here (48 KiB L1, 1
    MiB L2: 256, 96, 1024) these are the best of the blockings tried by hand;
    (256, 128, 512) was 15 % slower at 2048³.
    """
    kc = max(64, min(512, int(0.75 * l1) // (nr * itemsize) // 64 * 64))
    mc = max(mr, min(512, int(0.1 * l2) // (kc * itemsize) // mr * mr))
    nc = max(nr, min(4096, l2 // (kc * itemsize) // nr * nr))
    return kc, mc, nc


# Chosen from this machine's caches when the engine first loads (Numba compiles them
# in as constants; its on-disk cache is keyed by the CPU model and its features).
# ``_CONVMM_GEMM_CACHES`` ("L1,L2" in bytes) stands in for the machine's caches: for
# the tests, which run it with a Numba cache directory of their own.
_caches = os.environ.get("_CONVMM_GEMM_CACHES")
KC, MC, NC = (blocking(*map(int, _caches.split(","))) if _caches else
              blocking(_cache_bytes(1, 32 << 10), _cache_bytes(2, 1 << 20)))



@njit(nogil=True, cache=True)
def _pack_rows(a, i0, m, p0, kc, packed):
    """packed[panel, p, i] = a[i0 + panel·w + i, p0 + p], zero past row i0 + m; w = packed.shape[2].

    Packs A's MR-row panels, or Bᵀ's NR-column panels from the rows of b.
    """
    width = packed.shape[2]
    for panel in range(-(-m // width)):
        for i in range(width):
            r = panel * width + i
            if r < m:
                source = a[i0 + r, p0:p0 + kc]
                for p in range(kc):
                    packed[panel, p, i] = source[p]
            else:
                for p in range(kc):
                    packed[panel, p, i] = 0


@njit(nogil=True, cache=True)
def _pack_b(b, p0, kc, j0, nc, bp):
    """bp[panel, p, j] = b[p0 + p, j0 + panel·NR + j], zero past column j0 + nc."""
    for panel in range(-(-nc // NR)):
        j = j0 + panel * NR
        width = min(NR, j0 + nc - j)
        for p in range(kc):
            source = b[p0 + p, j:j + width]
            target = bp[panel, p]
            for q in range(width):
                target[q] = source[q]
            for q in range(width, NR):
                target[q] = 0


@njit(nogil=True, cache=True)
def _macro(ap, bp, c, i0, mc, j0, nc, kc, first, tile):
    """c[i0:i0+mc, j0:j0+nc] (=, or += unless first) ap · bp, tile by tile."""
    for jp in range(-(-nc // NR)):
        j = j0 + jp * NR
        width = min(NR, j0 + nc - j)
        for ip in range(-(-mc // MR)):
            i = i0 + ip * MR
            height = min(MR, i0 + mc - i)
            microkernel(kc, ap[ip], bp[jp], tile)
            for r in range(height):
                target = c[i + r, j:j + width]
                source = tile[r]
                if first:
                    for q in range(width):
                        target[q] = source[q]
                else:
                    for q in range(width):
                        target[q] += source[q]


@njit(nogil=True, cache=True)
def gemm(a, b, c, j0, j1):
    """c[:, j0:j1] = a · b[:, j0:j1] for a (M, K), b (K, N), c (M, N); K ≥ 1."""
    m, k = a.shape
    ap = np.empty((MC // MR, KC, MR), a.dtype)
    bp = np.empty((NC // NR, KC, NR), a.dtype)
    tile = np.empty((MR, NR), a.dtype)
    for jc in range(j0, j1, NC):
        nc = min(NC, j1 - jc)
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            _pack_b(b, pc, kc, jc, nc, bp)
            for ic in range(0, m, MC):
                mc = min(MC, m - ic)
                _pack_rows(a, ic, mc, pc, kc, ap)
                _macro(ap, bp, c, ic, mc, jc, nc, kc, pc == 0, tile)


# --------------------------------------------------------------------------- weight gradient
#   ΔW_g[k, o] += Σ_l P_n[k, l]·G_n[l, o]: the inner dimension is the position l,
#   so both operands are packed along it: A from the image (the patch rows),
#   B from the output gradient; C is a worker's partial sum, (C_g·T, O_g) per group.


@njit(nogil=True, cache=True)
def _pack_patch_rows_a(x, index, first_channel, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = P[i0 + panel·MR + i, p0 + p] with P[c·T + t, l] = x[first_channel + c, index[t, l]].

    x: one image (C, P); the table's sentinel P reads a zero.
    """
    taps = index.shape[0]
    pixels = x.shape[1]
    for panel in range(-(-mc // MR)):
        for i in range(MR):
            r = panel * MR + i
            if r < mc:
                k = i0 + r
                c = k // taps
                channel = x[first_channel + c]
                source = index[k - c * taps, p0:p0 + kc]
                for p in range(kc):
                    s = source[p]
                    ap[panel, p, i] = channel[s] if s < pixels else 0
            else:
                for p in range(kc):
                    ap[panel, p, i] = 0


@njit(nogil=True, cache=True)
def _pack_patch_columns_a(x, index, first_channel, channels, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = P[p0 + p, i0 + panel·MR + i] with P[l, t·C_g + c] = x[index[t, l], first_channel + c].

    x: one image (P, C); the table's sentinel P reads a zero; ``channels`` is C_g.
    """
    pixels = x.shape[0]
    for panel in range(-(-mc // MR)):
        for p in range(kc):
            l = p0 + p
            for i in range(MR):
                r = panel * MR + i
                if r < mc:
                    k = i0 + r
                    t = k // channels
                    s = index[t, l]
                    ap[panel, p, i] = x[s, first_channel + k - t * channels] if s < pixels else 0
                else:
                    ap[panel, p, i] = 0


@njit(nogil=True, cache=True)
def weight_grad_channels_first(x, index, grads, groups, dw, l0, l1):
    """dw[g, k, o] += Σ_{l0 ≤ l < l1} P[k, l]·G[g·O_g + o, l], every group; one image.

    x (C_in, P); grads (C_out, L); dw (groups, C_g·T, O_g), a worker's partial sum.
    """
    _, k, per_group = dw.shape
    in_per_group = k // index.shape[0]
    ap = np.empty((MC // MR, KC, MR), dw.dtype)
    bp = np.empty((-(-min(NC, per_group) // NR), KC, NR), dw.dtype)
    tile = np.empty((MR, NR), dw.dtype)
    for g in range(groups):
        gg = grads[g * per_group:(g + 1) * per_group]
        for jc in range(0, per_group, NC):
            nc = min(NC, per_group - jc)
            for pc in range(l0, l1, KC):
                kc = min(KC, l1 - pc)
                _pack_rows(gg, jc, nc, pc, kc, bp)
                for ic in range(0, k, MC):
                    mc = min(MC, k - ic)
                    _pack_patch_rows_a(x, index, g * in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, dw[g], ic, mc, jc, nc, kc, False, tile)


@njit(nogil=True, cache=True)
def weight_grad_channels_last(x, index, grads, groups, dw, l0, l1):
    """dw[g, k, o] += Σ_{l0 ≤ l < l1} P[l, k]·G[l, g·O_g + o], every group; one image.

    x (P, C_in); grads (L, C_out); dw (groups, T·C_g, O_g), a worker's partial sum.
    """
    _, k, per_group = dw.shape
    in_per_group = k // index.shape[0]
    ap = np.empty((MC // MR, KC, MR), dw.dtype)
    bp = np.empty((-(-min(NC, per_group) // NR), KC, NR), dw.dtype)
    tile = np.empty((MR, NR), dw.dtype)
    for g in range(groups):
        gg = grads[:, g * per_group:(g + 1) * per_group]
        for jc in range(0, per_group, NC):
            nc = min(NC, per_group - jc)
            for pc in range(l0, l1, KC):
                kc = min(KC, l1 - pc)
                _pack_b(gg, pc, kc, jc, nc, bp)
                for ic in range(0, k, MC):
                    mc = min(MC, k - ic)
                    _pack_patch_columns_a(x, index, g * in_per_group, in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, dw[g], ic, mc, jc, nc, kc, False, tile)


@njit(nogil=True, cache=True)
def _pack_wide_rows_a(padded, offsets, first_channel, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = padded[first_channel + c, p0 + p + offsets[t]] for patch row
    k = i0 + panel·MR + i = c·T + t: each row a contiguous run of the padded plane."""
    taps = offsets.shape[0]
    for panel in range(-(-mc // MR)):
        for i in range(MR):
            r = panel * MR + i
            if r < mc:
                k = i0 + r
                c = k // taps
                start = p0 + offsets[k - c * taps]
                source = padded[first_channel + c, start:start + kc]
                for p in range(kc):
                    ap[panel, p, i] = source[p]
            else:
                for p in range(kc):
                    ap[panel, p, i] = 0


@njit(nogil=True, cache=True)
def weight_grad_wide(padded, offsets, grads, groups, dw, q0, q1):
    """dw[g, c·T + t, o] += Σ_{q0 ≤ q < q1} x̃[g·C_g + c, q + offsets[t]]·grads[g·O_g + o, q].

    A stride-1 weight gradient on the padded grid of one image (``index_tables.wide_table``):
    padded (C_in, P̃) its padded planes; grads (C_out, span) the output gradient at
    every window start q of the grid, zero where q starts no output.  The patch
    operand is packed from contiguous runs of the planes (no index table, no
    branch per sample), which made the gather-packing the cost of the whole GEMM.
    dw (groups, C_g·T, O_g), a worker's partial sum.
    """
    _, k, per_group = dw.shape
    ap = np.empty((MC // MR, KC, MR), dw.dtype)
    bp = np.empty((-(-min(NC, per_group) // NR), KC, NR), dw.dtype)
    tile = np.empty((MR, NR), dw.dtype)
    in_per_group = k // offsets.shape[0]
    for g in range(groups):
        gg = grads[g * per_group:(g + 1) * per_group]
        for jc in range(0, per_group, NC):
            nc = min(NC, per_group - jc)
            for pc in range(q0, q1, KC):
                kc = min(KC, q1 - pc)
                _pack_rows(gg, jc, nc, pc, kc, bp)
                for ic in range(0, k, MC):
                    mc = min(MC, k - ic)
                    _pack_wide_rows_a(padded, offsets, g * in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, dw[g], ic, mc, jc, nc, kc, False, tile)


@njit(nogil=True, cache=True)
def widen(x, source, grads, crop, width, padded, wide):
    """One image onto the padded grid: padded[c] = x̃_c (``source`` from ``padded_source``),
    wide[o] = grads[o] at its window starts (``crop``, rows of ``width``), zero elsewhere."""
    for c in range(x.shape[0]):
        pad_plane(x[c], source, padded[c])
    for o in range(grads.shape[0]):
        widen_plane(grads[o], crop, width, wide[o])


# --------------------------------------------------------------------------- in-place patches
#   The forward convolution with no packing of patches at all: each image is padded
#   once into a channels-last copy, and ``microkernel_padded`` reads its A operand
#   (MR output positions × the channels of one tap) straight from that copy, tap by
#   tap; only the weight is packed, once per call, into NR-wide panels.


@njit(nogil=True, cache=True)
def pad_channels_last(x, source, channels_first, padded):
    """padded[q, c] = x̃[c, source[q]], zero where source[q] = P, for q < Q = len(source).

    x: one image, (C, P) if ``channels_first`` else (P, C); padded (Q, C).
    """
    used = source.shape[0]
    if channels_first:
        channels, pixels = x.shape
        # A transpose: 16 channel planes read side by side, 64-byte pieces of rows written.
        for c0 in range(0, channels, 16):
            block = x[c0:c0 + 16]
            count = block.shape[0]
            for q in range(used):
                s = source[q]
                target = padded[q, c0:c0 + count]
                if s < pixels:
                    for c in range(count):
                        target[c] = block[c, s]
                else:
                    for c in range(count):
                        target[c] = 0
    else:
        pixels, channels = x.shape
        for q in range(used):
            s = source[q]
            target = padded[q]
            if s < pixels:
                row = x[s]
                for c in range(channels):
                    target[c] = row[c]
            else:
                for c in range(channels):
                    target[c] = 0


@njit(nogil=True, cache=True)
def _reduction_blocks(taps, channels, depth):
    """(t0, t1, k0, k1) blocks of the reduction over taps × channels, each about ``depth``
    products deep: several whole taps where a tap has few channels, else one tap's
    channels in pieces.  Each block's sum is a partial sum of its own (see conv_padded)."""
    if channels >= depth:
        pieces = -(-channels // depth)
        blocks = np.empty((taps * pieces, 4), np.int64)
        for t in range(taps):
            for i in range(pieces):
                blocks[t * pieces + i] = (t, t + 1, i * depth, min(channels, (i + 1) * depth))
        return blocks
    per_block = max(1, depth // channels)
    count = -(-taps // per_block)
    blocks = np.empty((count, 4), np.int64)
    for i in range(count):
        blocks[i] = (i * per_block, min(taps, (i + 1) * per_block), 0, channels)
    return blocks


@njit(nogil=True, cache=True)
def conv_padded(padded, image_rows, row_start, offsets, step, width, w, groups, channels_last,
                r0, r1, zero, y):
    """Output rows r0 ≤ r < r1 of ``y.shape[0]`` images from their padded channels-last copies.

    padded (B·Q + slack, C_in): image b's copy starts at row b·Q (Q = ``image_rows``);
    w (G, ⌈O_g/NR⌉, T·C_g, NR), the weight in zero-padded panels (``engine._weight_panels``);
    y (B, C_out, L), or (B, L, C_out) if ``channels_last``; output rows of ``width``
    samples.  Each weight panel serves every row of every image before the next is read
    (blocking it over channels to keep a piece in L1 measured slower: the tile's
    partial sums then go through memory).

    The reduction over T·C_g products runs in blocks of about ``REDUCTION_DEPTH``
    (``_reduction_blocks``): the micro-kernel sums one block in registers and the
    blocks' sums are added in order, as BLAS adds its k-blocks, so that a float32
    error grows with the block depth plus the number of blocks, not with T·C_g.
    """
    _, panels, k, _ = w.shape
    taps = offsets.shape[0]
    in_per_group = k // taps
    per_group = (y.shape[2] if channels_last else y.shape[1]) // groups
    blocks = _reduction_blocks(taps, in_per_group, REDUCTION_DEPTH)
    tile = np.empty((MR, NR), w.dtype)
    for g in range(groups):
        for jp in range(panels):
            panel = w[g, jp]
            o0 = g * per_group + jp * NR
            used = min(NR, per_group - jp * NR)
            for b in range(y.shape[0]):
                out = y[b]
                for r in range(r0, r1):
                    for j0 in range(0, width, MR):
                        height = min(MR, width - j0)
                        base = b * image_rows + row_start[r] + j0 * step
                        for block in range(blocks.shape[0]):
                            t0, t1, k0, k1 = blocks[block]
                            microkernel_padded(padded, base, step, offsets, g * in_per_group,
                                               in_per_group, panel, zero, t0, t1, k0, k1,
                                               block > 0, tile)
                        l0 = r * width + j0
                        if channels_last:
                            for i in range(height):
                                target = out[l0 + i, o0:o0 + used]
                                source = tile[i]
                                for q in range(used):
                                    target[q] = source[q]
                        else:
                            for q in range(used):
                                target = out[o0 + q, l0:l0 + height]
                                for i in range(height):
                                    target[i] = tile[i, q]
