"""The calibration (``_engines.cpu.calibration``): this machine's rates, which ``auto`` weighs
the FFT with, measured robustly, kept, checked against the core's measured peak and
measured again where a busy machine set them.

Every other test runs on injected rates (``conftest.machine_rates``); these take the real
``record`` back and replace only the measurements, so each assertion follows from given
numbers, never from this machine's speed or load."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import convmm
from convmm.__main__ import main
from convmm._engines.cpu import calibration
from convmm._engines.cpu.peak import fma_peak

RECORD = calibration.record      # the real one: conftest's autouse fixture injects rates
PEAK = 1e11                      # float32 operations per second on one core, injected
FAST = {"gemm": 1.0 * PEAK, "fft": 5e9, "bandwidth": 2e10, "mix": 1.5e9, "mix_small": 9e8}
SLOW = {**FAST, "gemm": 0.1 * PEAK, "fft": 7e9}


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """The real ``record`` over a fresh cache folder, with its measurements replaced:
    ``measured(*rounds, peak=...)`` makes ``_measure`` return the given rates round by round
    (the last one from then on) and returns the list of the calls made."""
    monkeypatch.setattr(calibration, "record", RECORD)
    monkeypatch.setenv("CONVMM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_records", {})
    monkeypatch.setattr(calibration, "ROUND_PAUSE_SECONDS", 0.0)

    def inject(*rounds, peak=PEAK):
        calls = []

        def measure(dtype, threads):
            calls.append((np.dtype(dtype).name, threads))
            return dict(rounds[min(len(calls), len(rounds)) - 1])

        monkeypatch.setattr(calibration, "_measure", measure)
        monkeypatch.setattr(calibration, "_measure_peak", lambda: peak)
        return calls

    return inject


def _new_process(monkeypatch):
    """What a later process sees: the cache on disk, nothing remembered in memory."""
    monkeypatch.setattr(calibration, "_records", {})


def _stored(dtype="float32", threads=1):
    return json.loads(calibration.cache_path().read_text())[
        calibration._key(np.dtype(dtype), threads)]


def test_a_plausible_record_is_measured_once_and_repeats_in_later_processes(measured,
                                                                          monkeypatch):
    calls = measured(FAST)
    first = calibration.record(np.float32, 1)
    assert first["plausible"] and first["attempts"] == 1 and first["rates"] == FAST
    assert len(calls) == 1
    _new_process(monkeypatch)
    assert calibration.record(np.float32, 1) == first and len(calls) == 1
    assert calibration.rates(np.complex64, 1) == FAST        # complex64 reads float32's


def test_a_busy_measurement_is_repeated_in_the_process_each_rate_keeping_its_best(measured):
    calls = measured(SLOW, SLOW, FAST)
    found = calibration.record(np.float32, 1)
    assert len(calls) == 3 and found["plausible"] and found["attempts"] == 1
    assert found["rates"] == {**FAST, "fft": SLOW["fft"]}     # each rate the best round's


def test_an_implausible_record_is_kept_marked_and_measured_again_by_later_processes(
        measured, monkeypatch):
    calls = measured(SLOW)
    found = calibration.record(np.float32, 1)
    assert len(calls) == calibration.ROUNDS
    assert not found["plausible"] and _stored() == found
    assert (f"below {calibration.PLAUSIBLE_FRACTION:.0%} of the measured peak"
            in calibration.describe(found))
    for attempt in range(2, calibration.ATTEMPTS + 1):
        _new_process(monkeypatch)
        assert calibration.record(np.float32, 1)["attempts"] == attempt
    assert len(calls) == calibration.ROUNDS * calibration.ATTEMPTS
    _new_process(monkeypatch)                 # trusted as it stands: a slow BLAS stays slow
    assert calibration.record(np.float32, 1)["attempts"] == calibration.ATTEMPTS
    assert len(calls) == calibration.ROUNDS * calibration.ATTEMPTS


def test_a_later_process_keeps_the_best_of_every_attempt(measured, monkeypatch):
    measured(SLOW)
    calibration.record(np.float32, 1)
    _new_process(monkeypatch)
    calls = measured(FAST)
    found = calibration.record(np.float32, 1)
    assert len(calls) == 1 and found["plausible"] and found["attempts"] == 2
    assert found["rates"] == {**FAST, "fft": SLOW["fft"]}


def test_the_peak_held_to_is_the_best_ever_measured_on_this_cpu(measured, monkeypatch):
    """A peak measured while the core was shared is low too, so it cannot vouch for a GEMM
    measured then: the best peak any process measured is the one a GEMM is held to."""
    measured(FAST, peak=PEAK)
    calibration.record(np.float32, 1)
    _new_process(monkeypatch)
    calls = measured(SLOW, peak=SLOW["gemm"] * 2)   # both halved: plausible to each other
    found = calibration.record(np.float64, 1)
    assert found["peak"] == PEAK and not found["plausible"]
    assert len(calls) == calibration.ROUNDS
    # a multiply-add is two operations, the rate is per core × threads, and float64's peak
    # is half float32's
    least = calibration.PLAUSIBLE_FRACTION * PEAK / 2          # multiply-adds per second
    for gemm, threads, dtype in [(least, 1, np.float32), (least * 2, 2, np.float32),
                                 (least / 2, 1, np.float64)]:
        assert calibration.plausible(gemm * 1.001, threads, PEAK, dtype)
        assert not calibration.plausible(gemm * 0.999, threads, PEAK, dtype)


def test_calibrate_measures_afresh_and_stores_for_later_processes(measured, monkeypatch,
                                                                  capsys):
    measured(SLOW)
    for _ in range(calibration.ATTEMPTS):
        _new_process(monkeypatch)
        calibration.record(np.float32, 2)         # an implausible record, trusted as it stands
    calls = measured(FAST)
    assert main(["calibrate", "--threads", "2"]) == 0
    assert calls == [("float32", 2), ("float64", 2)]
    out = capsys.readouterr().out
    assert "rates for float32 on 2 thread(s)" in out and "rates for float64" in out
    assert str(calibration.cache_path()) in out
    _new_process(monkeypatch)
    found = calibration.record(np.float32, 2)
    assert found["plausible"] and found["attempts"] == 1 and found["rates"] == FAST
    assert len(calls) == 2
    with pytest.raises(SystemExit):
        main(["calibrate", "--threads", "0"])


def test_calibrate_holds_the_rates_to_the_peak_it_measures_and_stores_that_peak(
        measured, monkeypatch):
    """A stored peak above this machine's (another machine of the same model name sharing
    the cache) would make every record implausible for good: asked afresh, the calibration
    holds the rates to the peak it measures now, and stores that one."""
    measured(FAST, peak=4 * PEAK)
    calibration.record(np.float32, 1)
    calls = measured(FAST, peak=PEAK)
    found = calibration.record(np.float32, 1, fresh=True)
    assert found["plausible"] and found["peak"] == PEAK and len(calls) == 1
    assert json.loads(calibration.cache_path().read_text())[calibration._peak_key()] == PEAK


def test_an_unwritable_cache_is_said_and_leaves_nothing_behind(measured, monkeypatch,
                                                               tmp_path, capsys):
    blocked = tmp_path / "cache"
    (blocked / "calibration.json").mkdir(parents=True)    # a folder where the file goes
    monkeypatch.setenv("CONVMM_CACHE_DIR", str(blocked))
    measured(FAST)
    assert calibration.record(np.float32, 1)["rates"] == FAST
    assert not calibration.stored(np.float32, 1)
    assert main(["calibrate", "--threads", "1"]) == 0
    assert "could not store them" in capsys.readouterr().out
    assert sorted(path.name for path in blocked.iterdir()) == ["calibration.json"]


def test_records_of_earlier_versions_are_dropped_when_the_cache_is_written(measured):
    measured(FAST)
    calibration.cache_path().parent.mkdir(parents=True, exist_ok=True)
    calibration.cache_path().write_text(json.dumps({"v3|old": {"gemm": 1}}))
    calibration.record(np.float32, 1)
    assert all(key.startswith(f"v{calibration.VERSION}|")
               for key in json.loads(calibration.cache_path().read_text()))


@pytest.mark.parametrize("change", [{"plausible": "yes"}, {"attempts": 0}, {"peak": -1.0},
                                    {"dtype": "int8"}, {"threads": 0}, {"measured": None},
                                    {"dtype": "float64"}, {"threads": 7},   # not its key's
                                    {"rates": {**FAST, "gemm": float("nan")}}])
def test_a_damaged_record_is_measured_again(measured, monkeypatch, change):
    calls = measured(FAST)
    found = calibration.record(np.float32, 1)
    stored = json.loads(calibration.cache_path().read_text())
    stored[calibration._key(np.dtype(np.float32), 1)] = {**found, **change}
    calibration.cache_path().write_text(json.dumps(stored))
    _new_process(monkeypatch)
    again = calibration.record(np.float32, 1)
    assert len(calls) == 2 and again["rates"] == FAST and again["attempts"] == 1


def test_explain_quotes_the_rates_auto_weighed_the_fft_with(machine_rates):
    x = np.ones((1, 1, 96, 96), np.float32)
    machine_rates(gemm=1e12)
    text = convmm.explain(convmm.conv, x, np.ones((1, 1, 17, 17), np.float32))
    assert "not the FFT: modelled" in text and "GEMM 2000 GFLOP/s" in text, text
    assert "measured injected" in text
    machine_rates(gemm=2e10)
    text = convmm.explain(convmm.conv, x, np.ones((1, 1, 17, 17), np.float32))
    assert text.startswith("conv: fft (289-tap kernel: modelled") and "GEMM 40 GFLOP/s" in text
    small = convmm.explain(convmm.conv, x, np.ones((1, 1, 3, 3), np.float32))
    assert "FFT" not in small.split(":")[1]      # too few taps: no model, nothing quoted


@pytest.mark.parametrize("dtype, threads", [(np.float32, 1), (np.float64, 2)])
def test_the_measurement_runs_every_kernel_and_gives_positive_rates(dtype, threads):
    """The real measurements (about a fifth of a second), in this process: every rate
    positive and finite, whatever this machine's speed."""
    assert calibration._valid(calibration._measure(np.dtype(dtype), threads))


def test_the_measured_peak_is_a_rate_a_core_can_reach():
    """Between 1 GFLOP/s (any core of the last fifteen years) and 2 TFLOP/s (beyond any core
    today): a kernel optimised away or timed wrong lands outside."""
    assert 1e9 < fma_peak(bursts=3) < 2e12


def test_the_calibration_is_measured_once_and_read_back(tmp_path):
    """The rates ``auto`` weighs with are kept on disk: a new process reads the same ones
    (so it makes the same choices), and an unwritable cache only costs a measurement."""
    code = ("import json, numpy as np; from convmm._engines.cpu import calibration; "
            "print(json.dumps(calibration.rates(np.float32, 2), sort_keys=True))")
    env = {**os.environ, "CONVMM_CACHE_DIR": str(tmp_path)}
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                    text=True, timeout=120).stdout for _ in range(2))
    assert first == second and first.strip().startswith("{")
    assert (tmp_path / "calibration.json").is_file()
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    env["CONVMM_CACHE_DIR"] = str(blocked / "below")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().startswith("{"), done.stderr


@pytest.mark.parametrize("content", ["[1, 2]", "null", "{\"v5|x\": 1}", "corrupt"])
def test_a_corrupt_calibration_cache_is_measured_again(tmp_path, content):
    (tmp_path / "calibration.json").write_text(content)
    code = ("import numpy as np, convmm; from convmm._engines.cpu import calibration; "
            "key = calibration._key(np.dtype('float32'), convmm.get_num_threads()); "
            "import json, pathlib; p = pathlib.Path(calibration.cache_path()); "
            "d = json.loads(p.read_text()) if p.read_text().startswith('{') else {}; "
            "d[key] = {'gemm': 0, 'fft': 'x', 'bandwidth': None, 'mix': -1, 'mix_small': 1}; "
            "p.write_text(json.dumps(d)) if d else None; "
            "print(convmm.explain(convmm.conv, np.ones((1, 1, 128, 128), np.float32), "
            "np.ones((1, 1, 21, 21), np.float32))[:9])")
    env = {**os.environ, "CONVMM_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("conv: "), done.stdout
    assert calibration._valid({name: 1.0 for name in calibration.RATES})
    assert not calibration._valid({name: float("nan") for name in calibration.RATES})
