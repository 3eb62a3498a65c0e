"""AU-F1 / AU-Acc backend py-feat: the Fex -> occurrence mapping (columns, 0.5 threshold, several
faces, frames without a face) on a DataFrame shaped like py-feat 2.x's output, the scoring of a set
through it, and the unavailable path. py-feat itself is an optional extra that is not installed
here (it pulls a CUDA NCCL wheel); its Detector is not run by these tests."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from metrics import build_metric
from metrics.au import AU_NAMES, PYFEAT_THRESHOLD, occurrence_from_fex, au_scores
from core.errors import MetricError, MetricUnavailable

FEAT_AUS = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12", "AU14",
            "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43"]


def fex_like(rows):
    """A DataFrame with py-feat 2.x's facebox, AU and bookkeeping columns; rows are
    (frame, FaceScore, {AU: probability})."""
    records = []
    for frame, score, aus in rows:
        rec = {"FaceRectX": 10.0, "FaceRectY": 12.0, "FaceRectWidth": 80.0, "FaceRectHeight": 90.0,
               "FaceScore": score}
        rec.update({au: 0.1 for au in FEAT_AUS})
        rec.update(aus)
        rec.update({"input": "tensor", "frame": frame})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def test_threshold_is_metrics_md_value():
    assert PYFEAT_THRESHOLD == 0.5


def test_occurrence_mapping_by_hand():
    nan_aus = {au: np.nan for au in FEAT_AUS}
    fex = fex_like([
        (0, 0.95, {"AU25": 0.9, "AU26": 0.2}),  # the clear face ...
        (0, 0.60, {"AU25": 0.1, "AU26": 0.99}),  # ... wins over a second, weaker face
        (1, np.nan, nan_aus),  # py-feat's row for a frame without a face
        (2, 0.99, {"AU10": 0.5, "AU14": 0.4999, "AU20": 0.51}),  # the cut is >= 0.5
        (7, 0.99, {"AU26": 0.9}),  # outside a 4-frame clip
    ])
    occ, ok = occurrence_from_fex(fex, num_frames=4)
    assert ok.tolist() == [True, False, True, False]
    assert occ.shape == (4, 5) and AU_NAMES == ("AU10", "AU14", "AU20", "AU25", "AU26")
    assert occ[0].tolist() == [False, False, False, True, False]
    assert occ[2].tolist() == [True, False, True, False, False]
    assert not occ[1].any() and not occ[3].any()


def test_missing_columns_named():
    fex = fex_like([(0, 0.9, {})]).drop(columns=["AU20", "frame"])
    with pytest.raises(MetricError, match=r"\['frame', 'AU20'\]"):
        occurrence_from_fex(fex, 1)


def test_scores_through_the_mapping():
    labels = fex_like([(t, 0.9, {"AU25": 0.9 if t % 2 else 0.1}) for t in range(4)])
    pred = fex_like([(t, 0.9, {"AU25": 0.8 if t < 2 else 0.3}) for t in range(4)])
    y, y_ok = occurrence_from_fex(labels, 4)
    p, p_ok = occurrence_from_fex(pred, 4)
    s = au_scores(p[p_ok & y_ok], y[p_ok & y_ok])["AU25"]
    # labels 0 1 0 1, prediction 1 1 0 0: TP 1, FP 1, FN 1 -> F1 0.5, accuracy 0.5
    assert s.f1 == pytest.approx(0.5) and s.accuracy == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["AU-F1", "AU-Acc"])
def test_unavailable_without_py_feat(name):
    if importlib.util.find_spec("feat") is not None:
        pytest.skip("py-feat is installed here; the missing-package path cannot be shown")
    with pytest.raises(MetricUnavailable, match=r"pip install talkbench\[au\]"):
        build_metric(name, {"backend": "py-feat"})


def test_bad_backend_named():
    with pytest.raises(ValueError, match="backend"):
        build_metric("AU-F1", {"backend": "pyfeat"})
