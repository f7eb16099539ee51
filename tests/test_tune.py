"""`sjd-batch autotune`: the cost model's arithmetic, and a real (tiny) measurement that chooses."""

from __future__ import annotations

import json

import pytest

from sjd_batch import cli
from sjd_batch.tuning import Calibration, TuneResult, candidates, predict


def test_cost_model_arithmetic():
    cal = Calibration(window=16, compression=2.5, overhead=1.2, prefill_s=0.01, pixel_s=0.002)
    # 100 tokens / 2.5 = 40 forwards of 50 ms, x 1.2, shared by 4 images, + prefill + pixels
    assert predict(cal, 50.0, 4, 100) == pytest.approx(40 * 0.05 * 1.2 / 4 + 0.012)


def test_the_choice_follows_the_forward_curve():
    cals = [Calibration(1, 1.0, 1.0, 0.0, 0.0), Calibration(8, 3.0, 1.0, 0.0, 0.0)]
    # compute-bound (a window costs 8 tokens): AR wins; memory-bound (a window costs ~1 token): SJD wins
    cpu = TuneResult("m", "cpu", "sjd", 100, {"1,1": 1.0, "8,1": 8.0}, cals)
    gpu = TuneResult("m", "cuda", "sjd", 100, {"1,1": 1.0, "8,1": 1.1}, cals)
    for result in (cpu, gpu):
        result.candidates = candidates(result)
    assert cpu.best().method == "ar" and "Choice: ar" in cpu.why()
    assert gpu.best().method == "sjd" and gpu.best().window == 8 and "Choice: sjd" in gpu.why()


def test_tune_measures_and_says_what_it_chose(tmp_path, capsys):
    out = tmp_path / "tune.json"
    assert cli.main(["autotune", "--model", "tiny-random", "--windows", "4,8", "--batch-sizes", "1,2",
                     "--prompts", "2", "--repeats", "1", "--verify", "4", "--threads", "1",
                     "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["forward_ms"]) == {f"{w},{b}" for w in (1, 4, 8) for b in (1, 2)}
    assert [c["window"] for c in data["calibration"]] == [1, 4, 8]
    assert len(data["candidates"]) == 6 and data["best"]["method"] == "sjd"
    assert data["verify"]["rounds"] >= 1 and data["verify"]["ar"]["measured_images_per_s"] > 0
    printed = capsys.readouterr().out
    assert "Choice:" in printed and "measured side by side" in printed
    rounds = data["verify"]["rounds"]
    assert f"verify round {rounds}/{rounds}:" in printed  # progress, one line per round


def test_auto_window_and_batch_in_a_job(tmp_path, capsys):
    """`window: auto` and `batch_size: auto`: the actor measures, picks from the grid, says why, and the
    job id tells an auto job from one with the preset window."""
    from sjd_batch.driver import run_local
    from sjd_batch.identity import identity
    from sjd_batch.io import results
    from sjd_batch.io.backends import open_storage
    from sjd_batch.tuning import AUTO_BATCHES, AUTO_WINDOWS
    from tests.test_worker import make_job, write_prompts

    prompts = write_prompts(tmp_path / "in" / "p.parquet", 6)
    config = make_job([prompts], str(tmp_path / "out"), method={"window": "auto"}, run={"batch_size": "auto"})
    summary = run_local(config, progress=False)
    assert summary.ok and summary.generated == 6, summary.text()
    err = capsys.readouterr().err
    assert "auto settings: window" in err and "images/s predicted" in err
    rows = results.read_stats(open_storage(config.output.uri)).to_pylist()
    windows = {json.loads(r["params_json"])["window"] for r in rows}
    assert len(windows) == 1 and windows <= set(AUTO_WINDOWS)
    assert {r["batch_size"] for r in rows} <= set(AUTO_BATCHES)
    preset = make_job([prompts], str(tmp_path / "out2"), method={"window": None})
    assert identity(config, [])["method"]["window"] == "auto" != identity(preset, [])["method"]["window"]
