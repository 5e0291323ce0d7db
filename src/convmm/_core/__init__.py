"""The core: convolutions written once against the Python array API standard.

Shape arithmetic (``geometry``), keyword normalisation (``params``), boundary
validation (``validation``), the two data layouts (``layout``), index tables
(``index_tables``), im2col/col2im and padding (``lowering``) and the array-API
algorithms (``algorithms``).  Nothing here imports numba, an engine or the
public layer: the engines and the public functions build on this wing.
"""
