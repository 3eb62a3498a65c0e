"""Parity of talkbench's FVD with the cd-fvd package, and its direction under a perturbation.

Reference: ``cdfvd.fvd.cdfvd("i3d", ckpt_path=FILE).compute_fvd(real, fake)`` -- the package's own
network class, preprocessing (``preprocess_i3d``), ``FeatureStats`` and ``scipy.linalg.sqrtm``
distance -- with ``FILE`` a random-initialised ``InceptionI3d(400)`` state dict written at test
time in the format of ``i3d_pretrained_400.pt`` (cd-fvd loads it instead of downloading). talkbench's
FVD reads the same file through ``core.weights.resolve`` and runs on the same uint8 videos.

Measured (cd-fvd 0.1.1, torch 2.14 CPU, 3 vs 3 videos of 16 frames 32x40): FVD 16.6 against
cd-fvd's value, 2.3e-7 relative; features within 1e-5 of cd-fvd's. Tolerance 1e-4 relative.

Direction (random I3D, so only the direction is meaningful): the FVD of the reference videos
against themselves with light noise (sigma 2) is smaller than against the same videos blurred
(sigma 3 px) and temporally shuffled.
"""

import numpy as np
import pytest

from bench.calibrate import cdfvd_reference, fvd_video_sets, random_i3d
from core.errors import MetricError, MetricUnavailable
from core.types import ClipPair
from metrics import build_metric
from metrics.fvd import clip_starts, fvd_from_features

pytest.importorskip("cdfvd")
pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-4


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fvd") / "i3d_pretrained_400.pt"
    random_i3d(path)
    return path


@pytest.fixture(scope="module")
def fvd(i3d_file):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_WEIGHTS_I3D_KINETICS400", str(i3d_file))
        return build_metric("FVD")


def test_parity_with_cd_fvd(fvd, i3d_file):
    pred, ref = fvd_video_sets()
    expected, ref_feats = cdfvd_reference(i3d_file, pred, ref)
    parts = [fvd.clip_parts(ClipPair(f"c{i}", {"frames": p}, {"frames": r}))
             for i, (p, r) in enumerate(zip(pred, ref))]
    value = fvd.set_value_from_parts(parts)
    assert value > 1.0  # the two sets differ, so parity is not 0 == 0
    assert value == pytest.approx(expected, rel=REL)
    ours = np.concatenate([p for p, _ in parts])
    assert np.abs(ours - ref_feats).max() <= 1e-4 * np.abs(ref_feats).max()
    assert fvd.last_counts == {"videos": 3, "pred_clips": 3, "ref_clips": 3}
    assert any("rank-deficient" in n for n in fvd.last_notes)


def test_blur_and_shuffle_increase_fvd(fvd):
    import cv2

    _, ref = fvd_video_sets(n=2, seed=1)
    rng = np.random.default_rng(0)
    light = [np.clip(v + rng.normal(0, 2, v.shape), 0, 255).astype(np.uint8) for v in ref]
    strong = [np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in v[rng.permutation(len(v))]])
              for v in ref]
    f_ref, f_light, f_strong = (fvd.features(np.stack(v)) for v in (ref, light, strong))
    near, far = fvd_from_features(f_light, f_ref), fvd_from_features(f_strong, f_ref)
    assert fvd_from_features(f_ref, f_ref) == pytest.approx(0.0, abs=1e-6 * far)
    assert near < far


def test_gram_route_equals_the_covariance_route():
    from metrics.fid import frechet_distance
    from metrics.fvd import biased_statistics

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 400)), rng.normal(0.3, 1.2, size=(5, 400))
    expected = frechet_distance(*biased_statistics(a), *biased_statistics(b))
    # rank-deficient: the covariance route adds ~1e-8 from the square roots of zero eigenvalues
    assert fvd_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    big_a, big_b = rng.normal(size=(450, 400)), rng.normal(size=(420, 400))  # covariance route
    assert fvd_from_features(big_a, big_b) == pytest.approx(
        frechet_distance(*biased_statistics(big_a), *biased_statistics(big_b)), rel=1e-12)


def test_resampling_is_quiet_and_matches(fvd, caplog):
    rng = np.random.default_rng(4)
    parts = [(rng.normal(size=(2, 400)), rng.normal(size=(2, 400))) for _ in range(4)]
    indices = np.array([[0, 1, 2, 3], [0, 0, 1, 2], [3, 3, 3, 3]])
    with caplog.at_level("WARNING"):
        values = fvd.resampled_set_values(parts, indices)
    assert not caplog.records
    assert values[0] == pytest.approx(fvd.set_value_from_parts(parts), rel=1e-12)
    assert values[1] == pytest.approx(fvd.set_value_from_parts([parts[i] for i in (0, 0, 1, 2)]),
                                      rel=1e-12)
    assert np.isfinite(values).all()


def test_clip_windows_and_too_few_clips(fvd):
    assert clip_starts(40, 16, 16, None) == [0, 16]
    assert clip_starts(40, 16, 8, 2) == [0, 8]
    assert clip_starts(15, 16, 16, None) == []
    short = ClipPair("s", {"frames": np.zeros((10, 32, 32, 3), np.uint8)},
                     {"frames": np.zeros((10, 32, 32, 3), np.uint8)})
    with pytest.raises(MetricError, match="fewer than clip_length"):
        fvd.clip_parts(short)
    with pytest.raises(MetricError, match="at least 2 clips"):
        fvd.set_value_from_parts([(np.zeros((1, 400)), np.zeros((1, 400)))])
    with pytest.raises(ValueError, match="clip_length"):
        build_metric("FVD", {"clip_length": 4})


def test_registry_url_is_cd_fvds():
    import inspect

    from cdfvd.third_party.i3d import utils
    from core import weights

    spec = weights.get_spec("i3d_kinetics400")
    source = inspect.getsource(utils.load_i3d_model)
    assert spec.url in source and spec.filename in source


def test_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("TALKBENCH_WEIGHTS_I3D_KINETICS400", raising=False)
    with pytest.raises(MetricUnavailable, match="talkbench weights download i3d_kinetics400"):
        build_metric("FVD")
