"""Metric sanity checks (bench/sanity.py): the verdict logic on hand-made numbers, the perturbations,
and the checks end to end on 2 synthtalk clips with a subset of the metrics."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from bench import sanity
from bench.data.synthtalk import corpus
from bench.protocol import load_protocol
from bench.report import write_report
from bench.results import write_result


@pytest.fixture(scope="module")
def clips():
    root = corpus.build(size=1, seed=0, progress=False)
    return corpus.load_clips(root)[:2]


def test_verdicts_on_hand_made_numbers():
    v = sanity.verdict
    assert v("down", 30.0, 25.0)[0] == "pass" and v("down", 30.0, 30.0)[0] == "FAIL"
    assert v("down", 30.0, 31.0)[0] == "FAIL"
    assert v("up", 0.0, 1.2)[0] == "pass" and v("up", 1.0, 0.9)[0] == "FAIL"
    assert v("up", 0.0, 1.2, amount=1.25)[0] == "pass"
    assert v("up", 0.0, 2.0, amount=1.25)[0] == "FAIL"  # rose, but far more than the noise explains
    assert v("-> 0", 0.5, 0.01)[0] == "pass" and v("-> 0", 0.5, 0.2)[0] == "FAIL"
    assert v("-> 0", 0.0, 0.0)[0] == "unavailable"
    assert v("changes", 0.2, 0.0)[0] == "pass" and v("changes", 0.2, 0.2)[0] == "FAIL"
    assert v("+k", 0.0, 3.0, amount=3)[0] == "pass" and v("+k", 0.0, 2.0, amount=3)[0] == "pass"
    assert v("+k", 0.0, 0.5, amount=3)[0] == "FAIL" and v("+k", 0.0, 6.0, amount=3)[0] == "FAIL"
    assert v("down", None, 1.0)[0] == "unavailable" and v("up", 1.0, math.nan)[0] == "unavailable"
    with pytest.raises(ValueError):
        v("sideways", 1.0, 2.0)


def test_perturbations(clips):
    settings = sanity.Settings(shift_frames=2)
    audio = np.arange(1, 3001, dtype=np.float32)
    delayed = sanity.delay_audio(audio, 2)
    assert len(delayed) == len(audio) and not delayed[:1280].any() and delayed[1280] == audio[0]
    shift = sanity.perturb("audio_shift", clips, settings)
    (c0, p0), (c1, p1) = shift.original[0], shift.perturbed[0]
    assert p0 is p1 and np.array_equal(c1.audio[1280:], c0.audio[:-1280])
    frozen = sanity.perturb("frozen_pose", clips, settings)
    orig, pert = frozen.original[0][1], frozen.perturbed[0][1]
    assert np.allclose(pert.pose, pert.pose[0]) and not np.allclose(orig.landmarks, pert.landmarks)
    still = sanity.perturb("mouth_still", clips, settings).perturbed[0][1]
    gap = still.landmarks[:, 66, 1] - still.landmarks[:, 62, 1]
    assert gap.std() < 0.1 * (orig.landmarks[:, 66, 1] - orig.landmarks[:, 62, 1]).std()
    codec = sanity.perturb("codec", clips[:1], settings)
    (c_h264, p_h264), (c_mpeg4, p_mpeg4) = codec.original[0], codec.perturbed[0]
    assert p_h264.fields() == {"frames"} and p_h264.frames.shape == clips[0].frames.shape
    assert len(c_h264.audio) == len(c_mpeg4.audio) == len(clips[0].audio)
    for frames in (p_h264.frames, p_mpeg4.frames):  # close to the truth, not equal to it
        err = np.mean((frames.astype(float) - clips[0].frames.astype(float)) ** 2)
        assert 0 < err < 100
    assert not np.array_equal(p_h264.frames, p_mpeg4.frames)
    assert np.corrcoef(c_h264.audio, clips[0].audio)[0, 1] > 0.9
    # data without 3D landmarks: the checks that need them say so
    flat = [replace(c, landmarks3d=None) for c in clips]
    assert "no 3D landmarks" in sanity.perturb("frozen_pose", flat, settings).unavailable


def test_checks_end_to_end_on_two_clips(clips, tmp_path):
    protocol = load_protocol("synthtalk")
    keep = {"M-LD", "M-LVD", "LMD", "PSNR", "CPBD", "Diversity", "BeatAlign", "AU-F1", "LSE-C"}
    sub = replace(protocol, metrics=tuple(s for s in protocol.metrics
                                          if s.label in keep))  # the official LSE-C only
    rows = sanity.run_checks(sub, clips, sanity.Settings(clips=2),
                             checks=tuple(c for c in sanity.CHECKS if c != "codec"))
    by = {(r.check, r.metric): r for r in rows}
    for key in [("blur", "PSNR"), ("blur", "CPBD"), ("landmark_jitter", "M-LD"),
                ("landmark_jitter", "M-LVD"), ("landmark_jitter", "LMD"), ("frozen_pose", "Diversity"),
                ("frozen_pose", "BeatAlign"), ("mouth_still", "AU-F1")]:
        assert by[key].verdict == "pass", (key, by[key])
    jitter = by[("landmark_jitter", "M-LD")]
    assert jitter.original == 0 and jitter.perturbed == pytest.approx(math.sqrt(math.pi / 2), rel=0.1)
    assert by[("blur", "PSNR")].original == 100.0 and by[("blur", "PSNR")].perturbed < 40
    # without syncnet_v2.model the audio-shift rows are unavailable with the download command,
    # and the AV-offset twin of LSE-C was added
    for metric in ("LSE-C", "AV-offset"):
        row = by[("audio_shift", metric)]
        assert row.verdict == "unavailable" and "talkbench weights download syncnet_v2" in row.reason

    # the table, the JSON and the report section
    table = sanity.format_table(rows)
    assert _cells(table[0])[:2] == ["Check", "Metric"] and len(table) == len(rows) + 2
    out = tmp_path / "results" / "synthtalk"
    out.mkdir(parents=True)
    write_result(out / "sanity.json", {"kind": "sanity", "protocol": "synthtalk",
                                       "clips": [c.id for c in clips], "settings": vars(sanity.Settings()),
                                       "summary": {"pass": 8}, "rows": [vars(r) for r in rows]})
    report = write_report(protocol, out, figures=False).read_text()
    assert "## Metric sanity checks" in report
    assert ["blur", "PSNR", "100.000"] in [_cells(line)[:3] for line in report.splitlines()]


def test_codec_check_measures_every_metric(clips):
    """The codec check reports each metric's change , no direction."""
    protocol = load_protocol("synthtalk")
    sub = replace(protocol, metrics=tuple(s for s in protocol.metrics if s.label in {"PSNR", "SSIM"}))
    rows = sanity.run_checks(sub, clips[:1], sanity.Settings(clips=1), checks=("codec",))
    assert {r.metric for r in rows} == {"PSNR", "SSIM"}
    for row in rows:
        assert row.verdict == "measured" and row.original is not None and row.perturbed != row.original
    psnr = next(r for r in rows if r.metric == "PSNR")
    assert 30 < psnr.original < 100.0  # H.264 already moved the frames, a little


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]
