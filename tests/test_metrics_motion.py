"""Head-motion metrics: Euler convention, PnP head pose, Diversity, Beat Align (metrics/motion.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.synthtalk import corpus, face
from metrics import available_metrics, build_metric
from core.types import ClipPair
from core.errors import MetricError
from faces.pose import FACE_TEMPLATE_MM, POSE_BACKENDS, RIGID_POINTS, build_pose_backend, euler_from_rotation, rotation_from_euler, solve_head_pose
from metrics.motion import audio_beats, beat_align_score, fill_gaps, head_speed, local_minima, motion_beats, pose_diversity

W = H = 256
FPS, SR = 25, 16000


def pinhole(points_mm: np.ndarray, pose: np.ndarray, size=(W, H), focal=1.0,
            distance=260.0) -> np.ndarray:
    """Project head-coordinate points (N x 3) with per-frame poses (T x 6: yaw, pitch, roll, tx, ty,
    tz mm) through a pinhole camera (focal = focal x width, centre at the frame centre); the head
    origin sits `distance` mm in front of the camera. T x N x 2 pixels."""
    rot = rotation_from_euler(pose[:, 0], pose[:, 1], pose[:, 2])  # T x 3 x 3
    cam = np.einsum("tij,nj->tni", rot, points_mm) + pose[:, None, 3:6]
    z = distance - cam[..., 2]  # z towards the viewer -> depth in front of the camera
    f = focal * size[0]
    return np.stack([f * cam[..., 0] / z + size[0] / 2, f * cam[..., 1] / z + size[1] / 2], -1)


def pose_track(t: int, amp=(6.0, 4.0, 3.0), periods=(50, 25, 10)) -> np.ndarray:
    """Sines over whole periods: std of each angle is amp / sqrt(2) exactly."""
    n = np.arange(t)
    pose = np.zeros((t, 6))
    for k, (a, p) in enumerate(zip(amp, periods)):
        pose[:, k] = a * np.sin(2 * np.pi * n / p + 0.3 * k)
    pose[:, 3] = 4 * np.sin(2 * np.pi * n / 25)  # translations do not count
    return pose


def pair_of(pred: dict, ref: dict | None = None, **kw) -> ClipPair:
    t = len(next(iter(pred.values())))
    ref = ref or {"landmarks": np.zeros((t, 68, 2))}
    return ClipPair("clip", pred, ref, **kw)


# ----------------------------------------------------------------------------- conventions

def test_registered_with_contract():
    assert {"Diversity", "BeatAlign"} <= set(available_metrics())
    for name in ("Diversity", "BeatAlign"):
        m = build_metric(name)
        assert m.higher_is_better and m.level == "clip" and m.needs == ("landmarks",)
        assert build_metric(name, {"pose_backend": "given"}).needs == ("pose",)
    assert sorted(POSE_BACKENDS) == ["given", "hopenet", "pnp"]


def test_euler_convention_matches_synthtalk():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-60, 60, (200, 3))
    ours = rotation_from_euler(*angles.T)
    theirs = face.rotation_matrix(*angles.T)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(euler_from_rotation(ours), angles, atol=1e-9)
    # positive yaw moves the nose tip (z > 0) to the image right, positive pitch the chin back
    # and up in z (a nod: the chin goes away from the camera), positive roll is clockwise
    nose, chin, right = np.array([0, 0, 30.0]), np.array([0, 110.0, 0]), np.array([50.0, 0, 0])
    assert (rotation_from_euler(10, 0, 0) @ nose)[0] > 0
    assert (rotation_from_euler(0, 10, 0) @ chin)[2] < 0
    assert (rotation_from_euler(0, 0, 10) @ right)[1] > 0  # x-axis point goes down: clockwise


def test_template_is_synthtalk_base_shape():
    np.testing.assert_allclose(FACE_TEMPLATE_MM, face.base_shape(), atol=0.006)
    assert FACE_TEMPLATE_MM.shape == (68, 3)


# ----------------------------------------------------------------------------- PnP head pose

def test_pnp_recovers_known_pose_exactly():
    pose = np.array([[0, 0, 0, 0, 0, 0], [20, -10, 5, 8, -6, 20], [-25, 15, -12, -10, 12, -15],
                     [35, 5, 20, 0, 0, 40], [-5, -20, -8, 5, 5, 0]], dtype=float)
    lm = pinhole(FACE_TEMPLATE_MM, pose)
    for points in (RIGID_POINTS, tuple(range(68))):
        angles, trans, ok = solve_head_pose(lm[:, list(points)], points, (W, H))
        assert ok.all()
        np.testing.assert_allclose(angles, pose[:, :3], atol=1e-4)
        # translation of the template origin, head-style camera coordinates (z towards viewer)
        np.testing.assert_allclose(trans, pose[:, 3:] + [0, 0, -260.0], atol=1e-2)


def test_pnp_within_a_degree_with_noise_and_another_face():
    """Landmarks of a synthtalk speaker (not the template), speaking, with 0.5 px detector noise."""
    identity, _ = corpus.speaker_identity(0, 3)
    rng = np.random.default_rng(1)
    t = 40
    pose = np.c_[rng.uniform(-20, 20, (t, 3)), rng.normal(0, 5, (t, 3))]
    motion = np.zeros((t, len(face.MOTION_NAMES)))
    motion[:, 0] = rng.uniform(0, 0.8, t)  # jaw opening: must not leak into pitch (rigid points)
    shape = face.deform(identity, motion)
    lm = np.stack([pinhole(shape[i], pose[i:i + 1])[0] for i in range(t)])
    lm += rng.normal(0, 0.5, lm.shape)
    angles, _, ok = solve_head_pose(lm[:, list(RIGID_POINTS)], RIGID_POINTS, (W, H))
    assert ok.all()
    err = np.abs(angles - pose[:, :3])
    assert err.max() < 2.5 and err.mean() < 1.0, err.mean(axis=0)


def test_pnp_skips_masked_and_broken_frames():
    pose = pose_track(6)
    lm = pinhole(FACE_TEMPLATE_MM, pose)
    lm[2] = np.nan
    mask = np.array([True, True, True, False, True, True])
    angles, _, ok = solve_head_pose(lm[:, list(RIGID_POINTS)], RIGID_POINTS, (W, H), mask)
    assert ok.tolist() == [True, True, False, False, True, True]
    assert np.isnan(angles[[2, 3]]).all()
    with pytest.raises(ValueError, match="at least 6"):
        solve_head_pose(lm[:, :5], range(5), (W, H))


def test_synthtalk_projection_needs_a_long_lens():
    """synthtalk projects weak-perspectively: pnp with a long focal recovers its pose std."""
    identity, _ = corpus.speaker_identity(0, 1)
    pose = pose_track(100, amp=(4.0, 3.0, 2.0))
    lm = face.project(np.repeat(identity.shape[None], 100, axis=0), pose)
    given = pose_diversity(pose[:, :3])
    long_lens = build_metric("Diversity", {"pnp_focal": 30, "image_size": [W, H]})
    default = build_metric("Diversity", {"image_size": [W, H]})
    pair = pair_of({"landmarks": lm})
    assert long_lens.clip_value(pair) == pytest.approx(given, rel=0.03)
    assert 0.75 * given < default.clip_value(pair) < 0.95 * given  # documented under-estimate


# ----------------------------------------------------------------------------- Diversity

def test_diversity_of_sines_by_hand():
    pose = pose_track(100)
    expected = (6.0 + 4.0 + 3.0) / 3 / np.sqrt(2)
    assert pose_diversity(pose[:, :3]) == pytest.approx(expected, rel=1e-12)
    m = build_metric("Diversity", {"pose_backend": "given"})
    assert m.clip_value(pair_of({"pose": pose})) == pytest.approx(expected, rel=1e-12)
    # a constant offset or translation does not change it
    shifted = pose + [10, -5, 3, 50, 50, 50]
    assert m.clip_value(pair_of({"pose": shifted})) == pytest.approx(expected, rel=1e-12)
    still = np.zeros((10, 6))
    assert m.clip_value(pair_of({"pose": still})) == 0.0


def test_diversity_pnp_matches_projected_pose():
    pose = pose_track(100)
    lm = pinhole(FACE_TEMPLATE_MM, pose)
    frames = np.zeros((100, H, W, 3), np.uint8)  # the camera comes from the frame size
    m = build_metric("Diversity")
    value = m.clip_value(pair_of({"landmarks": lm, "frames": frames}))
    assert value == pytest.approx((6.0 + 4.0 + 3.0) / 3 / np.sqrt(2), abs=1e-3)


def test_diversity_point_subset_and_mask():
    pose = pose_track(50)
    lm = pinhole(FACE_TEMPLATE_MM, pose)
    points = tuple(range(27, 48))  # nose and eyes only
    m = build_metric("Diversity", {"image_size": [W, H]})
    full = m.clip_value(pair_of({"landmarks": lm}))
    sub = m.clip_value(pair_of({"landmarks": lm[:, list(points)]}, points=points))
    assert sub == pytest.approx(full, abs=1e-3)
    mask = np.zeros(50, bool)
    mask[:25] = True
    masked = m.clip_value(pair_of({"landmarks": lm}, frame_mask=mask))
    assert masked == pytest.approx(pose_diversity(pose[:25, :3]), abs=1e-3)
    with pytest.raises(MetricError, match="at least 2 frames"):
        m.clip_value(pair_of({"landmarks": lm}, frame_mask=np.eye(50, dtype=bool)[0]))
    with pytest.raises(MetricError, match="at least 6"):
        m.clip_value(pair_of({"landmarks": lm[:, 48:]}, points=tuple(range(48, 68))))


def test_diversity_errors():
    lm = pinhole(FACE_TEMPLATE_MM, pose_track(10))
    m = build_metric("Diversity")
    with pytest.raises(MetricError, match="image_size"):
        m.clip_value(pair_of({"landmarks": lm}))  # no frames anywhere, no image_size
    ref_frames = {"landmarks": np.zeros((10, 68, 2)), "frames": np.zeros((10, H, W, 3), np.uint8)}
    assert m.clip_value(pair_of({"landmarks": lm}, ref_frames)) > 0  # size from the reference
    with pytest.raises(MetricError, match="landmarks"):
        m.clip_value(pair_of({"pose": pose_track(10)}))
    with pytest.raises(MetricError, match="shape"):
        m.clip_value(pair_of({"landmarks": lm[:, :60]}))
    given = build_metric("Diversity", {"pose_backend": "given"})
    with pytest.raises(MetricError, match="outputs none"):
        given.clip_value(pair_of({"landmarks": lm}))
    with pytest.raises(MetricError, match="T x 6"):
        given.clip_value(pair_of({"pose": np.zeros((10, 2))}))
    with pytest.raises(MetricError, match="boolean"):
        m.clip_value(pair_of({"landmarks": lm}, frame_mask=np.ones(10), meta={}))


@pytest.mark.parametrize("name", ["Diversity", "BeatAlign"])
@pytest.mark.parametrize("params, match", [
    ({"pose_backend": "guess"}, "pose_backend"),
    ({"pnp_points": "mouth"}, "pnp_points"),
    ({"pnp_focal": 0}, "pnp_focal"),
    ({"image_size": [256]}, "image_size"),
    ({"image_size": [256, -1]}, "image_size"),
    ({"colour": 1}, "unknown parameter"),
])
def test_bad_params_named(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_metric(name, params)


@pytest.mark.parametrize("params, match", [
    ({"sigma": 0}, "sigma"), ({"sigma": True}, "sigma"), ({"smooth_sigma": -1}, "smooth_sigma"),
    ({"hpss": "yes"}, "hpss"),
])
def test_bad_beat_align_params(params, match):
    with pytest.raises(ValueError, match=match):
        build_metric("BeatAlign", params)


def test_pose_backend_registry():
    assert build_pose_backend("given").needs == ("pose",)
    assert build_pose_backend("pnp", "all", [320, 240], 2.0).focal == 2.0
    assert build_pose_backend("hopenet").needs == ("frames",)
    with pytest.raises(KeyError, match="hopenet"):  # the message lists the known backends
        build_pose_backend("guess")


# ----------------------------------------------------------------------------- Beat Align pieces

def test_beat_align_score_by_hand():
    motion = np.array([10, 30, 52])
    audio = np.array([10, 31, 45, 60])
    # nearest motion beats: 10 (d 0), 30 (d 1), 52 (d 7), 52 (d 8)
    expected = np.mean(np.exp(-np.array([0, 1, 49, 64]) / 18.0))
    assert beat_align_score(motion, audio, 3.0) == pytest.approx(expected, rel=1e-12)
    assert beat_align_score(motion, audio, 6.0) == pytest.approx(
        np.mean(np.exp(-np.array([0, 1, 49, 64]) / 72.0)), rel=1e-12)
    assert beat_align_score([], audio) == 0.0
    assert beat_align_score(audio, audio) == 1.0
    with pytest.raises(MetricError, match="no audio beat"):
        beat_align_score(motion, [])


def test_local_minima_semantics():
    assert local_minima([3, 1, 2, 0, 5]).tolist() == [1, 3]
    assert local_minima([0, 1, 2]).tolist() == []  # an edge is never a beat
    assert local_minima([2, 1, 1, 2]).tolist() == []  # a flat bottom is no strict minimum
    assert local_minima(np.zeros(20)).tolist() == []
    assert local_minima([1, 0]).tolist() == []


def _swing(t: int, first_extremum: float, period: int = 30, amp: float = 5.0) -> np.ndarray:
    """Yaw swinging with turning points (zero speed) at first_extremum + k * period / 2."""
    n = np.arange(t)
    angles = np.zeros((t, 3))
    angles[:, 0] = amp * np.cos(2 * np.pi * (n - first_extremum) / period)
    return angles


def test_motion_beats_at_turning_points():
    # turning points at 10.5, 25.5, ...: the speed step t -> t+1 straddles them at t = 10, 25, ...
    angles = _swing(150, 10.5)
    expected = np.arange(10, 149, 15)
    for sigma in (0.0, 5.0):
        beats = motion_beats(angles, sigma)
        interior = beats[(beats > 5) & (beats < 143)]
        assert interior.tolist() == expected[(expected > 5) & (expected < 143)].tolist()
    assert head_speed(angles).shape == (149,)
    assert motion_beats(np.zeros((50, 3)), 5.0).size == 0  # a still head has no beat


def test_fill_gaps():
    angles = np.arange(12, dtype=float).reshape(4, 3)
    mask = np.array([False, True, False, True])
    filled = fill_gaps(angles, mask)
    np.testing.assert_allclose(filled[0], angles[1])
    np.testing.assert_allclose(filled[2], (angles[1] + angles[3]) / 2)
    with pytest.raises(MetricError):
        fill_gaps(angles, np.zeros(4, bool))


# ----------------------------------------------------------------------------- Beat Align, end to end

T_BEAT = 150
CLICKS = np.arange(10, T_BEAT, 15)  # a click every 0.6 s (100 bpm)


@pytest.fixture(scope="module")
def click_track() -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = np.zeros(T_BEAT * SR // FPS, np.float32)
    hop = SR // FPS
    for frame in CLICKS:
        burst = rng.normal(size=200) * np.exp(-np.arange(200) / 40)
        audio[frame * hop: frame * hop + 200] += burst.astype(np.float32)
    return audio


@pytest.fixture(scope="module")
def heard(click_track) -> np.ndarray:
    return audio_beats(click_track, SR, FPS, T_BEAT)


def test_audio_beats_on_clicks(heard, click_track):
    assert len(heard) >= len(CLICKS) - 2
    assert np.abs(heard[:, None] - CLICKS[None]).min(axis=1).max() <= 1
    assert np.array_equal(audio_beats(click_track, SR, FPS, 100), heard[heard < 100])
    # 30 fps: hop 533 samples, beats mapped by time onto the same instants (within a frame)
    at30 = audio_beats(click_track, SR, 30.0, T_BEAT * 30 // 25)
    assert np.abs(at30[:, None] / 30.0 - CLICKS[None] / 25.0).min(axis=1).max() <= 1.5 / 30


def test_beat_align_end_to_end(click_track, heard):
    m = build_metric("BeatAlign", {"pose_backend": "given"})

    def score(first_extremum: float) -> float:
        pose = np.c_[_swing(T_BEAT, first_extremum), np.zeros((T_BEAT, 3))]
        return m.clip_value(pair_of({"pose": pose}, audio=click_track, fps=FPS, sample_rate=SR))

    # head turning exactly on the clicks: motion beats at 10, 25, ..., 130 (the turning point at
    # 145 is 3 steps from the end, where the reflected smoothing moves the minimum to the border)
    moved = motion_beats(_swing(T_BEAT, 10.5), 5.0)
    assert moved.tolist() == list(range(10, 131, 15))
    assert score(10.5) == pytest.approx(beat_align_score(moved, heard, 3.0), rel=1e-12)
    on_beat = np.isin(heard, moved)
    assert on_beat.sum() >= len(heard) - 1  # every audio beat but (at most) the one at 145
    assert score(10.5) >= on_beat.mean()
    # three frames late: every beat is 3 frames off -> exp(-9 / 18)
    late = motion_beats(_swing(T_BEAT, 13.5), 5.0)
    assert score(13.5) == pytest.approx(beat_align_score(late, heard, 3.0), rel=1e-12)
    d = np.abs(heard[:, None] - late[None]).min(axis=1)
    assert score(13.5) == pytest.approx(np.mean(np.exp(-d ** 2 / 18.0)), rel=1e-12)
    assert 0.5 < score(13.5) < 0.7


def test_beat_align_static_head_scores_zero_with_note(click_track):
    m = build_metric("BeatAlign", {"pose_backend": "given"})
    pair = pair_of({"pose": np.zeros((T_BEAT, 6))}, audio=click_track, fps=FPS, sample_rate=SR)
    assert m.clip_value(pair) == 0.0
    assert "no motion beat" in m.notes["clip"]


def test_beat_align_errors(click_track):
    m = build_metric("BeatAlign", {"pose_backend": "given"})
    pose = np.c_[_swing(T_BEAT, 10.5), np.zeros((T_BEAT, 3))]
    with pytest.raises(MetricError, match="audio"):
        m.clip_value(pair_of({"pose": pose}, audio=None))
    with pytest.raises(MetricError, match="no audio beat"):
        m.clip_value(pair_of({"pose": pose}, audio=np.zeros_like(click_track), fps=FPS))
    with pytest.raises(MetricError, match="mono"):
        m.clip_value(pair_of({"pose": pose}, audio=np.zeros((10, 2), np.float32)))
    with pytest.raises(MetricError, match="no frame has a head pose"):
        m.clip_value(pair_of({"pose": np.full((T_BEAT, 6), np.nan)}, audio=click_track))


def test_beat_align_pnp_with_missing_frames(click_track):
    """pnp backend: masked frames are interpolated and noted; the score equals the given-pose one."""
    angles = _swing(T_BEAT, 10.5)
    pose = np.c_[angles, np.zeros((T_BEAT, 3))]
    lm = pinhole(FACE_TEMPLATE_MM, pose)
    mask = np.ones(T_BEAT, bool)
    mask[[3, 70]] = False
    m = build_metric("BeatAlign", {"image_size": [W, H]})
    value = m.clip_value(pair_of({"landmarks": lm}, audio=click_track, frame_mask=mask))
    given = build_metric("BeatAlign", {"pose_backend": "given"})
    assert value == pytest.approx(given.clip_value(pair_of({"pose": pose}, audio=click_track)),
                                  abs=0.02)
    assert "2 of 150 frame(s)" in m.notes["clip"]


def test_beat_align_note_does_not_leak_to_the_next_method():
    """One metric instance scores every method's clip of the same id; a note belongs to one call."""
    from metrics import build_metric
    from core.types import ClipPair

    t, fps, sr = 75, 25.0, 16000
    rng = np.random.default_rng(0)
    audio = np.zeros(t * 640, np.float32)
    for k in range(0, t * 640, 8000):  # clicks every half second: audio beats
        audio[k:k + 200] = rng.normal(0, 0.5, 200)
    metric = build_metric("BeatAlign", {"pose_backend": "given"})
    still = np.zeros((t, 6))
    metric.clip_value(ClipPair("c", {"pose": still}, {}, audio=audio, fps=fps, sample_rate=sr))
    assert "no motion beat" in metric.notes["c"]
    nodding = np.zeros((t, 6))
    nodding[:, 1] = 5 * np.sin(np.arange(t) / fps * 2 * np.pi * 1.0)
    metric.clip_value(ClipPair("c", {"pose": nodding}, {}, audio=audio, fps=fps, sample_rate=sr))
    assert "c" not in metric.notes


def test_audio_beats_found_once_per_clip_with_the_scorers_cache(tmp_path, monkeypatch):
    """With a cache, a clip's audio beats are found once for every row and every process (a new
    process is simulated by emptying the in-memory memo); the values are librosa's."""
    import metrics.motion as motion
    from core.cache import Cache

    audio = (np.random.default_rng(3).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    audio[::4000] = 1.0  # clicks: beats to find
    real, calls = motion.audio_beats, []
    monkeypatch.setattr(motion, "audio_beats", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = real(audio, 16000, 25.0, 50, True)
    cache = Cache(tmp_path)
    for _ in range(2):
        monkeypatch.setattr(motion, "_AUDIO_BEATS", {})
        got = motion.cached_audio_beats(audio, 16000, 25.0, 50, True, cache=cache)
        assert np.array_equal(got, plain)
    assert len(calls) == 1
