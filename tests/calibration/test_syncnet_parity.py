"""Parity of talkbench's batched SyncNet evaluation with a loop-by-loop reference.

The reference here is written from the prose of `reference/metrics.md` §1.2-1.3 (joonson's
``SyncNetInstance.evaluate`` / ``calc_pdist`` and ``run_pipeline.py``'s ``crop_video``), one step at
a time the way those scripts go, independent of ``metrics.syncnet.features``' vectorised code:

* ``calc_pdist`` and the offset / confidence / minimum logic in plain NumPy float64 with Python loops
  (one window, one offset at a time), compared with the batched torch float32 functions on random
  embeddings.
* the whole evaluation of a real synthtalk clip with a random-weight SyncNet: per-frame boxes from
  the reference landmarks, ``scipy.signal.medfilt`` (kernel 13) of the three box lists, per-frame
  ``np.pad`` with 110 and slicing, ``cv2.resize``; the BGR frames stacked as ``H x W x 3 x T`` and
  transposed to ``1 x 3 x T x H x W`` floats; ``python_speech_features.mfcc`` on the int16 signal,
  transposed to ``1 x 1 x 13 x M``; batches of 20 windows cut with ``imtv[:, :, v:v+5]`` and
  ``cct[:, :, :, 4v:4v+20]``; then the NumPy distance loop. Compared with the LSE-D / LSE-C /
  AV-offset metrics of talkbench on the same clip and weights.

Tolerances: the NumPy float64 loop against torch float32 on the same embeddings agree to 1e-6
relative (LSE-C, a difference of two means, is held to 1e-6 of LSE-D). In the whole evaluation
the same network runs over the same inputs in differently shaped batches (float32 convolutions),
so the embeddings differ by rounding: 1e-5 relative.

Measured (torch 2.15 CPU, synthtalk seed 0 clip spk01_000, random weights): LSE-D 12.46638 with
the pipeline crop (15 windows) and 12.82989 on full frames (9 windows), 1e-8 to 6e-8 relative from
the loop reference; LSE-C within 5e-7 absolute. The random network puts the minimum at the edge of
the search (offset 15): far from trained embeddings, the zero-padded rows are the nearest.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import scipy.signal
import torch

from bench.data.synthtalk import corpus
from bench.calibrate import random_syncnet, ref_calc_pdist, ref_crop_video, ref_evaluate, ref_scores
from metrics import build_metric
from metrics import syncnet as sn
from core.types import ClipPair

REL = 1e-6
REL_EVAL = 1e-5


# ----------------------------------------------------------------------------- reference, by loops
# ----------------------------------------------------------------------------- distance parity
@pytest.mark.parametrize("n, dim, planted, vshift", [
    (40, 1024, 4, 15), (40, 1024, -7, 15), (9, 1024, 2, 15), (25, 64, None, 15), (6, 16, 1, 3),
])
def test_distances_and_scores_match_the_loop_reference(n, dim, planted, vshift):
    g = torch.Generator().manual_seed(n * 1000 + dim)
    base = torch.randn(n + 40, dim, generator=g) * 3
    vid = base[20:20 + n].clone()
    if planted is None:  # unrelated embeddings: a flat curve, small confidence
        aud = torch.randn(n, dim, generator=g) * 3
    else:  # audio window j holds the content of video window j + planted, plus noise
        aud = base[20 + planted:20 + planted + n] + 0.5 * torch.randn(n, dim, generator=g)
    got = sn.offset_distances(vid, aud, vshift)
    ref = np.array(ref_calc_pdist(vid.numpy(), aud.numpy(), vshift))
    np.testing.assert_allclose(got.numpy(), ref, rtol=REL)
    res = sn.sync_scores(got, vshift)
    offset, conf, minval = ref_scores(ref.tolist(), vshift)
    assert res.offset == offset
    if planted is not None:
        assert offset == planted
    assert res.min_dist == pytest.approx(minval, rel=REL)
    assert abs(res.conf - conf) <= REL * minval
    mdist = ref.mean(axis=0)
    np.testing.assert_allclose(res.mean_dists, mdist, rtol=REL)
    fconf = np.median(mdist) - ref[:, vshift - offset]
    with warnings.catch_warnings():  # fewer windows than the 9-tap filter: zero-padded
        warnings.simplefilter("ignore", UserWarning)
        fconfm = scipy.signal.medfilt(fconf, 9)
    np.testing.assert_allclose(res.frame_conf, fconfm, rtol=1e-5, atol=REL * minval)


# ----------------------------------------------------------------------------- whole evaluation
@pytest.fixture(scope="module")
def synthtalk_clip(tmp_path_factory):
    root = corpus.build(tmp_path_factory.mktemp("synthtalk"), size=1, seed=0, progress=False)
    return corpus.load_clips(root)[0]


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "syncnet_random.model"
    random_syncnet(path, seed=11)
    return path


@pytest.mark.parametrize("crop", ["syncnet", "full"])
def test_whole_evaluation_matches_the_loop_reference(synthtalk_clip, random_weights, crop):
    clip = synthtalk_clip
    t = 20 if crop == "syncnet" else 14  # pieces of the clip: 15 and 9 windows (CPU time)
    frames, lmk = clip.frames[:t], clip.landmarks[:t]
    audio = clip.audio[:t * 640]
    assert clip.fps == 25 and clip.sample_rate == 16000

    # the reference: BGR frames as cv2.imread would give them, the pipeline crop, int16 audio
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    images = ref_crop_video(bgr, lmk) if crop == "syncnet" else [cv2.resize(f, (224, 224)) for f in bgr]
    audio_int16 = np.clip(np.round(audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    model = sn.load_syncnet(random_weights)
    offset, conf, minval = ref_evaluate(model, images, audio_int16)

    sn.clear_cache()
    params = {"weights_path": str(random_weights), "crop": crop, "batch_size": 6}
    metrics = {name: build_metric(name, params) for name in ("LSE-D", "LSE-C", "AV-offset")}
    pair = ClipPair(clip.id, {"frames": frames}, {"frames": frames, "landmarks": lmk},
                    fps=clip.fps, audio=audio, sample_rate=clip.sample_rate)
    lse_d = metrics["LSE-D"].clip_value(pair)
    lse_c = metrics["LSE-C"].clip_value(pair)
    av = metrics["AV-offset"].clip_value(pair)
    res = metrics["LSE-D"].result(pair)
    assert res.n_windows == min(t, len(audio) // 640) - 5
    assert lse_d == pytest.approx(minval, rel=REL_EVAL)
    assert abs(lse_c - conf) <= REL_EVAL * minval
    assert res.offset == offset and av == abs(offset)
    assert metrics["LSE-D"].calls == 1 and metrics["LSE-C"].calls == 0
    print(f"{crop}: offset {offset}, LSE-D {lse_d:.9g} vs {minval:.9g} "
          f"({abs(lse_d - minval) / minval:.2g} rel), LSE-C {lse_c:.9g} vs {conf:.9g}")
