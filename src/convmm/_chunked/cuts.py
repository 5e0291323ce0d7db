"""The cuts of a chunked convolution, along one axis at a time: pure arithmetic on chunk
sizes (no Dask), and the text ``explain`` prints of them."""

from __future__ import annotations



PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
             "symmetric": "symmetric", "circular": "wrap"}
"""convmm's padding modes by np.pad's (and ``dask.array.pad``'s) names."""


def forward_cut(chunks, output, stride, reach):
    """(output chunks, windows) along one axis of the forward map: output boundaries at
    ⌈b/s⌉ for the input's chunk boundaries b, and each output chunk's window
    ``(start, stop)`` of the padded axis."""
    edges = {0, output}
    position = 0
    for chunk in chunks[:-1]:
        position += chunk
        edges.add(min(output, -(-position // stride)))
    edges = sorted(edges)
    sizes = tuple(b - a for a, b in zip(edges, edges[1:]))
    windows = tuple((a * stride, (b - 1) * stride + reach + 1) for a, b in zip(edges, edges[1:]))
    return sizes, windows


def adjoint_cut(chunks, outputs, padded, before, stride, reach):
    """(padded chunks, windows, starts) along one axis of the transposed map: the padded
    axis cut at o·s + before for the outputs' chunk boundaries o (the result's chunk
    boundaries at o·s once the padding is folded away: as regular as the outputs');
    chunk ``[z₀, z₁)`` reads the outputs ``[⌈(z₀ − reach)/s⌉, ⌊(z₁ − 1)/s⌋ + 1)``
    (clipped; empty where none reach it)."""
    edges = {0, padded}
    position = 0
    for chunk in chunks[:-1]:
        position += chunk
        edges.add(min(padded, position * stride + before))
    edges = sorted(edges)
    windows = []
    for z0, z1 in zip(edges, edges[1:]):
        first = max(0, -(-(z0 - reach) // stride))
        last = min(outputs, (z1 - 1) // stride + 1)
        windows.append((first, max(first, last)))
    sizes = tuple(b - a for a, b in zip(edges, edges[1:]))
    return sizes, tuple(windows), tuple(edges[:-1])


def tree_sum(parts):
    """Σ parts in a fixed pairwise order: ((p₀ + p₁) + (p₂ + p₃)) + …"""
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


CHUNK_NOTATION = "a×n+r: n chunks of a, then one of r"


def chunk_text(chunks):
    """One axis's chunks: ``64×3`` for equal ones (the last may be shorter: ``64×2+10``)."""
    if len(chunks) == 1:
        return str(chunks[0])
    body, last = chunks[:-1], chunks[-1]
    if len(set(body)) == 1:
        text = f"{body[0]}×{len(body) + (last == body[0])}"
        return text if last == body[0] else f"{text}+{last}"
    return "(" + ", ".join(map(str, chunks)) + ")"


def shape_text(chunks):
    return "(" + ", ".join(chunk_text(c) for c in chunks) + ")"
