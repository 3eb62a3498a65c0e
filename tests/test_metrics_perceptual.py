"""LPIPS and FID: loading the official checkpoint formats, hand checks, error paths.

The real backbones are not on PyPI (``reference/metrics.md`` §8), so each test module writes
random-initialised checkpoints in the official formats: a torchvision ``alexnet()`` state_dict saved
with ``torch.save`` (as ``alexnet-owt-7be5be79.pth`` is) and a state_dict of pytorch-fid's
``fid_inception_v3()`` structure (as ``pt_inception-2015-12-05-6726825d.pth`` is). The FID
Inception's blocks take the same parameters as the torchvision blocks they patch, so its state_dict
is that of ``torchvision.models.inception_v3(num_classes=1008, aux_logits=False)``. The weights are
He-scaled so activations stay O(1) through the depth of the networks.

Parity with the lpips and pytorch-fid packages' own pipelines: tests/calibration/.
"""

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from core import weights
from bench.calibrate import random_alexnet, random_fid_inception
from metrics import METRICS, build_metric
from core.types import ClipPair
from core.errors import MetricError, MetricUnavailable
from metrics.fid import (
    FID,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    stride_subsample,
    trace_sqrt_product,
)
from metrics.perceptual import LPIPS, alexnet_to_lpips_keys, load_checkpoint


# -- random checkpoints in the official formats ----------------------------------------------------
# Random-initialised checkpoints in the official formats: the same writers `talkbench calibrate` uses.
alexnet_checkpoint = random_alexnet
inception_checkpoint = random_fid_inception


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "alexnet-owt-7be5be79.pth"
    return path, alexnet_checkpoint(path)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "pt_inception-2015-12-05-6726825d.pth"
    return path, inception_checkpoint(path)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path / "home"))
    for spec in weights.list_specs():
        monkeypatch.delenv(spec.env_var, raising=False)


@pytest.fixture(scope="module")
def lpips_module(alex_file):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(alex_file[0]))
        return build_metric("LPIPS")


@pytest.fixture
def lpips_metric(lpips_module, monkeypatch):
    monkeypatch.setattr(lpips_module, "batch_size", LPIPS.batch_size)
    return lpips_module


@pytest.fixture(scope="module")
def fid_metric(inception_file):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_WEIGHTS_PT_INCEPTION", str(inception_file[0]))
        return build_metric("FID")


def pair(pred, ref, clip_id="c"):
    return ClipPair(clip_id=clip_id, pred={"frames": pred}, ref={"frames": ref})


def smooth_frames(t, h, w, seed):
    x = gaussian_filter(np.random.default_rng(seed).normal(size=(t, h, w, 3)), (0, 4, 4, 0))
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return x.round().astype(np.uint8)


# == LPIPS =========================================================================================
def test_lpips_contract():
    assert METRICS["LPIPS"] is LPIPS
    assert LPIPS.level == "clip" and LPIPS.needs == ("frames",) and not LPIPS.higher_is_better


def test_lpips_missing_weights_is_unavailable_at_construction():
    with pytest.raises(MetricUnavailable) as err:
        build_metric("LPIPS")
    assert str(err.value) == (f"{weights.default_path('alexnet')} missing, get it with "
                              f"`talkbench weights download alexnet`")


def test_lpips_loads_the_torchvision_checkpoint(lpips_metric, alex_file):
    _, state = alex_file
    net = lpips_metric._model.net
    mapped = alexnet_to_lpips_keys(net, state)
    # every convolution of AlexNet.features, and nothing else, lands in lpips' slices
    assert sorted(mapped) == sorted(net.state_dict())
    assert len(mapped) == 10
    expected = {"slice1.0": 0, "slice2.3": 3, "slice3.6": 6, "slice4.8": 8, "slice5.10": 10}
    for prefix, index in expected.items():
        for param in ("weight", "bias"):
            loaded = net.state_dict()[f"{prefix}.{param}"]
            assert torch.equal(loaded, state[f"features.{index}.{param}"])
    # the shipped v0.1 lin heads are the package's, not random
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips' deprecated torchvision argument
        lins = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).state_dict()
    for key, value in lpips_metric._model.state_dict().items():
        if key.startswith("lin"):
            assert torch.equal(value, lins[key])
    assert "alexnet" in lpips_metric.identity()["weights"]


def test_checkpoints_in_torchs_legacy_format_load(tmp_path, monkeypatch, alex_file,
                                                 inception_file, lpips_metric):
    """The released files predate torch's zip format (torch < 1.6); that format loads too."""
    legacy = tmp_path / "alexnet-legacy.pth"
    torch.save(alex_file[1], legacy, _use_new_zipfile_serialization=False)
    monkeypatch.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(legacy))
    x = smooth_frames(2, 40, 40, seed=30)
    y = smooth_frames(2, 40, 40, seed=31)
    assert build_metric("LPIPS").clip_value(pair(x, y)) == lpips_metric.clip_value(pair(x, y))
    legacy = tmp_path / "inception-legacy.pth"
    torch.save(inception_file[1], legacy, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(legacy, "FID Inception")
    assert loaded.keys() == inception_file[1].keys()
    assert all(torch.equal(loaded[k], v) for k, v in inception_file[1].items())


def test_lpips_bad_checkpoints_are_unavailable(tmp_path, monkeypatch, alex_file):
    _, state = alex_file
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    missing_key = tmp_path / "missing_key.pth"
    torch.save({k: v for k, v in state.items() if k != "features.8.weight"}, missing_key)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save({**state, "features.3.weight": torch.zeros(192, 64, 3, 3)}, wrong_shape)
    for path, text in ((garbage, "cannot be read"), (missing_key, "features.8.weight"),
                       (wrong_shape, "not torchvision's AlexNet")):
        monkeypatch.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(path))
        with pytest.raises(MetricUnavailable, match=text):
            build_metric("LPIPS")


def test_lpips_params():
    with pytest.raises(ValueError, match="net"):
        LPIPS.validate_params(type("M", (), {"params": {"net": "vgg"}, "name": "LPIPS"})())
    with pytest.raises(ValueError, match="unknown parameter"):
        build_metric("LPIPS", {"spatial": True})


def test_lpips_identical_frames_give_zero(lpips_metric):
    x = smooth_frames(3, 48, 40, seed=1)
    assert lpips_metric.clip_value(pair(x, x.copy())) == 0.0


def test_lpips_grows_with_blur_and_noise(lpips_metric):
    ref = smooth_frames(2, 64, 64, seed=2)
    rough = np.random.default_rng(3).integers(0, 256, ref.shape).astype(np.float64)
    ref = np.clip(0.6 * ref + 0.4 * rough, 0, 255).astype(np.uint8)  # some texture to lose
    blur = [lpips_metric.clip_value(pair(
        gaussian_filter(ref.astype(float), (0, s, s, 0)).round().astype(np.uint8), ref))
        for s in (0.7, 1.5, 3.0)]
    rng = np.random.default_rng(4)
    noise = rng.normal(size=ref.shape)
    noisy = [lpips_metric.clip_value(pair(
        np.clip(ref + a * noise, 0, 255).round().astype(np.uint8), ref)) for a in (4, 16, 48)]
    assert 0 < blur[0] < blur[1] < blur[2]
    assert 0 < noisy[0] < noisy[1] < noisy[2]


def test_lpips_is_the_mean_of_per_frame_values(lpips_metric):
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 256, (5, 40, 36, 3), dtype=np.uint8)
    pred = rng.integers(0, 256, (5, 40, 36, 3), dtype=np.uint8)
    per_frame = [lpips_metric.clip_value(pair(pred[i:i + 1], ref[i:i + 1])) for i in range(5)]
    assert lpips_metric.clip_value(pair(pred, ref)) == pytest.approx(np.mean(per_frame), rel=1e-6)
    assert len(set(np.round(per_frame, 6))) == 5
    lpips_metric.batch_size = 2  # batching does not change the value
    assert lpips_metric.clip_value(pair(pred, ref)) == pytest.approx(np.mean(per_frame), rel=1e-6)
    # floats on the 0-255 scale are the same frames
    assert lpips_metric.clip_value(pair(pred.astype(np.float32), ref.astype(np.float64))) \
        == pytest.approx(np.mean(per_frame), rel=1e-6)


def test_lpips_errors(lpips_metric):
    x = np.zeros((3, 40, 40, 3), np.uint8)
    with pytest.raises(MetricError, match="frames"):
        lpips_metric.clip_value(pair(x, x[:2]))
    with pytest.raises(MetricError, match="reference"):
        lpips_metric.clip_value(pair(x, np.zeros((3, 40, 42, 3), np.uint8)))
    with pytest.raises(MetricError, match="31x31"):
        lpips_metric.clip_value(pair(x[:, :30], x[:, :30]))
    assert lpips_metric.clip_value(pair(x[:, :31, :31], x[:, :31, :31])) == 0.0
    with pytest.raises(MetricError, match="0-255"):
        lpips_metric.clip_value(pair(x.astype(np.float32) - 1, x))
    with pytest.raises(MetricError, match="no 'frames'"):
        lpips_metric.clip_value(ClipPair("c", pred={}, ref={"frames": x}))


# == Fréchet distance ==============================================================================
def test_frechet_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 32))
    mu, sigma = feature_statistics(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10 * np.trace(sigma)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 40
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)
    # one dimension: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, rel=1e-12)
    # a shared rotation changes nothing
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-10)


def test_trace_sqrt_product_against_scaled_covariance():
    # Tr sqrt(S (c^2 S)) = c Tr S for any covariance S
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 30))
    s = a.T @ a / 49
    assert trace_sqrt_product(s, 4.0 * s) == pytest.approx(2.0 * np.trace(s), rel=1e-10)


@pytest.mark.parametrize("n,d", [(400, 64), (20, 128)])  # full rank, and rank-deficient
def test_frechet_matches_pytorch_fid(n, d):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n, d)) @ mix
    b = rng.normal(size=(n, d)) @ (mix + 0.3 * np.eye(d)) + 0.2
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    with warnings.catch_warnings():  # pytorch-fid passes scipy's deprecated `disp`
        warnings.simplefilter("ignore")
        reference = calculate_frechet_distance(mu1, s1, mu2, s2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)


@pytest.mark.parametrize("n1,n2,d", [(6, 9, 48), (30, 30, 48), (40, 70, 24), (5, 60, 24)])
def test_frechet_from_features_routes_agree(n1, n2, d):
    """The gram route (singular values of A1 A2') equals the covariance route, rank-deficient or not."""
    rng = np.random.default_rng(n1 * n2 + d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n1, d)) @ mix
    b = rng.normal(size=(n2, d)) @ (mix + 0.5 * np.eye(d)) - 0.3
    gram = frechet_distance_features(a, b, method="gram")
    cov = frechet_distance_features(a, b, method="covariance")
    # exact in both; with rank-deficient covariances the eigen route carries the rounding of the
    # eigenvalues that should be 0 (each adds its square root), ~1e-8 relative here
    assert gram == pytest.approx(cov, rel=1e-6 if min(n1, n2) <= d else 1e-10)
    assert frechet_distance_features(a, b) == (gram if max(n1, n2) <= d else cov)
    assert frechet_distance_features(b, a, method="gram") == pytest.approx(gram, rel=1e-10)
    # identical sets: 0 to rounding on the gram route, even with rank-deficient covariances
    assert abs(frechet_distance_features(a, a.copy(), method="gram")) < 1e-12 * np.sum(a * a)


def test_frechet_from_features_errors():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance_features(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_features(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="method"):
        frechet_distance_features(np.zeros((3, 4)), np.ones((3, 4)), method="sqrtm")


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0, np.nan]), np.eye(2))


def test_stride_subsample():
    assert stride_subsample(10, None).tolist() == list(range(10))
    assert stride_subsample(10, 10).tolist() == list(range(10))
    assert stride_subsample(10, 3).tolist() == [0, 4, 8]
    assert stride_subsample(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert stride_subsample(7, 1).tolist() == [0]
    for n in range(1, 40):
        for m in range(1, 12):
            idx = stride_subsample(n, m)
            assert 1 <= len(idx) <= m and idx[0] == 0 and len(set(np.diff(idx))) <= 1


# == FID ===========================================================================================
def test_fid_contract_and_params():
    assert METRICS["FID"] is FID
    assert FID.level == "set" and FID.needs == ("frames",) and not FID.higher_is_better
    for bad in (0, -1, 2.5, True, "all"):
        with pytest.raises(ValueError, match="max_frames_per_clip"):
            FID.validate_params(type("M", (), {"name": "FID",
                                               "params": {"max_frames_per_clip": bad}})())
    with pytest.raises(ValueError, match="unknown parameter"):
        build_metric("FID", {"batch_size": 10})


def test_fid_missing_or_wrong_weights_are_unavailable(tmp_path, monkeypatch, alex_file):
    with pytest.raises(MetricUnavailable) as err:
        build_metric("FID")
    assert str(err.value) == (f"{weights.default_path('pt_inception')} missing, get it with "
                              f"`talkbench weights download pt_inception`")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_PT_INCEPTION", str(alex_file[0]))  # another network
    with pytest.raises(MetricUnavailable, match="not pytorch-fid's FID Inception"):
        build_metric("FID")


def test_fid_loads_the_checkpoint(fid_metric, inception_file):
    _, state = inception_file
    loaded = fid_metric._model.state_dict()
    # the feature extractor holds every tensor of the file except the 1008-way classifier
    assert len(loaded) == len(state) - 2
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var",
                "Mixed_7c.branch3x3dbl_3b.conv.weight"):
        assert any(torch.equal(v, state[key]) for v in loaded.values())
    names = {type(m).__name__ for m in fid_metric._model.modules()}
    assert {"FIDInceptionA", "FIDInceptionC", "FIDInceptionE_1", "FIDInceptionE_2"} <= names


# Inception runs at 299x299 whatever the frame size (~0.2 s per frame on a 2-core CPU), so these
# tests use few frames.
def test_fid_identical_sets_are_zero(fid_metric):
    a = smooth_frames(1, 40, 48, seed=10)
    b = smooth_frames(1, 40, 48, seed=11)
    same = fid_metric.set_value([pair(a, a.copy(), "x"), pair(b, b.copy(), "y")])
    assert fid_metric.last_counts == {"clips": 2, "pred_frames": 2, "ref_frames": 2}
    assert "2 generated and 2 reference frames from 2 clips" in fid_metric.last_notes[0]
    assert any("rank-deficient" in n for n in fid_metric.last_notes)
    assert abs(same) < 1e-9


def test_fid_subsamples_and_measures_the_features(fid_metric, monkeypatch):
    a = smooth_frames(5, 40, 48, seed=12)
    b = np.random.default_rng(14).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    feats = fid_metric.features(np.concatenate([a[[0, 3]], b[[0, 2]]]))
    assert feats.shape == (4, 2048) and np.isfinite(feats).all() and feats.std() > 1e-3
    # max_frames_per_clip=2 keeps frames 0, 3 of 5 and 0, 2 of 3
    monkeypatch.setitem(fid_metric.params, "max_frames_per_clip", 2)
    value = fid_metric.set_value([pair(a, b)])
    assert fid_metric.last_counts == {"clips": 1, "pred_frames": 2, "ref_frames": 2}
    assert value == pytest.approx(frechet_distance_features(feats[:2], feats[2:]), rel=1e-6)
    assert value > 0.01 * np.trace(np.cov(feats, rowvar=False))


def test_fid_errors(fid_metric):
    x = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MetricError, match="clip y: prediction has no 'frames'"):
        fid_metric.set_value([pair(x, x, "x"), ClipPair("y", pred={}, ref={"frames": x})])
    with pytest.raises(MetricError, match="at least 2 frames"):
        fid_metric.set_value([pair(x[:1], x)])
    with pytest.raises(MetricError, match="no clips"):
        fid_metric.set_value([])
    with pytest.raises(MetricError, match="T x H x W x 3"):
        fid_metric.set_value([pair(x[..., 0], x)])
    with pytest.raises(MetricError, match="0-255"):
        fid_metric.set_value([pair(x.astype(np.float32) + 300, x)])


def test_fid_ground_truth_features_once_per_clip(fid_metric, tmp_path, monkeypatch):
    """With the scorer's cache (`Metric.cache`), a clip's reference features are computed once
    for every row that is scored against it, and equal the uncached ones."""
    from core.cache import Cache

    ref = smooth_frames(2, 40, 48, seed=20)
    rows = [smooth_frames(2, 40, 48, seed=s) for s in (21, 22)]
    uncached = fid_metric.clip_parts(pair(rows[0], ref))
    real, calls = fid_metric.features, []
    monkeypatch.setattr(fid_metric, "features", lambda frames: calls.append(len(frames)) or real(frames))
    monkeypatch.setattr(fid_metric, "cache", Cache(tmp_path / "cache"))
    parts = [fid_metric.clip_parts(pair(row, ref)) for row in rows]
    assert len(calls) == 3  # row 1, the reference, row 2: not the reference again
    assert np.array_equal(parts[0][0], uncached[0]) and np.array_equal(parts[0][1], uncached[1])
    assert np.array_equal(parts[1][1], uncached[1])
    fid_metric.clip_parts(pair(rows[0], ref))  # a rescored row: nothing computed
    assert len(calls) == 3
