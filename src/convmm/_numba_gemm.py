"""Numba GEMM: packed panels, the register-blocked micro-kernel, and implicit-GEMM convolution.

The classic GotoBLAS / BLIS loop nest around ``_microkernel.microkernel``
(an MR×NR tile of C held in registers): for each NC-wide column block of C,
each KC-deep slice of the inner dimension is packed into NR-wide panels of B
(``bp[panel, p, j]``, kept in L2), and for each MC-high row block the matching
MR-high panels of A (``ap[panel, p, i]``, L1-sized) are packed; the macro-kernel
then walks the tiles.  Packing pads short panels with zeros, so the
micro-kernel never branches, and edge tiles are written through a small tile
buffer.

The implicit-GEMM convolutions are the same nest with one operand packed
straight from the image through the im2col plan (``_plan.gather_index``): the
patch matrix exists only as the packed panel being multiplied.

    channels_first   Y_n[o, l] = W_g[o, k] · P_n[k, l],  k = c·T + t  (B packed from x)
    channels_last    Y_n[l, o] = P_n[l, k] · W_g[k, o],  k = t·C_g + c  (A packed from x)

Every kernel is serial and releases the GIL: ``_engine`` runs them on worker
threads over disjoint column ranges, so no two threads write the same output.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._microkernel import MR, NR, microkernel

KC = 256    # the inner-dimension slice: an A panel (KC×MR) stays in L1
MC = 96     # rows of C per packed A block (MR·12)
NC = 1024   # columns of C per packed B block (KC×NC in L2)


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


@njit(nogil=True, cache=True)
def _pack_patches_b(x, plan, first_channel, p0, kc, j0, nc, bp):
    """bp[panel, p, j] = P[p0 + p, j0 + panel·NR + j] with P[c·T + t, l] = x[first_channel + c, plan[t, l]].

    x: one image (C, P); the plan's sentinel P reads a zero.
    """
    taps = plan.shape[0]
    pixels = x.shape[1]
    for p in range(kc):
        k = p0 + p
        c = k // taps
        channel = x[first_channel + c]
        rows = plan[k - c * taps]
        for panel in range(-(-nc // NR)):
            j = j0 + panel * NR
            width = min(NR, j0 + nc - j)
            source = rows[j:j + width]
            target = bp[panel, p]
            for q in range(width):
                s = source[q]
                target[q] = channel[s] if s < pixels else 0
            for q in range(width, NR):
                target[q] = 0


@njit(nogil=True, cache=True)
def conv_channels_first(x, plan, w, groups, y, l0, l1):
    """y[o, l] = Σ_k W[o, k]·P[k, l] for l0 ≤ l < l1, every group; one image.

    x (C_in, P); w (C_out, C_g·T); y (C_out, L).
    """
    out_channels, k = w.shape
    per_group = out_channels // groups
    in_per_group = k // plan.shape[0]
    ap = np.empty((MC // MR, KC, MR), w.dtype)
    bp = np.empty((NC // NR, KC, NR), w.dtype)
    tile = np.empty((MR, NR), w.dtype)
    for g in range(groups):
        wg = w[g * per_group:(g + 1) * per_group]
        yg = y[g * per_group:(g + 1) * per_group]
        for jc in range(l0, l1, NC):
            nc = min(NC, l1 - jc)
            for pc in range(0, k, KC):
                kc = min(KC, k - pc)
                _pack_patches_b(x, plan, g * in_per_group, pc, kc, jc, nc, bp)
                for ic in range(0, per_group, MC):
                    mc = min(MC, per_group - ic)
                    _pack_rows(wg, ic, mc, pc, kc, ap)
                    _macro(ap, bp, yg, ic, mc, jc, nc, kc, pc == 0, tile)


@njit(nogil=True, cache=True)
def _pack_patches_a(x, plan, first_channel, channels, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = P[i0 + panel·MR + i, p0 + p] with P[l, t·C_g + c] = x[plan[t, l], first_channel + c].

    x: one image (P, C); the plan's sentinel P reads a zero; ``channels`` is C_g.
    """
    pixels = x.shape[0]
    for panel in range(-(-mc // MR)):
        for i in range(MR):
            l = i0 + panel * MR + i
            if l - i0 >= mc:
                for p in range(kc):
                    ap[panel, p, i] = 0
                continue
            for p in range(kc):
                k = p0 + p
                t = k // channels
                source = plan[t, l]
                ap[panel, p, i] = x[source, first_channel + k - t * channels] if source < pixels else 0


@njit(nogil=True, cache=True)
def conv_channels_last(x, plan, w, groups, y, l0, l1):
    """y[l, o] = Σ_k P[l, k]·W[k, o] for l0 ≤ l < l1, every group; one image.

    x (P, C_in); w (groups, T·C_g, O_g); y (L, C_out).
    """
    _, k, per_group = w.shape
    in_per_group = k // plan.shape[0]
    ap = np.empty((MC // MR, KC, MR), w.dtype)
    bp = np.empty((NC // NR, KC, NR), w.dtype)
    tile = np.empty((MR, NR), w.dtype)
    for g in range(groups):
        yg = y[:, g * per_group:(g + 1) * per_group]
        for jc in range(0, per_group, NC):
            nc = min(NC, per_group - jc)
            for pc in range(0, k, KC):
                kc = min(KC, k - pc)
                _pack_b(w[g], pc, kc, jc, nc, bp)
                for ic in range(l0, l1, MC):
                    mc = min(MC, l1 - ic)
                    _pack_patches_a(x, plan, g * in_per_group, in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, yg, ic, mc, jc, nc, kc, pc == 0, tile)


# --------------------------------------------------------------------------- weight gradient
#   ΔW_g[k, o] += Σ_l P_n[k, l]·G_n[l, o]: the inner dimension is the position l,
#   so both operands are packed along it: A from the image (the patch rows),
#   B from the output gradient; C is a worker's partial sum, (C_g·T, O_g) per group.


@njit(nogil=True, cache=True)
def _pack_patch_rows_a(x, plan, first_channel, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = P[i0 + panel·MR + i, p0 + p] with P[c·T + t, l] = x[first_channel + c, plan[t, l]].

    x: one image (C, P); the plan's sentinel P reads a zero.
    """
    taps = plan.shape[0]
    pixels = x.shape[1]
    for panel in range(-(-mc // MR)):
        for i in range(MR):
            r = panel * MR + i
            if r < mc:
                k = i0 + r
                c = k // taps
                channel = x[first_channel + c]
                source = plan[k - c * taps, p0:p0 + kc]
                for p in range(kc):
                    s = source[p]
                    ap[panel, p, i] = channel[s] if s < pixels else 0
            else:
                for p in range(kc):
                    ap[panel, p, i] = 0


@njit(nogil=True, cache=True)
def _pack_patch_columns_a(x, plan, first_channel, channels, i0, mc, p0, kc, ap):
    """ap[panel, p, i] = P[p0 + p, i0 + panel·MR + i] with P[l, t·C_g + c] = x[plan[t, l], first_channel + c].

    x: one image (P, C); the plan's sentinel P reads a zero; ``channels`` is C_g.
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
                    s = plan[t, l]
                    ap[panel, p, i] = x[s, first_channel + k - t * channels] if s < pixels else 0
                else:
                    ap[panel, p, i] = 0


@njit(nogil=True, cache=True)
def weight_grad_channels_first(x, plan, grads, groups, dw, l0, l1):
    """dw[g, k, o] += Σ_{l0 ≤ l < l1} P[k, l]·G[g·O_g + o, l], every group; one image.

    x (C_in, P); grads (C_out, L); dw (groups, C_g·T, O_g), a worker's partial sum.
    """
    _, k, per_group = dw.shape
    in_per_group = k // plan.shape[0]
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
                    _pack_patch_rows_a(x, plan, g * in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, dw[g], ic, mc, jc, nc, kc, False, tile)


@njit(nogil=True, cache=True)
def weight_grad_channels_last(x, plan, grads, groups, dw, l0, l1):
    """dw[g, k, o] += Σ_{l0 ≤ l < l1} P[l, k]·G[l, g·O_g + o], every group; one image.

    x (P, C_in); grads (L, C_out); dw (groups, T·C_g, O_g), a worker's partial sum.
    """
    _, k, per_group = dw.shape
    in_per_group = k // plan.shape[0]
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
                    _pack_patch_columns_a(x, plan, g * in_per_group, in_per_group, ic, mc, pc, kc, ap)
                    _macro(ap, bp, dw[g], ic, mc, jc, nc, kc, False, tile)
