"""gnerf's alternative data sources and its torso network: BiSeNet parsing (random-initialised
weights in the upstream layout, written at test time), face-alignment 3D landmarks (the similarity
that puts them in head coordinates; the networks need a download), the deformable-convolution torso
UNet (one step, shapes, gradients reaching the offsets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import build_method
from baselines.gnerf import GNerfMethod
from core.errors import MetricUnavailable
from test_gnerf import _FAST, _person_clip

pytestmark = pytest.mark.usefixtures("one_thread")


def test_similarity_align_undoes_rotation_scale_translation_and_a_mirrored_depth_axis():
    from baselines.gnerf_a2l.camera import rotation_matrices
    from faces.pose import FACE_TEMPLATE_MM

    template = np.asarray(FACE_TEMPLATE_MM, np.float64)
    moved = 0.013 * template @ rotation_matrices(20.0, -35.0, 10.0).T + np.array([120.0, 80.0, 5.0])
    np.testing.assert_allclose(GNerfMethod.similarity_align(moved, template), template, atol=1e-6)
    mirrored = moved * np.array([1.0, 1.0, -1.0])  # a detector whose depth axis points the other way
    np.testing.assert_allclose(GNerfMethod.similarity_align(mirrored, template), template, atol=1e-6)


def test_fan3d_source_needs_face_alignment_and_its_weights(tmp_path, monkeypatch):
    clip = _person_clip()
    clip.landmarks3d = None
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_3D", str(tmp_path / "none"))
    m = build_method("gnerf", "tiny", {**_FAST, "iters": 2, "landmarks3d": "fan3d"})
    with pytest.raises(MetricUnavailable, match="face-alignment|talkbench weights download fan_3d"):
        m.fit([clip], [], seed=0)
    with pytest.raises(ValueError, match="landmarks3d"):
        build_method("gnerf", "tiny", {**_FAST, "iters": 2, "landmarks3d": "nope"}).fit([clip], [], seed=0)


def test_bisenet_parsing_gives_the_head_mask_and_trains(tmp_path, monkeypatch):
    from faces import bisenet

    torch.manual_seed(0)
    torch.save(bisenet.BiSeNet().state_dict(), tmp_path / "79999_iter.pth")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_BISENET_FACE", str(tmp_path / "79999_iter.pth"))
    clip = _person_clip(frames=6)
    m = build_method("gnerf", "tiny", {**_FAST, "iters": 2, "parsing": "bisenet"})
    head, fg = m._masks(clip.frames, clip.landmarks, 16)
    labels = bisenet.parse(bisenet.load_network(), clip.frames)
    import cv2

    want = np.stack([cv2.resize(np.isin(x, bisenet.HEAD_CLASSES).astype(np.uint8), (16, 16),
                                interpolation=cv2.INTER_NEAREST) for x in labels])
    assert head.shape == (6, 16, 16) and np.array_equal(head, want) and (fg >= head).all()
    m.fit([clip], [], seed=0)
    assert m.model is not None
    monkeypatch.setenv("TALKBENCH_WEIGHTS_BISENET_FACE", str(tmp_path / "absent.pth"))
    with pytest.raises(MetricUnavailable, match="talkbench weights download bisenet_face"):
        build_method("gnerf", "tiny", {**_FAST, "iters": 2, "parsing": "bisenet"}).fit([clip], [], seed=0)


def test_torso_unet_step_shapes_and_offset_gradients():
    from baselines.gnerf.torso import DeformBlock, TorsoUNet

    torch.manual_seed(0)
    net = TorsoUNet(base=8, levels=3)
    head, acc, bg = torch.rand(2, 3, 24, 20), torch.rand(2, 1, 24, 20), torch.rand(2, 3, 24, 20)
    target = torch.rand(2, 3, 24, 20)
    rgb, alpha = net(head, acc, bg)
    assert rgb.shape == (2, 3, 24, 20) and alpha.shape == (2, 1, 24, 20)
    out = TorsoUNet.composite(head, acc, rgb, alpha, bg)
    assert out.shape == (2, 3, 24, 20)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss = torch.nn.functional.smooth_l1_loss(out, target)
    loss.backward()
    blocks = [m for m in net.modules() if isinstance(m, DeformBlock)]
    assert len(blocks) == 5
    for b in blocks:  # zero-initialised offsets still get a gradient (through the bilinear sampling)
        assert b.offset.weight.grad is not None and b.offset.weight.grad[:18].abs().sum() > 0
    before = blocks[0].offset.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, blocks[0].offset.weight)
    # an opaque head hides the torso; a transparent one shows torso over background
    one = torch.ones(1, 1, 2, 2)
    assert torch.equal(TorsoUNet.composite(torch.full((1, 3, 2, 2), 0.3), one, torch.rand(1, 3, 2, 2), one,
                                           torch.rand(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 0.3))


def test_gnerf_with_torso_trains_predicts_and_round_trips(tmp_path):
    clip = _person_clip(frames=8)
    m = build_method("gnerf", "tiny", {**_FAST, "iters": 5, "torso": True, "torso_base": 8, "torso_iters": 3,
                                       "torso_frames": 4, "torso_batch": 2})
    m.fit([clip], [], seed=0)
    assert m.train_log[-1]["stage"] == "torso" and m.train_log[-1]["frames"] == 4
    assert any(k.startswith("nerf.torso.") for k in m.state())
    path = tmp_path / "ck.npz"
    m.save(path)
    loaded = GNerfMethod.load(path)
    from core.types import MethodInput

    inp = MethodInput.from_clip(clip, m.inputs)
    a, b = m.predict(inp), loaded.predict(inp)
    assert a.frames.shape == (clip.num_frames, 32, 32, 3) and np.array_equal(a.frames, b.frames)
    assert GNerfMethod.Config.preset("paper").torso and not GNerfMethod.Config.preset("tiny").torso
