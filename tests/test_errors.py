"""Bad input gets a ValueError or TypeError that names the parameter."""

import numpy as np
import pytest

import convmm

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 4, 6, 6))
W = rng.standard_normal((6, 4, 3, 3))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, 0)), ValueError, "stride"),
    (dict(stride=(1, 1, 1)), ValueError, "stride"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(stride=True), TypeError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(dilation=-1), ValueError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=((1, -1), (0, 0))), ValueError, "padding"),
    (dict(padding=(1, 2, 3)), ValueError, "padding"),
    (dict(padding=((1, 2, 3), (0, 0))), ValueError, "padding"),
    (dict(padding="half"), ValueError, "padding"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode"),
    (dict(data_format="NHWC"), ValueError, "data_format"),
    (dict(method="winograd_fft"), ValueError, "method"),
    (dict(groups=0), ValueError, "groups"),
    (dict(groups=3), ValueError, "groups"),
    (dict(groups=2.0), TypeError, "groups"),
    (dict(padding_mode="reflect", padding=6), ValueError, "reflect"),
    (dict(padding_mode="circular", padding=7), ValueError, "circular"),
])
def test_conv_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        convmm.conv(X, W, **kwargs)


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match="kernel"):
        convmm.conv(X, rng.standard_normal((6, 4, 7, 3)))
    with pytest.raises(ValueError, match="kernel"):
        convmm.conv(X, W, dilation=3)
    convmm.conv(X, rng.standard_normal((6, 4, 7, 3)), padding=((1, 0), (0, 0)))  # fits when padded


@pytest.mark.parametrize("x, w, match", [
    (X, rng.standard_normal((6, 4)), "weight"),
    (X, rng.standard_normal((6, 4, 3, 3, 3, 3)), "weight"),
    (X[0, 0, 0], W, "x"),
    (X[None], W, "x"),
    (X, rng.standard_normal((6, 3, 3, 3)), "channels"),
    (X, rng.standard_normal((6, 4, 0, 3)), "weight"),
])
def test_conv_shapes(x, w, match):
    with pytest.raises(ValueError, match=match):
        convmm.conv(x, w)


def test_bias_shape():
    with pytest.raises(ValueError, match="bias"):
        convmm.conv(X, W, np.zeros(5))
    with pytest.raises(ValueError, match="bias"):
        convmm.conv(X, W, np.zeros((6, 1)))


def test_groups_must_divide_output_channels():
    with pytest.raises(ValueError, match="groups"):
        convmm.conv(X, rng.standard_normal((5, 2, 3, 3)), groups=2)


def test_ranked_variants_check_the_rank():
    with pytest.raises(ValueError, match="weight"):
        convmm.conv1d(X, W)
    with pytest.raises(ValueError, match="weight"):
        convmm.conv_transpose3d(X, W)
    assert convmm.conv2d(X, W).shape == (2, 6, 4, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stride=2, output_padding=2), "output_padding"),
    (dict(stride=1, output_padding=1), "output_padding"),
    (dict(output_padding=-1), "output_padding"),
    (dict(stride=2, output_padding=1, output_size=(13, 13)), "output_size"),
    (dict(stride=2, output_size=(20, 13)), "output_size"),
    (dict(stride=2, output_size=(13,)), "output_size"),
    (dict(padding=5), "padding"),
    (dict(padding="same", output_padding=1, stride=2), "output_padding"),
    (dict(method="im2col_fast"), "method"),
])
def test_conv_transpose_parameters(kwargs, match):
    y = rng.standard_normal((2, 6, 6, 6))
    with pytest.raises(ValueError, match=match):
        convmm.conv_transpose(y, W, **kwargs)


def test_output_padding_may_be_below_the_dilation():
    """PyTorch's rule: output padding smaller than the stride *or* the dilation."""
    y = rng.standard_normal((1, 6, 4, 4))
    out = convmm.conv_transpose(y, W, stride=1, dilation=2, output_padding=1)
    assert out.shape == (1, 4, 9, 9)


def test_conv_transpose_channels():
    with pytest.raises(ValueError, match="channels"):
        convmm.conv_transpose(rng.standard_normal((2, 4, 6, 6)), W)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.float16])
def test_integer_and_bool_input_says_to_cast(dtype):
    with pytest.raises(TypeError, match="cast"):
        convmm.conv(X.astype(dtype), W)
    with pytest.raises(TypeError, match="cast"):
        convmm.conv(X, W.astype(dtype))
    with pytest.raises(TypeError, match="cast"):
        convmm.im2col(X.astype(dtype), 3)


def test_not_an_array():
    with pytest.raises(TypeError, match="x"):
        convmm.conv(X.tolist(), W)
    with pytest.raises(TypeError, match="weight"):
        convmm.conv(X, 3.0)


def test_two_namespaces():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="namespace"):
        convmm.conv(X, strict.asarray(W))
    with pytest.raises(TypeError, match="namespace"):
        convmm.conv(strict.asarray(X), strict.asarray(W), np.zeros(6))


def test_two_namespaces_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="namespace"):
        convmm.conv(torch.tensor(X), W)


def test_backward_arguments():
    g = rng.standard_normal((2, 6, 4, 4))
    with pytest.raises(ValueError, match="grad_output"):
        convmm.conv_backward(g[:, :, :3], X, W)
    with pytest.raises(ValueError, match="grad_output"):
        convmm.conv_backward(g[0], X, W)
    with pytest.raises(ValueError, match="needs"):
        convmm.conv_backward(g, X, W, needs=("input", "x"))
    with pytest.raises(ValueError, match="grad_output"):
        convmm.conv_transpose_backward(X, g, W[:, :, :2, :2])
    with pytest.raises(TypeError, match="cast"):
        convmm.conv_backward(g.astype(np.int64), X, W)


def test_im2col_col2im_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        convmm.im2col(X, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        convmm.im2col(X, (3, 3, 3, 3))
    with pytest.raises(ValueError, match="x"):
        convmm.im2col(X, (3,))
    with pytest.raises(ValueError, match="kernel"):
        convmm.im2col(X, 7)
    cols = convmm.im2col(X, 3)
    with pytest.raises(ValueError, match="cols"):
        convmm.col2im(cols[:, :, :-1], (6, 6), 3)
    with pytest.raises(ValueError, match="cols"):
        convmm.col2im(cols[:, :-1], (6, 6), 3)
    with pytest.raises(ValueError, match="cols"):
        convmm.col2im(cols[None], (6, 6), 3)
    with pytest.raises(ValueError, match="output_size"):
        convmm.col2im(cols, (6, 0), 3)


def test_shape_functions():
    with pytest.raises(ValueError, match="kernel"):
        convmm.conv_output_shape((4,), 6)
    with pytest.raises(TypeError, match="input_shape"):
        convmm.conv_output_shape(4, 3)
    with pytest.raises(ValueError, match="stride"):
        convmm.conv_output_shape((4, 4), 3, stride=(1, 0))
    with pytest.raises(ValueError, match="output size"):
        convmm.conv_transpose_output_shape((1,), 1, padding=1)


def test_conv_transpose_padding_mode():
    x, w = np.ones((1, 1, 3)), np.ones((1, 1, 3))
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        convmm.conv_transpose(x, w, padding_mode="mirror")
    # the forward convolution maps 2 samples padded by 2 on each side: reflect cannot
    with pytest.raises(ValueError, match="padding_mode='reflect' needs padding smaller"):
        convmm.conv_transpose(np.ones((1, 1, 4)), w, padding=2, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='circular' cannot wrap"):
        convmm.conv_transpose_backward(np.ones((1, 1, 1)), np.ones((1, 1, 5)), w, padding=3,
                                       padding_mode="circular")
    assert convmm.conv_transpose(x, w, padding=1, padding_mode="circular").shape == (1, 1, 3)


@pytest.mark.parametrize("keyword, value, guess", [
    ("padding_mode", "nearest", "replicate"), ("padding_mode", "mirror", "reflect"),
    ("padding_mode", "symm", "symmetric"), ("padding_mode", "fill", "zeros"),
    ("padding_mode", "reflet", "reflect"), ("method", "winogard", "winograd"),
    ("data_format", "channel_last", "channels_last"),
    ("padding_mode", "grid-wrap", "circular"), ("padding_mode", "periodic", "circular"),
    ("padding_mode", "grid-mirror", "symmetric"), ("padding_mode", "grid-constant", "zeros"),
])
def test_a_near_miss_or_another_librarys_name_gets_a_did_you_mean(keyword, value, guess):
    x, w = np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=f"{keyword} must be one of .*did you mean '{guess}'"):
        convmm.conv(x, w, padding=1, **{keyword: value})


def test_a_name_with_no_equivalent_gets_no_guess():
    with pytest.raises(ValueError) as caught:
        convmm.conv(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=1,
                    padding_mode="linear_ramp")
    assert "did you mean" not in str(caught.value)


def test_the_command_line_has_a_version_and_help_without_a_command(capsys):
    from convmm.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"convmm {convmm.__version__}"
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("alias, mode", [("constant", "zeros"), ("edge", "replicate"),
                                         ("wrap", "circular")])
def test_np_pads_names_are_accepted_with_one_meaning(alias, mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 7, 6)), rng.standard_normal((3, 2, 3, 3))
    np.testing.assert_array_equal(convmm.conv(x, w, padding=2, padding_mode=alias),
                                  convmm.conv(x, w, padding=2, padding_mode=mode))
    np.testing.assert_array_equal(convmm.im2col(x, 3, padding=1, padding_mode=alias),
                                  convmm.im2col(x, 3, padding=1, padding_mode=mode))
    np.testing.assert_array_equal(convmm.correlate(x[0, 0], w[0, 0], "same", boundary=alias),
                                  convmm.correlate(x[0, 0], w[0, 0], "same", boundary=mode))


def test_plain_arrays_get_errors_that_name_the_real_problem():
    image, kernel = np.ones((16, 16)), np.ones((3, 3))
    with pytest.raises(ValueError, match=r"weight must have 3, 4 or 5 dimensions.*convmm.correlate"):
        convmm.conv(image, kernel, padding="same")
    with pytest.raises(ValueError, match=r"x must be \(N, C, \*S\).*got shape \(16, 16\)"):
        convmm.im2col(image, 7)
    with pytest.raises(ValueError, match=r"x must be \(N, C, \*S\).*got shape \(16, 16\)"):
        convmm.upsample_bilinear(image, 2)
    # … and what a SciPy user writes instead works:
    import scipy.signal
    np.testing.assert_allclose(convmm.correlate(image, kernel, mode="same"),
                               scipy.signal.correlate(image, kernel, mode="same"))
    assert convmm.im2col(image[None, None], 7).shape == (1, 49, 100)
    assert convmm.upsample_bilinear(image[None, None], 2).shape[:2] == (1, 1)


@pytest.mark.parametrize("padding, wanted", [("SAME", "same"), ("VALID", "valid"),
                                             ("sme", "same")])
def test_padding_strings_get_a_did_you_mean(padding, wanted):
    with pytest.raises(ValueError, match=f"padding must be .*did you mean '{wanted}'"):
        convmm.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding=padding)


def test_gradient_names_get_a_did_you_mean():
    with pytest.raises(ValueError, match="needs must name .*did you mean 'weight'"):
        convmm.conv_backward(np.ones((1, 1, 3)), np.ones((1, 1, 5)), np.ones((1, 1, 3)),
                             needs=("weights",))


@pytest.mark.parametrize("keywords, call", [
    ({}, "mode='valid')"), ({"padding": 0}, "mode='valid')"), ({"padding": "valid"}, "mode='valid')"),
    ({"padding": "full", "padding_mode": "reflect"}, "mode='full', boundary='reflect')"),
    ({"padding": "same", "padding_mode": "edge"}, "mode='same', boundary='edge')"),
])
def test_the_plain_array_hint_keeps_the_calls_meaning(keywords, call):
    """conv with plain arrays names the correlate call that computes what was asked for."""
    image, kernel = np.ones((16, 16)), np.ones((3, 3))
    with pytest.raises(ValueError) as caught:
        convmm.conv(image, kernel, **keywords)
    assert f"convmm.correlate(x, weight, {call}" in str(caught.value)


def test_plain_array_hints_for_the_transpose_and_the_operator():
    image, kernel = np.ones((16, 16)), np.ones((3, 3))
    with pytest.raises(ValueError, match=r"convmm.convolve\(x, weight, 'full'\)"):
        convmm.conv_transpose(image, kernel)
    np.testing.assert_allclose(convmm.convolve(image, kernel, "full"),
                               convmm.conv_transpose(image[None, None], kernel[None, None])[0, 0])
    with pytest.raises(ValueError, match=r"add the channel axes: weight\[None, None\]"):
        convmm.ConvOperator(kernel, (16, 16))
    with pytest.raises(ValueError, match="add the batch and channel axes"):
        convmm.conv(image, kernel, padding=1)


def test_a_plain_image_with_a_size_per_axis_is_told_to_add_its_channel_axis():
    image = np.ones((16, 16))
    with pytest.raises(ValueError, match=r"x\[None\] with kernel_size=\(7, 7\)"):
        convmm.im2col(image, 7)
    with pytest.raises(ValueError, match=r"a plain array needs a channel axis: x\[None\]"):
        convmm.im2col(image, (7, 7))
    with pytest.raises(ValueError, match=r"a plain array needs a channel axis: x\[None\]"):
        convmm.upsample_bilinear(image, (2, 2))
    assert convmm.im2col(image[None], (7, 7)).shape == (49, 100)
    assert convmm.upsample_bilinear(image[None], (2, 2)).shape == (1, 31, 31)


def test_a_ranked_function_names_its_own_rank():
    with pytest.raises(ValueError, match=r"weight must have 4 dimensions for 2 spatial dim"):
        convmm.conv2d(np.ones(8), np.ones(3))


def test_correlate_names_its_own_parameters():
    with pytest.raises(TypeError, match="in1 has dtype int64"):
        convmm.correlate(np.arange(5), np.ones(3))
    with pytest.raises(TypeError, match="in2 has dtype int64"):
        convmm.correlate(np.ones(5), np.arange(3))


def test_col2im_with_int_sizes_says_they_mean_two_dims():
    cols = convmm.im2col(np.ones((1, 1, 10)), 3)
    with pytest.raises(ValueError, match=r"ints mean 2 spatial dims.*output_size=\(10,\)"):
        convmm.col2im(cols, 10, 3)
    assert convmm.col2im(cols, (10,), (3,)).shape == (1, 1, 10)
