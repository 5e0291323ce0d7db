"""The convolution as an operator: its explicit Toeplitz matrix (``toeplitz``), the
matrix-free ``ConvOperator`` with its spectrum (``conv_operator``), and bilinear
upsampling, a fixed depthwise transposed convolution (``bilinear``)."""
