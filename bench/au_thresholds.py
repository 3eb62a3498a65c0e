"""`talkbench au-thresholds`: fit the geometric AU detector's thresholds on synthtalk.

The geometric AU detector (`metrics.au.detector`) calls an AU present where its landmark feature
exceeds a threshold of `GEOMETRIC_THRESHOLDS`. Those constants come from here: per AU the cut that
maximises F1 (`fit_threshold`) against synthtalk's exact AU labels on the exact 2D landmarks of
`FIT_SPEAKERS`, checked on `HELD_OUT_SPEAKERS` (and, with ``--dlib``, on dlib's landmarks on the
rendered frames). The command prints the per-AU F1 / accuracy table of `metrics.au.detector`'s
docstring and the dict to paste into it. It lives in the harness, next to `talkbench calibrate`,
because it builds a synthtalk corpus (`bench.data`); the metrics only read the constants.
"""

from __future__ import annotations

import argparse

import numpy as np

from metrics.au import (AU_NAMES, GEOMETRIC_THRESHOLDS, au_features, au_scores,
                        detect_from_features)


def fit_threshold(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The cut c maximising the F1 of `values > c` against `labels`: (c, F1).

    Candidates are midpoints between consecutive distinct values (and one below the smallest).
    Where several neighbouring candidates reach the best F1 (a plateau, e.g. perfectly separated
    classes), the middle of the widest such run is taken, the cut farthest from both classes.
    NaN values are ignored.
    """
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    keep = np.isfinite(v)
    v, y = v[keep], y[keep]
    if v.size == 0 or not y.any():
        raise ValueError("fitting needs finite values with at least one positive label")
    order = np.argsort(-v, kind="stable")
    v, y = v[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(v) != 0), v.size - 1]  # last index of each value
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    fn = y.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    # predicting positive for everything down to distinct[i]: the cut is below v[distinct[i]]
    lower = np.r_[v[distinct[1:]], v[-1] - 1.0]
    cuts = (v[distinct] + lower) / 2
    best = np.flatnonzero(f1 == f1.max())
    runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
    widths = [cuts[r[0]] - cuts[r[-1]] for r in runs]
    run = runs[int(np.argmax(widths))]
    return float((cuts[run[0]] + cuts[run[-1]]) / 2), float(f1[run[0]])


def fit_thresholds(features: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per AU: (threshold, F1 at it) fitted on N x 5 features against N x 5 exact labels."""
    return {name: fit_threshold(features[:, k], labels[:, k]) for k, name in enumerate(AU_NAMES)}


# --------------------------------------------------------------------------------------------
# Fitting the geometric thresholds on synthtalk (talkbench au-thresholds)
# --------------------------------------------------------------------------------------------

FIT_SPEAKERS = tuple(f"spk{i:02d}" for i in range(1, 9))  # fitted on these ...
HELD_OUT_SPEAKERS = tuple(f"spk{i:02d}" for i in range(9, 13))  # ... checked on these


def _corpus_features(clips, landmarks_of) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for clip in clips:
        lm, mask = landmarks_of(clip)
        f = au_features(lm, mask)
        ok = np.isfinite(f).all(axis=1)
        feats.append(f[ok])
        labels.append(np.asarray(clip.aus, dtype=bool)[ok])
    return np.concatenate(feats), np.concatenate(labels)


def fit_report(size: str | int = "small", seed: int = 0, dlib: bool = False) -> dict:
    """Fit `GEOMETRIC_THRESHOLDS` on synthtalk and measure the detector against the exact labels.

    Thresholds are fitted on the exact 2D landmarks of `FIT_SPEAKERS`; F1 and accuracy are then
    reported on those (fit), on the exact landmarks of `HELD_OUT_SPEAKERS` (held out), and, with
    `dlib`, on dlib's detections on the rendered frames of the held-out speakers (what frame-only
    methods are scored with). An AU without a positive label among the fitting frames keeps its
    stored threshold (listed in "not_fitted"). Returns {"thresholds": {...}, "not_fitted": [...],
    "rows": {AU: {"threshold", "fit", "held_out"[, "held_out_dlib"]}}, "frames": {...}}.
    """
    from bench.data.synthtalk import corpus

    clips = corpus.load_clips(corpus.build(size=size, seed=seed, progress=False))
    fit_clips = [c for c in clips if c.speaker in FIT_SPEAKERS]
    held_clips = [c for c in clips if c.speaker in HELD_OUT_SPEAKERS]

    def exact(clip):
        return clip.landmarks, None

    f_fit, y_fit = _corpus_features(fit_clips, exact)
    thresholds, not_fitted = {}, []
    for k, name in enumerate(AU_NAMES):
        if y_fit[:, k].any():
            thresholds[name] = round(fit_threshold(f_fit[:, k], y_fit[:, k])[0], 3)
        else:  # too small a corpus: keep the stored threshold
            thresholds[name] = GEOMETRIC_THRESHOLDS[name]
            not_fitted.append(name)
    sets = {"fit": (f_fit, y_fit), "held_out": _corpus_features(held_clips, exact)}
    if dlib:
        from faces.extractors import DlibExtractor

        extractor = DlibExtractor(upsample=1)

        def detected(clip):
            result = extractor.detect(clip.frames)
            clip.release_frames()
            return np.nan_to_num(result.landmarks), result.found

        sets["held_out_dlib"] = _corpus_features(held_clips, detected)
    rows: dict[str, dict] = {name: {"threshold": thresholds[name]} for name in AU_NAMES}
    for key, (f, y) in sets.items():
        scores = au_scores(detect_from_features(f, thresholds), y)
        for name in AU_NAMES:
            rows[name][key] = {"f1": scores[name].f1, "accuracy": scores[name].accuracy,
                               "positives": int(y[:, AU_NAMES.index(name)].sum())}
    return {"thresholds": thresholds, "not_fitted": not_fitted, "rows": rows,
            "frames": {key: int(len(f)) for key, (f, _) in sets.items()},
            "corpus": {"size": size, "seed": seed}}


def format_fit_report(report: dict) -> str:
    keys = [k for k in ("fit", "held_out", "held_out_dlib") if k in report["frames"]]
    head = "AU    threshold  " + "  ".join(f"{k + ' F1 / acc':>24}" for k in keys)
    lines = [head]
    for name in AU_NAMES:
        row = report["rows"][name]
        cells = "  ".join(f"{row[k]['f1']:>14.3f} / {row[k]['accuracy']:.3f}" for k in keys)
        lines.append(f"{name}  {row['threshold']:>9.3f}  {cells}")
    macro = "  ".join(
        f"{np.nanmean([report['rows'][n][k]['f1'] for n in AU_NAMES]):>14.3f} / "
        f"{np.mean([report['rows'][n][k]['accuracy'] for n in AU_NAMES]):.3f}" for k in keys)
    lines.append(f"mean  {'':>9}  {macro}")
    lines.append("frames: " + ", ".join(f"{k} {v}" for k, v in report["frames"].items()))
    if report.get("not_fitted"):
        lines.append("no positive label to fit (stored threshold kept): "
                     + ", ".join(report["not_fitted"]))
    lines.append("GEOMETRIC_THRESHOLDS = " + repr(report["thresholds"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- CLI
def _cmd_au_thresholds(args: argparse.Namespace) -> int:
    size: str | int = int(args.size) if str(args.size).isdigit() else args.size
    print(format_fit_report(fit_report(size, args.seed, args.dlib)))
    return 0


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register `talkbench au-thresholds [--size SIZE] [--seed N] [--dlib]`."""
    p = subparsers.add_parser(
        "au-thresholds",
        help="fit the geometric AU detector's thresholds on synthtalk's exact AU labels and "
             "report its per-AU F1 / accuracy")
    p.add_argument("--size", default="small", help="synthtalk corpus size (default small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dlib", action="store_true",
                   help="also score dlib's landmarks on the rendered held-out frames (slow)")
    p.set_defaults(func=_cmd_au_thresholds)
    return p
