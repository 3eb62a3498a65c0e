"""Speech-related action units: AU-F1 and AU-Acc (TCSAN protocol, `reference/metrics.md` §4).

Modules, by responsibility:

* `metrics.au.detector`: the landmark-geometry AU detector (frontalisation, the five AU features,
  the fitted `GEOMETRIC_THRESHOLDS`) -- backend ``geometric``;
* `metrics.au.external`: detectors run outside talkbench's own code -- OpenFace CSVs (backend
  ``openface-csv``) and py-feat (backend ``py-feat``);
* `metrics.au.metrics`: the registered metrics AU-F1 and AU-Acc (the TCSAN protocol, per-AU
  confusion counts pooled over the test set).

The thresholds of the geometric detector are fitted on synthtalk by the harness
(`bench/au_thresholds.py`, ``talkbench au-thresholds``), not here: the metrics only read them.
The names other code uses are re-exported here (``from metrics.au import AU_NAMES, au_scores``).
"""

from __future__ import annotations

from metrics.au.detector import (ALIGN_POINTS, AU_NAMES, CHIN_REST_PERCENTILE, FEATURE_POINTS,
                                 GEOMETRIC_THRESHOLDS, au_features, detect_from_features,
                                 detect_geometric, frontalise)
from metrics.au.external import (OPENFACE_COLUMNS, PYFEAT_AU_MODEL, PYFEAT_INSTALL,
                                 PYFEAT_THRESHOLD, PyFeatAUDetector, occurrence_from_fex,
                                 read_openface_csv)
from metrics.au.metrics import (AU_CHOICES, BACKENDS, LABEL_SOURCES, AUAcc, AUF1, AUScore,
                                au_scores)

__all__ = [
    "ALIGN_POINTS", "AU_NAMES", "CHIN_REST_PERCENTILE", "FEATURE_POINTS", "GEOMETRIC_THRESHOLDS",
    "au_features", "detect_from_features", "detect_geometric", "frontalise",
    "OPENFACE_COLUMNS", "PYFEAT_AU_MODEL", "PYFEAT_INSTALL", "PYFEAT_THRESHOLD", "PyFeatAUDetector",
    "occurrence_from_fex", "read_openface_csv",
    "AU_CHOICES", "BACKENDS", "LABEL_SOURCES", "AUAcc", "AUF1", "AUScore", "au_scores",
]
