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
