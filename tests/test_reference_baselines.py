import numpy as np
import pytest

from baselines import available_methods, build_method
from core.types import MethodInput
from core.errors import CheckpointError
from core.types import Clip


def make_clip(i: int, t: int = 40, opening_gain: float = 10.0) -> Clip:
    """A clip whose mouth (points 48-67) drops in proportion to a loud/quiet audio envelope."""
    rng = np.random.default_rng(i)
    envelope = (np.sin(np.linspace(0, 3 * np.pi, t)) > 0).astype(np.float64)
    audio = (rng.normal(0, 1, t * 640) * np.repeat(0.05 + 0.5 * envelope, 640)).astype(np.float32)
    base = rng.uniform(60, 200, size=(68, 2)).astype(np.float32)
    base[0], base[16] = (60, 120), (200, 120)  # jaw width 140
    lmk = np.repeat(base[None], t, axis=0)
    lmk[:, 48:68, 1] += opening_gain * envelope[:, None]
    frames = np.full((t, 32, 32, 3), i, np.uint8)
    return Clip(id=f"c{i}", speaker=f"s{i}", audio=audio, landmarks=lmk,
                frames_loader=lambda: frames)


def test_registry_lists_the_reference_baselines():
    assert {"ground_truth", "static", "mean_motion", "audio_energy"} <= set(available_methods())
    with pytest.raises(KeyError, match="known"):
        build_method("nope")


def test_static_repeats_identity_and_cannot_see_audio():
    clip = make_clip(1)
    method = build_method("static")
    inp = MethodInput.from_clip(clip, method.inputs)
    assert inp.audio is None and inp.ground_truth is None
    pred = method.predict(inp)
    assert np.array_equal(pred.landmarks, np.repeat(clip.landmarks[:1], clip.num_frames, 0))
    assert pred.frames.shape == clip.frames.shape and (pred.frames == clip.frames[0]).all()


def test_ground_truth_copies():
    clip = make_clip(2)
    method = build_method("ground_truth")
    pred = method.predict(MethodInput.from_clip(clip, method.inputs))
    assert np.array_equal(pred.landmarks, clip.landmarks) and np.array_equal(pred.frames, clip.frames)


def test_mean_motion_learns_the_mean_trajectory():
    train = [make_clip(i) for i in range(3)]
    method = build_method("mean_motion")
    method.fit(train, [])
    test = make_clip(9)
    pred = method.predict(MethodInput.from_clip(test, method.inputs))
    # every training clip moves its mouth down by 10 px on the same frames: the mean does too
    expected = test.landmarks[0][None] + (train[0].landmarks - train[0].landmarks[0])
    np.testing.assert_allclose(pred.landmarks, expected, atol=1e-3)


def test_audio_energy_follows_the_audio(tmp_path):
    train = [make_clip(i) for i in range(4)]
    method = build_method("audio_energy")
    method.fit(train, [])
    test = make_clip(7)
    pred = method.predict(MethodInput.from_clip(test, method.inputs))
    drop = pred.landmarks[:, 57, 1] - pred.landmarks[0, 57, 1]
    truth = test.landmarks[:, 57, 1] - test.landmarks[0, 57, 1]
    assert np.corrcoef(drop, truth)[0, 1] > 0.8
    assert np.allclose(pred.landmarks[:, 30], pred.landmarks[0, 30])  # the nose does not talk
    sha = method.save(tmp_path / "ae.npz")
    again = type(method).load(tmp_path / "ae.npz", method.config)
    np.testing.assert_array_equal(again.predict(MethodInput.from_clip(test, method.inputs)).landmarks,
                                  pred.landmarks)
    assert len(sha) == 64
    with pytest.raises(CheckpointError, match="quantile"):
        type(method).load(tmp_path / "ae.npz", type(method.config)(quantile=0.5))
