"""SyncNet LSE-D / LSE-C / AV-offset: architecture and loading, features and windowing, the offset
logic on embeddings whose true offset is known, the run_pipeline crop, failures and caching.

The network tests use random-initialised state dicts written at test time under the official key
names; no pretrained weights are needed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import python_speech_features
import torch

from metrics import build_metric
from faces import crops
from metrics import syncnet as sn
from metrics.syncnet import features as sn_features
from metrics.syncnet import metrics as sn_metrics
from core.types import ClipPair
from core.errors import MetricError, MetricUnavailable

# The official syncnet_v2.model parameter names, written out from the layer list of SyncNetModel.py:
# convolutions and batch norms at these Sequential indices, linear 0 / BN 1 / linear 3 in the FCs.
CONV_IDX, BN_IDX = (0, 4, 8, 11, 14, 18), (1, 5, 9, 12, 15, 19)
OFFICIAL_KEYS = set()
for _stream in ("netcnnaud", "netcnnlip"):
    OFFICIAL_KEYS |= {f"{_stream}.{i}.{p}" for i in CONV_IDX for p in ("weight", "bias")}
    OFFICIAL_KEYS |= {f"{_stream}.{i}.{p}" for i in BN_IDX
                      for p in ("weight", "bias", "running_mean", "running_var")}
for _fc in ("netfcaud", "netfclip"):
    OFFICIAL_KEYS |= {f"{_fc}.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
    OFFICIAL_KEYS |= {f"{_fc}.1.{p}" for p in ("weight", "bias", "running_mean", "running_var")}

SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.8.weight": (384, 192, 3, 3), "netcnnaud.11.weight": (256, 384, 3, 3),
    "netcnnaud.14.weight": (256, 256, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.8.weight": (256, 256, 1, 3, 3), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netfcaud.0.weight": (512, 512), "netfcaud.3.weight": (1024, 512),
    "netfclip.1.running_var": (512,), "netfclip.3.bias": (1024,),
}


def random_state(seed: int = 0, batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    """A random state dict of the architecture (BN statistics and affines randomised too)."""
    torch.manual_seed(seed)
    model = sn.SyncNet()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            if batches_tracked:
                state[key] = torch.tensor(7)
            continue
        if key.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif key.endswith("running_mean"):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif key.endswith(".weight") and v.ndim == 1:  # BN gamma
            v = 1 + 0.1 * torch.randn(v.shape, generator=g)
        state[key] = v.clone()
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_random.model"
    torch.save(random_state(0), path)
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    sn.clear_cache()
    yield
    sn.clear_cache()


# ----------------------------------------------------------------------------- architecture
def test_state_dict_has_the_official_names_and_shapes():
    state = sn.SyncNet().state_dict()
    names = {k for k in state if not k.endswith("num_batches_tracked")}
    assert names == OFFICIAL_KEYS
    for key, shape in SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in sn.SyncNet().parameters()) == 13_631_616


def test_strict_load_and_forward_shapes(weights_file):
    model = sn.load_syncnet(weights_file)
    saved = torch.load(weights_file, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert not model.training
    with torch.no_grad():
        a = model.forward_aud(torch.randn(1, 1, 13, 20))
        v = model.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255)
        # intermediate maps end at 1 x 1 (x 1) with 512 channels, as the FC layers need
        assert model.netcnnaud(torch.randn(2, 1, 13, 20)).shape == (2, 512, 1, 1)
        assert model.netcnnlip(torch.rand(2, 3, 5, 224, 224)).shape == (2, 512, 1, 1, 1)
    assert a.shape == (1, 1024) and v.shape == (1, 1024)
    # embeddings are not L2-normalised
    assert not math.isclose(float(v.norm()), 1.0, rel_tol=1e-3)


def test_old_format_without_num_batches_tracked_loads_strictly(tmp_path):
    """The official file predates BN's num_batches_tracked; saved the legacy (non-zip) way too."""
    state = random_state(1, batches_tracked=False)
    path = tmp_path / "old.model"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    model = sn.load_syncnet(path)
    assert torch.equal(model.state_dict()["netfclip.3.weight"], state["netfclip.3.weight"])


def test_mismatching_files_are_unavailable(tmp_path):
    state = random_state(2)
    extra = dict(state, **{"netcnnaud.99.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.model")
    with pytest.raises(MetricUnavailable, match="does not match"):
        sn.load_syncnet(tmp_path / "extra.model")
    missing = {k: v for k, v in state.items() if k != "netcnnlip.18.weight"}
    torch.save(missing, tmp_path / "missing.model")
    with pytest.raises(MetricUnavailable, match="netcnnlip.18.weight"):
        sn.load_syncnet(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a torch file")
    with pytest.raises(MetricUnavailable, match="cannot be read"):
        sn.load_syncnet(tmp_path / "junk.model")


# ----------------------------------------------------------------------------- audio features
def test_mfcc_is_python_speech_features_on_int16():
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(np.arange(12_345) * 0.05) + 0.05 * rng.standard_normal(12_345))
    audio = audio.astype(np.float32)
    a16 = sn.audio_to_int16(audio)
    assert a16.dtype == np.int16
    # ffmpeg's float -> s16: x * 32768, rounded to nearest, clipped
    np.testing.assert_array_equal(sn.audio_to_int16(np.array([0.5, -1.0, 1.0, 1.5, 3e-5], np.float32)),
                                  np.array([16384, -32768, 32767, 32767, 1], np.int16))
    ours = sn.mfcc_features(a16)
    ref = python_speech_features.mfcc(a16, 16000)
    assert ours.shape == (13, ref.shape[0])
    np.testing.assert_allclose(ours, ref.T, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    # c0 is the log frame energy of the int16 signal (appendEnergy): the scale matters
    assert not np.allclose(sn.mfcc_features(a16 // 2)[0], ours[0], atol=0.5)


@pytest.mark.parametrize("frames, samples, windows", [
    (60, 38_400, 55), (100, 38_400, 55), (60, 38_399, 54), (60, 10**6, 55),
    (6, 3840, 1), (6, 3839, 0), (5, 10**5, 0), (0, 0, -5),
])
def test_window_count(frames, samples, windows):
    assert sn.num_windows(frames, samples) == windows


class Recorder(torch.nn.Module):
    """Embeds by summary statistics and keeps every input it was given."""

    def __init__(self):
        super().__init__()
        self.lip, self.aud = [], []

    def forward_lip(self, x):
        self.lip.append(x.clone())
        return torch.stack([x.mean(dim=(1, 2, 3, 4)), x[:, 0, 0, 0, 0]], dim=1)

    def forward_aud(self, x):
        self.aud.append(x.clone())
        return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 0, 0]], dim=1)


def test_windows_take_frames_i_to_i_plus_4_and_mfcc_4i_to_4i_plus_19():
    rng = np.random.default_rng(1)
    t, n_samples = 12, 12 * 640
    video = rng.integers(0, 256, (t, 224, 224, 3), dtype=np.uint8)
    mfcc = sn.mfcc_features(sn.audio_to_int16(rng.uniform(-0.5, 0.5, n_samples).astype(np.float32)))
    n = sn.num_windows(t, n_samples)
    assert n == 7
    assert mfcc.shape[1] >= 4 * (n - 1) + 20
    rec = Recorder()
    sn.embed(rec, video, mfcc, n, batch_size=3, device="cpu")  # batches of 3, 3, 1
    assert [x.shape[0] for x in rec.lip] == [3, 3, 1]
    lip, aud = torch.cat(rec.lip), torch.cat(rec.aud)
    assert lip.shape == (7, 3, 5, 224, 224) and aud.shape == (7, 1, 13, 20)
    for i in range(n):
        # N x 3 x T x H x W, channels in the stored (BGR) order, float 0-255, no normalisation
        expected = torch.from_numpy(video[i:i + 5].astype(np.float32)).permute(3, 0, 1, 2)
        assert torch.equal(lip[i], expected)
        assert torch.equal(aud[i, 0], torch.from_numpy(mfcc[:, 4 * i:4 * i + 20]))


# ----------------------------------------------------------------------------- offset logic
def test_distances_and_scores_by_hand():
    """vshift 1, 1-d features: video v = (1, 2, 3), audio a = (2, 3, 4) = v shifted by one.

    Audio padded with one zero each side: (0, 2, 3, 4, 0); dist[i, k] = |v_i - apad_(i+k) + 1e-6|:
    i=0: 1, 1, 2; i=1: 0, 1, 2; i=2: 0, 1, 3 -> mean 1/3, 1, 7/3. The zero padding costs window 0
    a distance of 1 at the best offset. LSE-D = 1/3, offset = 1 - 0 = 1, LSE-C = median 1 - 1/3.
    """
    v = torch.tensor([[1.0], [2.0], [3.0]])
    a = torch.tensor([[2.0], [3.0], [4.0]])
    d = sn.offset_distances(v, a, vshift=1)
    e = 1e-6
    expected = [[1 + e, 1 - e, 2 - e], [e, 1 - e, 2 - e], [e, 1 - e, 3 + e]]
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-6, atol=1e-7)
    res = sn.sync_scores(d, vshift=1)
    assert res.offset == 1
    assert res.min_dist == pytest.approx(1 / 3, rel=1e-5)
    assert res.conf == pytest.approx(1 - 1 / 3, rel=1e-5)
    np.testing.assert_allclose(res.mean_dists, [1 / 3, 1, 7 / 3], rtol=1e-5)
    assert res.n_windows == 3


def f_of_time(t: torch.Tensor) -> torch.Tensor:
    """A deterministic embedding of time whose distance is zero only at equal times (t < 64)."""
    return torch.stack([t / 4, torch.sin(t), torch.cos(t), (t / 8) ** 2], dim=1)


class TimeModel(torch.nn.Module):
    """Video window i -> f(i + video_lead), audio window j -> f(j + audio_lead).

    The video frames carry their index as pixel value; the MFCC "image" is patched to a ramp whose
    column c holds c / 4, so the first column of audio window j holds j.
    """

    def __init__(self, video_lead: int = 0, audio_lead: int = 0):
        super().__init__()
        self.video_lead, self.audio_lead = video_lead, audio_lead

    def forward_lip(self, x):
        return f_of_time(x[:, 0, 0, 0, 0] + self.video_lead)

    def forward_aud(self, x):
        return f_of_time(x[:, 0, 0, 0] + self.audio_lead)


def _timed_clip(t: int, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    video = np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None],
                            (t, 224, 224, 3)).copy()
    audio = np.zeros(t * 640, np.float32)
    m = 1 + math.ceil((len(audio) - 400) / 160)  # python_speech_features' frame count
    assert m == python_speech_features.mfcc(np.zeros(len(audio), np.int16), 16000).shape[0]
    ramp = np.broadcast_to(np.arange(m, dtype=np.float32) / 4, (13, m)).copy()
    # patched where `evaluate` looks it up
    monkeypatch.setattr(sn_features, "mfcc_features", lambda a, sr=16000: ramp)
    return video, audio


@pytest.mark.parametrize("video_lead, audio_lead, offset", [
    (0, 3, 3),    # audio window j holds time j + 3: the sound leads the picture by 3 frames
    (2, 0, -2),   # video features f(t + 2), audio f(t): offset -2
    (0, 0, 0),
    (0, -15, -15),
])
def test_known_offset_is_found(monkeypatch, video_lead, audio_lead, offset):
    t = 30
    video, audio = _timed_clip(t, monkeypatch)
    res = sn.evaluate(TimeModel(video_lead, audio_lead), video, audio, batch_size=7)
    n = t - 5
    assert res.n_windows == n
    assert res.offset == offset

    # By hand, at the true offset: window i is matched with audio window i - offset, which exists
    # for 0 <= i - offset < n and is a padded zero vector otherwise; eps 1e-6 per component.
    eps = 1e-6
    dist_true = []
    for i in range(n):
        fv = f_of_time(torch.tensor([float(i + video_lead)], dtype=torch.float64))[0]
        if 0 <= i - offset < n:
            dist_true.append(2 * eps)  # sqrt(4 components x eps^2)
        else:
            dist_true.append(float(torch.linalg.norm(fv + eps)))
    assert res.min_dist == pytest.approx(np.mean(dist_true), rel=1e-5, abs=1e-6)
    assert res.min_dist == pytest.approx(res.mean_dists[15 - offset], rel=1e-6)
    assert res.conf == pytest.approx(np.median(res.mean_dists) - res.min_dist, rel=1e-6)

    # every offset by brute force (audio window j = i + k - 15, zero outside 0..n-1)
    md = np.zeros(31)
    for k in range(31):
        for i in range(n):
            fv = f_of_time(torch.tensor([float(i + video_lead)], dtype=torch.float64))[0].numpy()
            j = i + k - 15
            fa = (f_of_time(torch.tensor([float(j + audio_lead)], dtype=torch.float64))[0].numpy()
                  if 0 <= j < n else np.zeros(4))
            md[k] += np.linalg.norm(fv - fa + eps) / n
    np.testing.assert_allclose(res.mean_dists, md, rtol=1e-5, atol=1e-6)
    assert res.conf == pytest.approx(np.median(md) - md.min(), rel=1e-4)
    assert res.frame_conf.shape == (n,)


# ----------------------------------------------------------------------------- crop
def _box_landmarks(x0, y0, x1, y1, t=15):
    rng = np.random.default_rng(0)
    inner = np.column_stack([rng.uniform(x0, x1, 64), rng.uniform(y0, y1, 64)])
    pts = np.vstack([[x0, y0], [x1, y0], [x0, y1], [x1, y1], inner])  # 68 points
    return np.broadcast_to(pts, (t, 68, 2)).astype(np.float32).copy()


def _coordinate_frame(h=200, w=200):
    """Pixel (y, x) holds (y, x, 7): the crop shows which pixels it took."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)


def test_crop_window_matches_the_run_pipeline_formula():
    boxes = crops.smooth_boxes(crops.landmark_boxes(_box_landmarks(100, 80, 160, 140)))
    # box 60 x 60: s = 30, centre (130, 110); the constant track survives the zero-padded filter
    np.testing.assert_allclose(boxes.s, 30)
    np.testing.assert_allclose(boxes.cx, 130)
    np.testing.assert_allclose(boxes.cy, 110)
    # pad = int(30 * 1.8) = 54; rows [164 - 30, 164 + 54) = [134, 218) padded = [80, 164) in the
    # frame; columns [184 - 42, 184 + 42) = [142, 226) padded = [88, 172): a 2.8 s square
    assert crops.crop_window(130, 110, 30, 0.4) == (54, 134, 218, 142, 226)
    frame = _coordinate_frame()
    face = crops.crop_face(frame, 130, 110, 30, 0.4)
    assert face.shape == (84, 84, 3)
    assert tuple(face[0, 0]) == (80, 88, 7) and tuple(face[-1, -1]) == (163, 171, 7)
    # fractional values: int() truncation after adding the pad, as in the reference
    cx, cy, s, cs = 57.3, 61.8, 21.7, 0.4
    pad = int(s * 1.8)
    assert crops.crop_window(cx, cy, s, cs) == (
        pad, int(cy + pad - s), int(cy + pad + s * 1.8), int(cx + pad - s * 1.4),
        int(cx + pad + s * 1.4))
    # another crop_scale changes both the pad and the window
    assert crops.crop_window(130, 110, 30, 0.2) == (42, 122, 194, 136, 208)


def test_crop_pads_with_110_outside_the_frame_and_resizes_to_224():
    frame = _coordinate_frame()
    # box x 0..40, y 100..140: s 20, centre (20, 120); pad 36; columns [56 - 28, 56 + 28) = [28, 84)
    # padded = frame columns -8 .. 47: the first 8 columns are padding
    face = crops.crop_face(frame, 20, 120, 20, 0.4)
    assert face.shape == (56, 56, 3)
    assert (face[:, :8] == 110).all()
    assert tuple(face[0, 8]) == (100, 0, 7)
    boxes = crops.smooth_boxes(crops.landmark_boxes(_box_landmarks(0, 100, 40, 140, t=8)))
    cropped = sn.syncnet_crops(np.stack([frame] * 8), boxes)
    assert cropped.shape == (8, 224, 224, 3) and cropped.dtype == np.uint8
    assert (cropped[:, :, :28] == 110).all()  # 8 of 56 columns -> 32 of 224 (minus the blend)


def test_boxes_are_median_filtered_with_kernel_13_and_zero_padding():
    t = 25
    cx = np.linspace(100, 124, t)
    lmk = np.zeros((t, 68, 2))
    lmk[:, :, 0] = cx[:, None] + np.linspace(-30, 30, 68)[None]
    lmk[:, :, 1] = 110 + np.linspace(-30, 30, 68)[None]
    lmk[12, :, :] += 50  # one jumpy frame: shifted 50 px
    raw = crops.landmark_boxes(lmk)
    assert raw.cx[12] == pytest.approx(cx[12] + 50)
    sm = crops.smooth_boxes(raw)
    assert sm.cx[12] == pytest.approx(cx[13])  # the outlier is replaced by a median of neighbours
    assert sm.cy[12] == pytest.approx(110)
    np.testing.assert_allclose(sm.s, 30)
    np.testing.assert_allclose(sm.cx[:6], cx[:6])  # increasing: the 6 leading zeros don't win
    # trailing zeros: the last frame's window holds cx[t-7 .. t-1] and 6 zeros -> cx[t-7]
    assert sm.cx[-1] == pytest.approx(cx[t - 7])
    # kernel 13: a run of 6 outliers is removed, a run of 7 is not
    for run, removed in ((6, True), (7, False)):
        lm = lmk.copy()
        lm[12] -= 50
        lm[5:5 + run, :, 1] += 80
        got = crops.smooth_boxes(crops.landmark_boxes(lm)).cy[8]
        assert bool(got == pytest.approx(110)) is removed


def test_unusable_frames_get_interpolated_boxes():
    lmk = _box_landmarks(100, 80, 160, 140, t=10)
    lmk[3:6] += np.array([10.0, 0.0])  # frames 3..5 move right by 10 ...
    lmk[4] = np.nan  # ... and frame 4 has no landmarks
    mask = np.ones(10, bool)
    mask[5] = False
    raw = crops.landmark_boxes(lmk, mask)
    np.testing.assert_allclose(raw.cx[[3, 4, 5, 6]], [140, 140 - 10 / 3, 140 - 20 / 3, 130])
    with pytest.raises(MetricError, match="no frame"):
        crops.landmark_boxes(lmk, np.zeros(10, bool))


# ----------------------------------------------------------------------------- the metrics
def _pair(t=10, fps=25.0, samples=None, size=96, seed=0, sample_rate=16000):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    ref = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    audio = (0.2 * rng.standard_normal(samples if samples is not None else t * 640)).astype(np.float32)
    lmk = _box_landmarks(30, 25, 70, 75, t)
    return ClipPair("c0", {"frames": frames}, {"frames": ref, "landmarks": lmk}, fps=fps,
                    audio=audio, sample_rate=sample_rate)


def test_missing_weights_are_unavailable_with_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("TALKBENCH_WEIGHTS_SYNCNET_V2", raising=False)
    for name in ("LSE-D", "LSE-C", "AV-offset"):
        with pytest.raises(MetricUnavailable, match="talkbench weights download syncnet_v2"):
            build_metric(name)
    with pytest.raises(MetricUnavailable, match="talkbench weights download syncnet_v2"):
        build_metric("LSE-D", {"weights_path": str(tmp_path / "nowhere.model")})


def test_bad_parameters(weights_file):
    for params in ({"crop": "face"}, {"vshift": 0}, {"crop_scale": -1}, {"batch_size": 0},
                   {"weights": "no_such_file"}, {"nope": 1}):
        with pytest.raises(ValueError):
            build_metric("LSE-C", {"weights_path": str(weights_file), **params})


def test_metrics_share_one_evaluation(weights_file):
    lsed = build_metric("LSE-D", {"weights_path": str(weights_file), "crop": "full"})
    lsec = build_metric("LSE-C", {"weights_path": str(weights_file), "crop": "full"})
    off = build_metric("AV-offset", {"weights_path": str(weights_file), "crop": "full"})
    assert lsed._model is lsec._model  # one network in memory
    assert lsed.higher_is_better is False and lsec.higher_is_better is True
    assert off.higher_is_better is False
    pair = _pair(t=8)
    d, c, o = lsed.clip_value(pair), lsec.clip_value(pair), off.clip_value(pair)
    assert (lsed.calls, lsec.calls, off.calls) == (1, 0, 0)
    res = lsed.result(pair)
    assert res.n_windows == 3
    assert d == res.min_dist and c == res.conf and o == abs(res.offset)
    assert math.isfinite(d) and d > 0 and c >= 0
    # the value is the evaluation of the BGR full frames resized to 224
    model = sn.load_syncnet(weights_file)
    direct = sn.evaluate(model, sn.full_frames(pair.pred["frames"][..., ::-1]), pair.audio)
    assert direct.min_dist == pytest.approx(d, rel=1e-6)
    assert direct.conf == pytest.approx(c, rel=1e-5, abs=1e-6 * d)
    # another prediction is evaluated anew; the batch size changes nothing but rounding
    other = build_metric("LSE-D", {"weights_path": str(weights_file), "crop": "full",
                                   "batch_size": 2})
    assert other.identity() == lsed.identity()  # neither batch_size nor the path are identity
    sn.clear_cache()
    assert other.clip_value(pair) == pytest.approx(d, rel=1e-5)
    assert other.calls == 1


def test_identity_names_the_weights_content(weights_file, tmp_path):
    m = build_metric("LSE-C", {"weights_path": str(weights_file)})
    ident = m.identity()
    assert ident["weights"]["syncnet_v2"] == m.weights_sha256
    assert len(m.weights_sha256) == 64
    assert "batch_size" not in ident["params"] and "weights_path" not in ident["params"]
    torch.save(random_state(5), tmp_path / "other.model")
    other = build_metric("LSE-C", {"weights_path": str(tmp_path / "other.model")})
    assert other.identity() != ident


def test_syncnet_crop_uses_reference_boxes_for_prediction_and_truth(weights_file, monkeypatch):
    metric = build_metric("LSE-D", {"weights_path": str(weights_file)})
    pair = _pair(t=9)
    gt_pair = ClipPair("c0", {"frames": pair.ref["frames"]}, pair.ref, fps=25.0, audio=pair.audio)
    pair.pred["landmarks"] = pair.ref["landmarks"] + 20  # a method's own landmarks are not used
    seen = []
    real = sn.syncnet_crops

    def spy(frames, boxes, crop_scale=0.4):
        seen.append((frames.copy(), boxes))
        return real(frames, boxes, crop_scale)

    monkeypatch.setattr(sn_metrics, "syncnet_crops", spy)  # where the metrics look it up
    v_pred, v_gt = metric.clip_value(pair), metric.clip_value(gt_pair)
    assert len(seen) == 2
    (f_pred, b_pred), (f_gt, b_gt) = seen
    for a, b in ((b_pred.cx, b_gt.cx), (b_pred.cy, b_gt.cy), (b_pred.s, b_gt.s)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b_pred.s, 25)  # box 40 x 50 from the reference landmarks
    np.testing.assert_allclose(b_pred.cx, 50)
    # BGR order goes to the crop
    np.testing.assert_array_equal(f_pred, pair.pred["frames"][..., ::-1])
    np.testing.assert_array_equal(f_gt, pair.ref["frames"][..., ::-1])
    assert v_pred != v_gt


def test_boxes_follow_the_prediction_size(weights_file):
    metric = build_metric("LSE-D", {"weights_path": str(weights_file)})
    pair = _pair(t=9, size=96)
    small = ClipPair("c0", {"frames": pair.pred["frames"][:, ::2, ::2]}, pair.ref, fps=25.0,
                     audio=pair.audio)
    _, _, boxes = metric.prepared(small)
    np.testing.assert_allclose(boxes.s, 12.5)
    np.testing.assert_allclose(boxes.cx, 25)


def test_clips_that_cannot_be_scored(weights_file):
    full = build_metric("LSE-C", {"weights_path": str(weights_file), "crop": "full"})
    crop = build_metric("LSE-C", {"weights_path": str(weights_file)})
    with pytest.raises(MetricError, match="25 fps"):
        full.clip_value(_pair(t=30, fps=30.0, samples=16000))
    with pytest.raises(MetricError, match="too short.*5 frames"):
        full.clip_value(_pair(t=5, samples=16000))
    with pytest.raises(MetricError, match="too short.*3839 audio samples"):
        full.clip_value(_pair(t=20, samples=3839))
    with pytest.raises(MetricError, match="16 kHz"):
        full.clip_value(_pair(t=10, sample_rate=22050))
    no_audio = _pair(t=10)
    no_audio.audio = None
    with pytest.raises(MetricError, match="no audio"):
        full.clip_value(no_audio)
    with pytest.raises(MetricError, match="syncnet crop.*7"):
        crop.clip_value(_pair(t=6))
    assert math.isfinite(full.clip_value(_pair(t=6)))  # 6 frames, 3840 samples: one window
    no_lmk = _pair(t=10)
    del no_lmk.ref["landmarks"]
    with pytest.raises(MetricError, match="reference landmarks"):
        crop.clip_value(no_lmk)


def test_registered():
    from metrics import available_metrics

    assert {"LSE-D", "LSE-C", "AV-offset"} <= set(available_metrics())
