"""`talkbench calibrate` on CPU with random-initialised weights: every check passes against its
reference package, a real file in the weights folder is used and named by its sha256, and a failing
or crashing check makes the command fail (FID is left to tests/calibration/test_fid_parity.py,
which runs the same shared functions; Inception is the slow part)."""

import json

import numpy as np
import pytest

from bench import calibrate
from bench.calibrate import CheckResult, differences, format_table, run_checks
from bench.cli import main


def test_differences_by_hand():
    assert differences([1.0, 2.0], [1.0, 2.5]) == (0.5, pytest.approx(0.2))
    with pytest.raises(ValueError, match="differ in size"):
        differences([1.0], [1.0, 2.0])


def test_checks_pass_with_random_weights():
    rows = run_checks(["image", "mfcc", "lpips", "syncnet", "cpbd"], random_init=True)
    by_metric = {r.metric: r for r in rows}
    assert set(by_metric) == {"PSNR", "SSIM", "MFCC (SyncNet audio)", "LPIPS",
                              "LSE-D / LSE-C / AV-offset", "CPBD"}
    for r in rows:
        assert r.verdict == "PASS" or r.verdict.startswith("SKIPPED"), r
    assert by_metric["LPIPS"].weights == "random-init"
    assert by_metric["LPIPS"].reference.startswith("lpips ")
    assert 0 < by_metric["PSNR"].max_rel <= 1e-6  # a real comparison: float32 vs float64 rounding
    table = format_table(rows)
    for header in ("metric", "reference", "weights", "max abs diff", "max rel diff", "tolerance",
                   "verdict"):
        assert header in table


def test_real_file_is_used_and_named(talkbench_home):
    folder = talkbench_home / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "alexnet-owt-7be5be79.pth"
    calibrate.random_alexnet(path, seed=5)
    try:
        from core.hashing import file_sha256
        (row,) = run_checks(["lpips"])
        assert row.weights == "sha256:" + file_sha256(path) and row.verdict == "PASS"
        (row,) = run_checks(["lpips"], random_init=True)
        assert row.weights == "random-init"
    finally:
        path.unlink()


def test_cli_exit_codes(monkeypatch, tmp_path, capsys):
    def failing(folder, random_init):
        return [CheckResult("X", "ref 1", "none", "-", 1.0, 1.0, "abs 0", "FAIL")]

    def crashing(folder, random_init):
        raise RuntimeError("reference exploded")

    monkeypatch.setitem(calibrate.CHECKS, "mfcc", failing)
    out = tmp_path / "rows.json"
    assert main(["calibrate", "--only", "mfcc", "--json", str(out)]) == 1
    assert json.loads(out.read_text())[0]["verdict"] == "FAIL"
    monkeypatch.setitem(calibrate.CHECKS, "mfcc", crashing)
    assert main(["calibrate", "--only", "mfcc"]) == 1
    assert "ERROR: RuntimeError: reference exploded" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["calibrate", "--only", "image"]) == 0
    with pytest.raises(KeyError, match="known"):
        run_checks(["nope"])
