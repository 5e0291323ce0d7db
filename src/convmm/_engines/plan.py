"""The plan of one map of a convolution call: a pure value, and its text.

A ``ConvPlan`` records every choice made for one of a call's three maps (forward,
adjoint, weight gradient): the method, the engine's tiles, threads and workspace, the
kernel that runs, and for the transform methods their blocks.  ``policy.plan`` makes
it; the engines read it and decide nothing more; ``describe`` is what
``convmm.explain`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core.fft import FFTBlocks

OPERATIONS = ("forward", "adjoint", "weight_grad")
"""The three maps every public function is made of (``policy``'s docstring)."""


@dataclass(frozen=True)
class ConvPlan:
    """What runs one map of a convolution: the method, and for the engine its tiles and workspace."""

    method: str
    operation: str
    rows: int               # patch rows per group: C_g·T
    positions: int          # (image, position) pairs of the batch: N·L
    tile: int               # positions per tile (tiled_blas, implicit_gemm), planes (direct)
    threads: int            # worker threads
    workspace_bytes: int    # the engine's buffers, all workers together
    patch_matrix_bytes: int  # what the full patch matrix would take
    reason: str = ""        # why this method, where "auto" chose it or another was substituted
    flipped: ConvPlan | None = None  # the adjoint run as this forward plan (stride 1, zero padding)
    device: str = "cpu"     # "cpu": the Numba engine (cpu/); "cuda": the CUDA engine (cuda/)
    winograd_tile: int = 0  # winograd: the largest output tile per axis (0: OUTPUT_TILE's)
    winograd_name: str = ""  # winograd: "F(4×4, 3×3)"
    fft: FFTBlocks | None = None  # fft: chunks, blocks and transform lengths
    # fft chosen by auto: the plan for inputs it cannot take; flipped: the plan for a weight
    # that is not finite (the flipped map would multiply its padding's zeros)
    fallback: ConvPlan | None = None
    # the engine's kernels that run, by their names in cpu/ or cuda/ ("BLAS", "cuBLAS" for
    # the libraries' GEMMs between them); "" off the engines and for a 1×1 map run by BLAS
    kernel: str = ""

    def describe(self) -> str:
        """The plan in one line: method, why, tiles, threads, workspace (``explain``)."""
        mib = 2 ** 20
        why = f" ({self.reason})" if self.reason else ""
        runs = f"; kernel {self.kernel}" if self.kernel else ""
        if self.flipped is not None:
            instead = ("" if self.fallback is None else
                       f"; a weight with an inf or NaN runs {self.fallback.method} instead, "
                       f"which multiplies no zero of the padding")
            return (f"{self.operation}: a stride-1 convolution with the flipped kernel{why}; "
                    + self.flipped.describe() + instead)
        full = f"the full patch matrix would take {self.patch_matrix_bytes / mib:.1f} MiB"
        if self.method == "fft" and self.fft is not None:
            blocks = self.fft
            cut = (f"whole images, {blocks.images} per chunk" if blocks.rows == 0 else
                   f"overlap-save blocks of {blocks.rows} output rows of one image")
            lengths = "×".join(str(n) for n in blocks.lengths)
            return (f"{self.operation}: fft{why}: transforms of {lengths} points, {cut}, "
                    f"the channels mixed by one small matrix product per frequency, on "
                    f"{self.threads} FFT worker(s); workspace {self.workspace_bytes / mib:.2f} "
                    f"MiB, the kernel's spectrum {blocks.spectrum_bytes / mib:.2f} MiB of it "
                    f"({full}); its error is normwise, about ε·log₂(points) of the largest "
                    f"values that meet in a sum, so outputs far smaller than their neighbours "
                    f"lose their relative accuracy: a GEMM method by name (method='im2col' or "
                    f"an engine's) rules the FFT out")
        if self.method == "zero_insertion":
            return (f"{self.operation}: zero_insertion, the array-API path{why}: tap by tap, "
                    f"each a 1×1 transposed convolution added at stride s, no inserted zero "
                    f"multiplied and no patch matrix ({full})")
        if self.method == "im2col":
            whole = (f"whole patch matrix {self.rows}×{self.positions} per group, "
                     f"{self.patch_matrix_bytes / mib:.1f} MiB")
            if self.workspace_bytes < self.patch_matrix_bytes:
                whole = (f"patch matrix in pieces of at most {self.workspace_bytes / mib:.1f} "
                         f"MiB (the {whole})")
            return f"{self.operation}: {self.method}, the array-API path{why}; {whole}"
        if self.tile == 0:
            return (f"{self.operation}: {self.method}{why}: BLAS GEMMs on the input itself, "
                    f"in units of positions on {self.threads} thread(s); workspace "
                    f"{self.workspace_bytes / mib:.2f} MiB ({full})")
        if self.device == "cuda":
            if self.method == "tiled_blas":
                what = (f"CUDA im2col tiles of {self.tile} (image, position) pairs × {self.rows} "
                        f"patch rows, cuBLAS")
            elif self.method == "implicit_gemm":
                what = "one implicit-GEMM CUDA kernel, patch tiles built in shared memory"
            else:
                what = "direct CUDA kernels, one thread per output sample"
            return (f"{self.operation}: {self.method}{why}: on the GPU, {what}{runs}; workspace "
                    f"{self.workspace_bytes / mib:.2f} MiB ({full})")
        if self.method == "winograd":
            return (f"{self.operation}: winograd{why}: {self.winograd_name}, blocks of "
                    f"{self.tile} tiles, one packed GEMM per transform point, on {self.threads} "
                    f"thread(s){runs}; workspace {self.workspace_bytes / mib:.2f} MiB ({full})")
        unit = "(image, group) pairs" if self.method == "direct" else "(image, position) pairs"
        return (f"{self.operation}: {self.method}{why}: tiles of {self.tile} {unit} "
                f"× {self.rows} patch rows on {self.threads} thread(s){runs}; workspace "
                f"{self.workspace_bytes / mib:.2f} MiB ({full})")
