"""faces.bisenet (face parsing) and faces.fan's 3D path (ResNetDepth): random-initialised weights
written at test time in the upstream file layouts load with strict keys through the registry, a
missing file names the download command, shapes and the heatmap / depth scaling are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import MetricUnavailable

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bisenet_layout_loads_an_upstream_style_file_and_parses(tmp_path, monkeypatch):
    from faces import bisenet

    torch.manual_seed(0)
    net = bisenet.BiSeNet()
    keys = set(net.state_dict())
    for k in ("cp.resnet.conv1.weight", "cp.resnet.layer2.0.downsample.0.weight", "cp.arm16.conv.conv.weight",
              "cp.arm32.conv_atten.weight", "cp.arm32.bn_atten.running_var", "cp.conv_avg.conv.weight",
              "cp.conv_head16.bn.weight", "ffm.convblk.conv.weight", "ffm.conv1.weight", "ffm.conv2.weight",
              "conv_out.conv.conv.weight", "conv_out.conv_out.weight", "conv_out32.conv_out.weight"):
        assert k in keys, k
    assert not any(k.startswith(("cp.resnet.fc", "sp.")) for k in keys)
    n = sum(p.numel() for p in net.parameters())
    assert 13.0e6 < n < 13.5e6, n  # 79999_iter.pth is ~53 MB of float32
    monkeypatch.setenv("TALKBENCH_WEIGHTS_BISENET_FACE", str(tmp_path / "missing.pth"))
    with pytest.raises(MetricUnavailable, match="talkbench weights download bisenet_face"):
        bisenet.load_network()
    with torch.no_grad():  # BN statistics away from the defaults, so loading is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    torch.save(net.state_dict(), tmp_path / "79999_iter.pth")  # the upstream file: a plain state dict
    monkeypatch.setenv("TALKBENCH_WEIGHTS_BISENET_FACE", str(tmp_path / "79999_iter.pth"))
    loaded = bisenet.load_network()
    x = torch.rand(1, 3, 64, 64)
    outs = loaded(x)
    assert [tuple(o.shape) for o in outs] == [(1, 19, 64, 64)] * 3
    assert torch.equal(outs[0], net.eval()(x)[0])
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    labels = bisenet.parse(loaded, frames, size=64)
    assert labels.shape == (2, 40, 48) and labels.dtype == np.uint8 and labels.max() < 19
    head, torso, bg = bisenet.split(np.array([[0, 1, 14], [17, 16, 10]]))
    assert head.tolist() == [[False, True, False], [True, False, True]]
    assert torso.tolist() == [[False, False, True], [False, True, False]] and bg.tolist()[0] == [True, False, False]


def test_landmark_heatmaps_match_the_direct_formula():
    from faces.fan import landmark_heatmaps

    pts = np.array([[100.4, 50.7], [3.0, 3.0], [-5.0, 10.0]] + [[0.0, 0.0]] * 65)
    hm = landmark_heatmaps(pts)
    assert hm.shape == (68, 256, 256) and hm.max() == pytest.approx(1.0)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (49, 99)  # 1-based point -> pixel floor(p) - 1
    assert hm[0, 49, 99 + 3] == pytest.approx(np.exp(-9 / (2 * 3.25 ** 2)), rel=1e-6)
    assert hm[0, 49, 99 + 7] == 0  # outside the 13 x 13 window
    assert hm[1, 2, 2] == pytest.approx(1.0) and hm[1, 0, 0] > 0  # the window cut at the border
    assert hm[2].sum() == 0 and hm[3:].sum() == 0  # points outside / at 0 give empty maps


def test_depth_network_layout_loads_a_dataparallel_file_and_scales(tmp_path, monkeypatch):
    from faces import fan

    torch.manual_seed(0)
    net = fan.build_depth_network()
    sd = net.state_dict()
    assert sd["conv1.weight"].shape == (64, 71, 7, 7) and sd["fc.weight"].shape == (68, 2048)
    assert sum(1 for k in sd if k.startswith("layer3.") and k.endswith("conv1.weight")) == 36
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_DEPTH", str(tmp_path / "nothing"))
    with pytest.raises(MetricUnavailable, match="talkbench weights download fan_depth"):
        fan.load_depth_network()
    # face-alignment's depth file: {"state_dict": ...} saved from nn.DataParallel
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "depth-2a464da4ea.pth.tar")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_DEPTH", str(tmp_path / "depth-2a464da4ea.pth.tar"))
    loaded = fan.load_depth_network()
    crop = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    pts = np.random.default_rng(2).uniform(20, 230, (68, 2))
    z1 = fan.depth_from_crop(loaded, crop, pts, scale=1.0)
    z2 = fan.depth_from_crop(loaded, crop, pts, scale=2.0)
    assert z1.shape == (68,) and np.isfinite(z1).all()
    np.testing.assert_allclose(z2, 2 * z1, rtol=1e-5)
    with torch.no_grad():
        inp = torch.cat([torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255)[None],
                         torch.from_numpy(fan.landmark_heatmaps(pts))[None]], 1)
        np.testing.assert_allclose(z1, net.eval()(inp)[0].numpy() * 200 / 256, rtol=1e-4, atol=1e-6)


def test_fan3d_weights_need_the_download(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    from faces import fan

    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_3D", str(tmp_path / "nothing"))
    with pytest.raises(MetricUnavailable, match="talkbench weights download fan_3d"):
        fan.load_network_3d()
    torch.save(fan.build_network().state_dict(), tmp_path / "3DFAN4-7835d9f11d.pth.tar")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_FAN_3D", str(tmp_path / "3DFAN4-7835d9f11d.pth.tar"))
    net3d = fan.load_network_3d()
    frame = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    out = fan.landmarks3d_in_box(net3d, fan.build_depth_network().eval(), frame, np.array([50, 50, 150, 150]))
    assert out.shape == (68, 3) and np.isfinite(out).all()
