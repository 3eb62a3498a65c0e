import numpy as np
import pytest

from core.cache import Cache
from core.hashing import key_of
from core.errors import CheckpointError
from core.checkpoint import load_checkpoint, save_checkpoint
from bench.stats import bootstrap_ci
from bench.data.video import VideoError, read_video, write_mp4


def test_checkpoint_round_trip_and_refusals(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "m.ckpt.npz"
    sha = save_checkpoint(path, "m", {"lr": 0.1}, state)
    assert sha == save_checkpoint(tmp_path / "again.npz", "m", {"lr": 0.1}, state)  # deterministic
    config, loaded = load_checkpoint(path, "m", {"lr": 0.1})
    assert config == {"lr": 0.1} and np.array_equal(loaded["w"], state["w"])
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.1 vs requested 0.2"):
        load_checkpoint(path, "m", {"lr": 0.2})
    with pytest.raises(CheckpointError, match="for method 'm'"):
        load_checkpoint(path, "other")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz", "m")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "bad.npz", "m")


def test_bootstrap_ci_hand_cases():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    lo, hi = bootstrap_ci(list(range(100)), samples=2000, seed=1)
    # the mean of 0..99 is 49.5 with standard error 29.01/sqrt(100) = 2.9: the CI is about ±5.7
    assert 43 < lo < 45.5 and 53.5 < hi < 56
    assert bootstrap_ci(list(range(100)), seed=3) == bootstrap_ci(list(range(100)), seed=3)
    lo, hi = bootstrap_ci([float("inf"), float("inf")])
    assert lo == hi == float("inf")


def test_cache_is_keyed_by_content(tmp_path):
    cache = Cache(tmp_path)
    k1, k2 = key_of("a", {"x": 1}), key_of("a", {"x": 2})
    assert k1 != k2 and k1 == key_of("a", {"x": 1})
    cache.put_json("ns", k1, {"value": 1.5})
    assert cache.get_json("ns", k1) == {"value": 1.5} and cache.get_json("ns", k2) is None
    path = next((tmp_path / "ns").rglob("*.json"))
    path.write_text('{"value": 1.')  # a write cut short by a kill is recomputed, not trusted
    assert cache.get_json("ns", k1) is None


def test_video_round_trip_keeps_audio_aligned(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((25, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48] = np.linspace(40, 220, 25).astype(np.uint8)[:, None, None, None]
    audio = np.convolve(rng.normal(0, 0.1, 16000), np.ones(4) / 4, mode="same").astype(np.float32)
    write_mp4(tmp_path / "v.mp4", frames, 25, audio, 16000)
    video = read_video(tmp_path / "v.mp4")
    assert video.frames.shape == frames.shape and video.fps == 25 and video.sample_rate == 16000
    assert np.abs(video.frames.astype(int) - frames).mean() < 3
    seg = audio[2000:10000]
    lags = range(-1500, 1500)
    best = max(lags, key=lambda k: float(np.dot(video.audio[2000 + k:10000 + k], seg)))
    assert best == 0  # AAC priming is trimmed: sound and picture stay in sync


def test_unreadable_video_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VideoError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


def test_gap_filled_reference_frames_are_left_out_of_landmark_metrics(tmp_path):
    """Prepared real clips interpolate the landmarks of frames where no face was found; those
    frames carry landmarks_found False, survive windowing, and no landmark metric scores them."""
    from core.types import Prediction
    from core.cache import Cache
    from core.types import Clip
    from bench.data.clips import window_clip
    from bench.protocol import load_protocol
    from bench.scoring import Scorer
    from metrics import build_metric

    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 200, (10, 68, 2)).astype(np.float32)
    found = np.ones(10, bool)
    found[[3, 7]] = False
    filled = truth.copy()
    filled[[3, 7]] += 40.0  # interpolated values, far from what the face really did
    clip = Clip("c", "s", np.zeros(6400, np.float32), filled, landmarks_found=found)
    scorer = Scorer(load_protocol("synthtalk"), [clip], cache=Cache(tmp_path))
    pair = scorer.pair(clip, Prediction("c", landmarks=truth), "key")
    np.testing.assert_array_equal(pair.frame_mask, found)
    assert build_metric("F-LD").clip_value(pair) == 0.0  # the two filled frames would add 8 px

    windows = window_clip(clip, {"mode": "fixed", "seconds": 0.2, "hop": 0.2})
    assert [w.landmarks_found.tolist() for w in windows] == [found[i:i + 5].tolist() for i in (0, 5)]


def test_set_level_bootstrap_resamples_clips_like_the_clip_level_one():
    """The resamples of a set-level CI are those of `bootstrap_ci`: with the mean as the set
    statistic the two intervals are identical."""
    from bench.stats import bootstrap_indices, percentile_interval

    x = np.random.default_rng(4).normal(size=17)
    idx = bootstrap_indices(len(x), 500, 7)
    assert percentile_interval(x[idx].mean(axis=1)) == bootstrap_ci(x, 500, 7)
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, np.nan])) == (1.0, 2.0)  # no-value resamples left out


def test_fid_resamples_from_cached_features_equal_the_recomputed_values():
    """FID's fast resampling (weighted distinct rows) matches the set value of each resample."""
    from metrics.fid import FID

    fid = object.__new__(FID)  # the statistics only: no Inception network needed
    fid.params, fid.last_notes, fid.last_counts = {"max_frames_per_clip": None}, [], {}
    rng = np.random.default_rng(0)
    parts = [(rng.normal(0.3, 0.2, (n, 2048)), rng.normal(0.35, 0.2, (n + 1, 2048))) for n in (3, 5, 4, 6)]
    idx = rng.integers(0, len(parts), size=(6, len(parts)))
    idx[0] = 0  # one clip repeated: 3 distinct generated frames, still a value
    fast = fid.resampled_set_values(parts, idx)
    slow = [fid.set_value_from_parts([parts[i] for i in row]) for row in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_result_files_carry_a_schema_version(tmp_path):
    from bench.results import ResultSchemaError, read_result, read_results, to_frame, write_result

    result = {"kind": "method", "row": "m", "protocol": "p",
              "test_clips": {"c1": {"speaker": "s1", "emotion": "happy", "intensity": 2},
                             "c2": {"speaker": "s2", "emotion": "sad", "intensity": 1}},
              "metrics": {"M-LD": {"per_clip": {"c1": 1.0, "c2": 3.0}, "higher_is_better": False},
                          "FID": {"per_clip": {}, "level": "set", "value": 9.0}}}
    write_result(tmp_path / "m.json", result)
    assert read_result(tmp_path / "m.json")["schema_version"] >= 2
    frame = to_frame(tmp_path)
    assert frame.to_dict("records") == [
        {"row": "m", "clip": "c1", "metric": "M-LD", "value": 1.0, "speaker": "s1", "emotion": "happy", "intensity": 2},
        {"row": "m", "clip": "c2", "metric": "M-LD", "value": 3.0, "speaker": "s2", "emotion": "sad", "intensity": 1}]
    assert read_results(tmp_path).metric_info()["M-LD"]["higher_is_better"] is False
    (tmp_path / "old.json").write_text('{"kind": "method", "protocol": "p", "metrics": {}}')
    with pytest.raises(ResultSchemaError, match="no schema_version.*rerun `talkbench run p`"):
        read_results(tmp_path)


def test_au_resamples_from_confusion_counts_equal_the_recomputed_values():
    from metrics import build_metric
    from metrics.base import Metric

    rng = np.random.default_rng(0)
    parts = [(rng.random((12, 5)) > 0.7, rng.random((12, 5)) > 0.6) for _ in range(7)]
    parts[2] = (np.zeros((12, 5), bool), np.zeros((12, 5), bool))  # no AU shown: undefined F1s
    idx = np.random.default_rng(1).integers(0, 7, size=(50, 7))
    idx[0] = 2  # a resample of that clip only: F1 undefined for every AU -> no value
    for name, params in (("AU-F1", {}), ("AU-Acc", {}), ("AU-F1", {"au": "AU25"})):
        m = build_metric(name, params)
        np.testing.assert_array_equal(m.resampled_set_values(parts, idx),
                                      Metric.resampled_set_values(m, parts, idx))
    assert np.isnan(build_metric("AU-F1").resampled_set_values(parts, idx)[0])
