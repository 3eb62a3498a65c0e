"""Fitting the geometric AU detector's thresholds on synthtalk (bench/au_thresholds.py) and its
command, `talkbench au-thresholds`."""

from __future__ import annotations

import numpy as np
import pytest

from bench import au_thresholds
from bench.au_thresholds import fit_report, fit_threshold, format_fit_report
from bench.cli import main
from metrics.au import AU_NAMES, GEOMETRIC_THRESHOLDS


@pytest.fixture(scope="module")
def tiny_report():
    return fit_report(size=1, seed=0)


def test_fit_threshold_by_hand():
    assert fit_threshold([1, 2, 3, 4, 10, 11, 12], [0, 0, 0, 0, 1, 1, 1]) == (7.0, 1.0)
    cut, f1 = fit_threshold([1, 2, 3, 4], [0, 1, 0, 1])  # all positive: F1 = 4/5
    assert (cut, f1) == (pytest.approx(1.5), pytest.approx(0.8))
    cut, f1 = fit_threshold([0.1, 0.2, np.nan, 0.9, 0.8], [0, 0, 1, 1, 1])  # NaN ignored
    assert cut == pytest.approx(0.5) and f1 == 1.0
    with pytest.raises(ValueError, match="positive"):
        fit_threshold([1, 2], [0, 0])


def test_fit_report_on_a_tiny_corpus(tiny_report):
    report = tiny_report
    assert set(report["thresholds"]) == set(AU_NAMES)
    assert report["frames"]["fit"] > 300 and report["frames"]["held_out"] > 100
    assert report["rows"]["AU25"]["fit"]["f1"] > 0.95
    for name in report["not_fitted"]:  # no positive label in so few clips: stored value kept
        assert report["thresholds"][name] == GEOMETRIC_THRESHOLDS[name]
    text = format_fit_report(report)
    assert "GEOMETRIC_THRESHOLDS" in text and "held_out" in text


def test_cli_prints_the_report(tiny_report, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(au_thresholds, "fit_report",
                        lambda *args: calls.append(args) or tiny_report)
    assert main(["au-thresholds", "--size", "1", "--seed", "3"]) == 0
    assert calls == [(1, 3, False)]
    assert capsys.readouterr().out.strip() == format_fit_report(tiny_report)
    main(["au-thresholds", "--dlib"])
    assert calls[-1] == ("small", 0, True)
