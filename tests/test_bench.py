"""``python -m convmm bench``'s command line, report and figures (tiny layers: not a timing)."""

import json

import numpy as np
import pytest

from convmm._bench import cases, measure
from convmm.__main__ import main

TINY = {"about": "two tiny layers for the tests",
        "layers": [{"name": "tiny_3x3", "N": 2, "C": 4, "spatial": [9, 9], "K": 6,
                    "kernel": [3, 3], "stride": 2, "padding": 1, "dilation": 1},
                   {"name": "tiny_depthwise", "N": 2, "C": 4, "spatial": [7, 7], "K": 4,
                    "kernel": [3, 3], "stride": 1, "padding": 1, "dilation": 1, "groups": 4}]}


@pytest.fixture
def layers_file(tmp_path):
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_numpy_bench_writes_its_figures(layers_file, tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert main(["bench", "--layers-file", layers_file, "--repeats", "1", "--no-gemm",
                 "--no-startup", "--method", "tiled_blas", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "numpy" and report["method"] == "tiled_blas"
    assert [(r["layer"], r["which"]) for r in report["results"]] == [
        (name, which) for name in ("tiny_3x3", "tiny_depthwise") for which in cases.PASSES]
    flops = {(r["layer"], r["which"]): r["gflops"] * r["seconds"] for r in report["results"]}
    # Forward of tiny_3x3: 2 images · 6 channels · 5·5 positions · 4·9 multiply-adds, 2 FLOPs each.
    assert flops["tiny_3x3", "forward"] == pytest.approx(2 * 2 * 6 * 25 * 4 * 9 / 1e9)
    assert flops["tiny_3x3", "backward"] == pytest.approx(3 * flops["tiny_3x3", "forward"])
    printed = capsys.readouterr().out
    assert "convmm bench (numpy" in printed and "tiny_depthwise" in printed
    # Fair to the peer: convmm timed in a process that never imported torch.
    assert report["convmm_process_imported_torch"] is False
    assert ("each library in its own process at its own defaults" if report["torch"]
            else "convmm alone (PyTorch not installed") in printed
    if report["torch"] is not None:
        assert all(r["ratio"] > 0 for r in report["results"])
        assert "geometric mean convmm/torch" in printed
    # The small-layer section: per-call figures of every small case.
    assert [r["case"] for r in report["small"]] == cases.small_cases()
    assert all(0 < r["seconds"] < 1 for r in report["small"])
    assert "small layers (per call" in printed and "small_cnn_step" in printed


def test_the_small_cnn_step_computes_the_gradients_pytorch_does():
    torch = pytest.importorskip("torch")
    random = measure.Host.random("float64", seed=3)
    first, second = cases.small_call("convmm", cases.CNN_STEP, random)()
    random = measure.Host.random("float64", seed=3)
    x = torch.from_numpy(random((32, 1, 28, 28)))
    w1, b1 = torch.from_numpy(random((8, 1, 3, 3)) / 3), torch.from_numpy(random((8,)))
    w2, b2 = torch.from_numpy(random((16, 8, 3, 3)) / 8), torch.from_numpy(random((16,)))
    for t in (w1, b1, w2, b2):
        t.requires_grad_(True)
    h = torch.relu(torch.nn.functional.conv2d(x, w1, b1, padding=1))
    torch.relu(torch.nn.functional.conv2d(h, w2, b2, stride=2, padding=1)).sum().backward()
    for got, want in ((first.weight, w1), (first.bias, b1), (second.weight, w2),
                      (second.bias, b2)):
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_batch_replaces_every_layers_n(layers_file):
    layer = cases.Layer(TINY["layers"][0], batch=64)
    assert layer.n == 64 and layer.macs == 64 * 6 * 25 * 4 * 9


def test_tf32_is_refused_on_the_cpu(layers_file):
    with pytest.raises(SystemExit, match="--tf32 applies to --backend cupy"):
        main(["bench", "--layers-file", layers_file, "--tf32"])


def test_cupy_backend_says_what_is_missing(layers_file, monkeypatch):
    """Without CuPy (or without a GPU) --backend cupy stops with the reason."""
    from helpers import backend_names

    if "cupy" in backend_names():
        pytest.skip("a GPU is present: the CUDA engine's tests run the cupy bench")
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)   # import cupy fails
    with pytest.raises(SystemExit, match="--backend cupy needs CuPy and a GPU"):
        main(["bench", "--backend", "cupy", "--layers-file", layers_file])


def test_unknown_layer_lists_the_suite():
    with pytest.raises(SystemExit, match="the suite has: .*rgb_stride3_dilated"):
        cases.pick(cases.load_layers(), ["no_such_layer"])
