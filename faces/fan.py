"""FAN 68-point landmarks (Bulat & Tzimiropoulos 2017) through the PyPI package `face-alignment`,
the ``fan`` landmark backend (`faces.extractors.FanExtractor`).

What comes from the package: the network definition (``face_alignment.models.FAN``), its crop
(``face_alignment.utils.crop``: a 256 x 256 window around a centre and scale), the flip helper and
the heatmap decoding (``get_preds_fromhm``: arg-max of each 64 x 64 heatmap, a quarter-pixel step
towards the larger neighbour, mapped back to image pixels). What talkbench does itself, following
``FaceAlignment.get_landmarks_from_image`` of face-alignment 1.5: centre = box centre raised by
0.12 x box height, scale = (box width + box height) / 195 (the package's REFERENCE_SCALE), RGB
scaled to [0, 1], heatmaps of the last hourglass module.

Deviations, on purpose:

* Weights are loaded from the talkbench weights folder (registry entry ``fan_2d``, the package's own
  file ``2DFAN4-11f355bf06.pth.tar``, a plain state dict of ``FAN(4)`` since face-alignment 1.5;
  older releases shipped TorchScript files). ``FaceAlignment`` itself would download it into the
  torch hub cache on construction, so it is not instantiated; nothing is downloaded here.
* Face detector: dlib's HOG detector (the box of `DlibExtractor`, largest face), not the package's
  default S3FD. This is the package's own ``face_detector='dlib'`` choice on CPU (its DlibDetector
  uses ``get_frontal_face_detector`` there, with the same reference scale), keeps one detector for
  every landmark backend (a fan-vs-dlib comparison then differs only in the landmark regressor), and
  needs no second download (S3FD, ~86 MB). Faces S3FD would find and HOG misses (profile views,
  small faces) count as misses.
* 3D landmarks (``landmarks3d_in_box``, face-alignment's ``LandmarksType.THREE_D``): 3DFAN-4 (registry
  ``fan_3d``, the same ``FAN(4)`` layout) gives x, y as above; its depth network ``ResNetDepth``
  (registry ``fan_depth``) is built here from torchvision's ResNet (Bottleneck blocks [3, 8, 36, 3],
  a first convolution over RGB + 68 heatmap channels, a 7 x 7 average pool, 68 outputs: the
  package's layout and key names), so only FAN itself needs the package. The depth network's input
  is the 256 x 256 crop with one Gaussian per landmark drawn at the landmark's crop position
  (``landmark_heatmaps``: peak 1, sigma 3.25 px in a 13 x 13 window, the values of the package's
  ``draw_gaussian(heatmap, point, 2)``; written here from that description), and its output is
  scaled back to image pixels by 200 x scale / 256, as the package does. Not compared against the
  package's own 3D output (the package is an optional extra, not installed on the test machines).
* ``flip_input`` defaults to False (the package's default is True: it averages the heatmaps of the
  mirrored crop); the talking-head evaluation code that uses FAN constructs it with
  ``flip_input=False``. Set ``flip_input: true`` in ``landmark_params`` to follow the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.errors import MetricUnavailable
from core.weights import load_state_dict_strict

WEIGHTS_NAME = "fan_2d"
WEIGHTS_3D = "fan_3d"
WEIGHTS_DEPTH = "fan_depth"
NUM_MODULES = 4  # 2DFAN-4: four stacked hourglasses
_INSTALL_HINT = "install it with `pip install face-alignment`"


def _package():
    try:
        import face_alignment.models as models
        import face_alignment.utils as utils
    except ImportError as exc:
        raise MetricUnavailable(f"the fan landmark backend needs the package face-alignment "
                                f"({exc}); {_INSTALL_HINT}") from exc
    return models, utils


def build_network(num_modules: int = NUM_MODULES):
    """face-alignment's FAN with random weights (the layout of the official state dict)."""
    models, _ = _package()
    return models.FAN(num_modules)


def load_network(path: Optional[Path] = None, device: str = "cpu"):
    """FAN-4 with the registered weights (strict keys), eval mode. Missing file: MetricUnavailable
    naming `talkbench weights download fan_2d`."""
    from core.weights import resolve

    path = resolve(WEIGHTS_NAME, path)
    net = load_state_dict_strict(build_network(), path, WEIGHTS_NAME, "face-alignment's 2DFAN-4")
    return net.to(device)


def load_network_3d(path: Optional[Path] = None, device: str = "cpu"):
    """3DFAN-4 (`fan_3d`, FAN(4) layout), eval mode; missing file: `talkbench weights download fan_3d`."""
    from core.weights import resolve

    path = resolve(WEIGHTS_3D, path)
    return load_state_dict_strict(build_network(), path, WEIGHTS_3D, "face-alignment's 3DFAN-4").to(device)


def build_depth_network():
    """face-alignment's ResNetDepth with random weights: a torchvision ResNet with Bottleneck blocks
    [3, 8, 36, 3], 3 + 68 input channels, a 7 x 7 average pool (on the 8 x 8 map of a 256 input it
    keeps the top-left 7 x 7 window, as the package's nn.AvgPool2d(7) does) and 68 outputs."""
    import torch
    from torchvision.models.resnet import Bottleneck, ResNet

    net = ResNet(Bottleneck, [3, 8, 36, 3], num_classes=68)
    net.conv1 = torch.nn.Conv2d(3 + 68, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.avgpool = torch.nn.AvgPool2d(7)
    return net


def load_depth_network(path: Optional[Path] = None, device: str = "cpu"):
    """ResNetDepth with the registered weights (`fan_depth`), eval mode."""
    from core.weights import resolve

    path = resolve(WEIGHTS_DEPTH, path)
    return load_state_dict_strict(build_depth_network(), path, WEIGHTS_DEPTH,
                                  "face-alignment's ResNetDepth").to(device)


def landmark_heatmaps(points: np.ndarray, size: int = 256, sigma: float = 3.25, radius: int = 6) -> np.ndarray:
    """68 x size x size heatmaps, one Gaussian (peak 1, `sigma` px, a (2 radius + 1)^2 window, values
    clipped to 1) per point of `points` (68 x 2, the package's 1-based crop coordinates: the peak
    sits on 0-based pixel floor(p) - 1). Points outside the crop give an empty map."""
    out = np.zeros((len(points), size, size), np.float32)
    offs = np.arange(-radius, radius + 1)
    g = np.exp(-(offs[:, None] ** 2 + offs[None, :] ** 2) / (2.0 * sigma ** 2)).astype(np.float32)
    for i, (x, y) in enumerate(np.asarray(points, np.float64)):
        if not (x > 0 and y > 0):
            continue
        cx, cy = int(np.floor(x)) - 1, int(np.floor(y)) - 1
        x0, x1, y0, y1 = cx - radius, cx + radius + 1, cy - radius, cy + radius + 1
        if x1 <= 0 or y1 <= 0 or x0 >= size or y0 >= size:
            continue
        gx0, gy0 = max(0, -x0), max(0, -y0)
        gx1, gy1 = g.shape[1] - max(0, x1 - size), g.shape[0] - max(0, y1 - size)
        out[i, max(0, y0):min(size, y1), max(0, x0):min(size, x1)] += g[gy0:gy1, gx0:gx1]
    return np.minimum(out, 1.0)


def depth_from_crop(depth_net: Any, crop: np.ndarray, crop_points: np.ndarray, scale: float,
                    device: str = "cpu") -> np.ndarray:
    """68 depths in image pixels: ResNetDepth on the 256 x 256 RGB uint8 `crop` and the heatmaps of
    `crop_points` (68 x 2 crop coordinates), times 200 x scale / 256 (the crop's pixel size)."""
    import torch

    heat = torch.from_numpy(landmark_heatmaps(crop_points, crop.shape[0]))[None]
    inp = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
    with torch.no_grad():
        z = depth_net(torch.cat([inp, heat], 1).to(device)).reshape(-1).float().cpu().numpy()
    return z * (200.0 * scale / 256.0)


def landmarks3d_in_box(net3d: Any, depth_net: Any, frame: np.ndarray, box: np.ndarray,
                       device: str = "cpu") -> np.ndarray:
    """68 x 3 float32 (x, y image pixels, z depth in the same pixel scale) of the face in `box`."""
    import torch

    _, utils = _package()
    center, scale = center_scale(box)
    crop = utils.crop(np.ascontiguousarray(frame), center, scale)
    inp = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(device)
    with torch.no_grad():
        heatmaps = _last(net3d(inp)).detach().to("cpu", torch.float32).numpy()
    pts, pts_img, _ = utils.get_preds_fromhm(heatmaps, center, scale)
    crop_pts = np.asarray(pts, np.float64).reshape(68, 2) * 4.0  # heatmap (64) -> crop (256) pixels
    z = depth_from_crop(depth_net, crop, crop_pts, scale, device)
    return np.concatenate([np.asarray(pts_img, np.float64).reshape(68, 2), z[:, None]], 1).astype(np.float32)


def center_scale(box: np.ndarray) -> tuple[np.ndarray, float]:
    """face-alignment's crop centre and scale of a (x0, y0, x1, y1) face box."""
    _, utils = _package()
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0])
    center[1] -= (y1 - y0) * utils.CENTER_Y_OFFSET
    return center, (x1 - x0 + y1 - y0) / utils.REFERENCE_SCALE


def landmarks_in_box(net: Any, frame: np.ndarray, box: np.ndarray, flip_input: bool = False,
                     device: str = "cpu") -> np.ndarray:
    """68 x 2 float32 landmarks (x, y pixels) of the face in `box` of one RGB uint8 frame."""
    import torch

    _, utils = _package()
    center, scale = center_scale(box)
    crop = utils.crop(np.ascontiguousarray(frame), center, scale)
    inp = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(device)
    with torch.no_grad():
        out = _last(net(inp)).detach()
        if flip_input:
            out = out + utils.flip(_last(net(utils.flip(inp))).detach(), is_label=True)
    heatmaps = out.to("cpu", torch.float32).numpy()
    _, pts_img, _ = utils.get_preds_fromhm(heatmaps, center, scale)
    return np.asarray(pts_img, dtype=np.float32).reshape(68, 2)


def _last(out: Any):
    """FAN returns the heatmaps of every hourglass module; the last one is the prediction."""
    return out[-1] if isinstance(out, (list, tuple)) else out
