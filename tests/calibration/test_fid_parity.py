"""Parity of talkbench's FID with pytorch-fid's own pipeline.

Reference: ``pytorch_fid.inception.InceptionV3([3])`` built the package's default way
(``use_fid_inception=True``: ``fid_inception_v3()`` fetches ``FID_WEIGHTS_URL`` through ``torch.hub``,
which loads ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` when it is there).
The test writes a random-initialised checkpoint in that format under that name in a private
TORCH_HOME, so the reference is the unmodified package path. Frames are written as PNG files and
read by ``pytorch_fid.fid_score.get_activations`` (PIL -> ``ToTensor`` -> model); the statistics are
``np.mean`` / ``np.cov(rowvar=False)`` of those activations, as ``calculate_activation_statistics``
computes them, and the distance is ``calculate_frechet_distance``. talkbench's FID reads the same
file through ``core.weights.resolve`` and runs on the uint8 arrays.

``calculate_frechet_distance`` on 2048-d statistics spends 20-45 s in ``scipy.linalg.sqrtm`` on a
2-core CPU. With N features per set, both covariances and the mean difference lie in the span of the
centred features and the mean difference (dimension k < 2N), and the Fréchet distance is unchanged
by an isometry onto that span: the reference distance is therefore computed by the package function
on the statistics expressed in an orthonormal basis of the span (k x k instead of 2048 x 2048).
``test_reduction_is_exact`` checks this reduction with the package function itself on a 256-d slice
of the same activations, against the unreduced statistics.

Measured (pytorch-fid 0.3.0, scipy 1.17, torch 2.15 CPU, 2 x 2 generated and 2 x 2 reference
frames): features within 9.5e-7 absolute of the reference activations (values up to 2.2; float32
convolutions batched differently); FID 2.4462599 against the reduced reference 2.4462607 (3.2e-7
relative). Run once outside the tests, the unreduced reference (``calculate_frechet_distance`` on the
2048 x 2048 statistics, 39 s) gave 2.4462605: 2.5e-7 from talkbench, 6.7e-8 from the reduced value.
Tolerance 1e-4 relative.
"""


import numpy as np
import pytest
import torch

from bench.calibrate import (fid_frame_sets as frame_sets, package_fd, package_statistics, random_fid_inception,
                             reduced_reference_fid, reference_activations)
from metrics import build_metric
from core.types import ClipPair
from metrics.fid import frechet_distance_features

REL = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from pytorch_fid.inception import InceptionV3

    root = tmp_path_factory.mktemp("fid_parity")
    hub = root / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    ckpt = hub / "pt_inception-2015-12-05-6726825d.pth"
    state = random_fid_inception(ckpt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("TALKBENCH_HOME", str(root / "home"))
        mp.setenv("TALKBENCH_WEIGHTS_PT_INCEPTION", str(ckpt))
        reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        ours = build_metric("FID")
    conv = reference.blocks[0][0].conv.weight
    assert torch.equal(conv, state["Conv2d_1a_3x3.conv.weight"])  # the file, not a fresh init
    return ours, reference


@pytest.fixture(scope="module")
def activations(models, tmp_path_factory):
    ours, reference = models
    pred, ref = frame_sets()
    folder = tmp_path_factory.mktemp("pngs")
    return (reference_activations(reference, pred, folder / "pred"),
            reference_activations(reference, ref, folder / "ref"))


def test_features_match_get_activations(models, activations):
    ours, _ = models
    pred, ref = frame_sets()
    assert activations[0].shape == activations[1].shape == (4, 2048)
    # one frame of each side (Inception at 299x299 is the slow part of these tests)
    for frames, act in ((pred[1][1:], activations[0][3:]), (ref[0][:1], activations[1][:1])):
        feats = ours.features(frames)
        assert np.abs(feats - act).max() <= 1e-5 * np.abs(act).max()


def test_reduction_is_exact(activations):
    """The span reduction leaves calculate_frechet_distance's value unchanged (256-d slice)."""
    cols = np.random.default_rng(1).choice(2048, 256, replace=False)
    a1, a2 = activations[0][:, cols], activations[1][:, cols]
    full = package_fd(*package_statistics(a1), *package_statistics(a2))
    assert reduced_reference_fid(a1, a2) == pytest.approx(full, rel=1e-6)
    assert frechet_distance_features(a1, a2) == pytest.approx(full, rel=REL)


def test_fid_matches_pytorch_fid(models, activations):
    ours, _ = models
    pred, ref = frame_sets()
    expected = reduced_reference_fid(*activations)
    pairs = [ClipPair(f"c{i}", pred={"frames": p}, ref={"frames": r})
             for i, (p, r) in enumerate(zip(pred, ref))]
    value = ours.set_value(pairs)
    assert value == pytest.approx(expected, rel=REL)
    assert ours.last_counts == {"clips": 2, "pred_frames": 4, "ref_frames": 4}
    assert expected > 0.05 * np.trace(np.cov(np.vstack(activations), rowvar=False))
