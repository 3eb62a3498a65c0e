"""The paper's motion backend: Deep3DFaceRecon (Deng et al. 2019) coefficients, from files the user
supplies (the Basel Face Model is licence-gated, so talkbench cannot download either file).

Put the two files under `$TALKBENCH_HOME/weights/deep3d/` (or pass `root`):

- `epoch_20.pth`: the Deep3DFaceRecon_pytorch checkpoint (`checkpoints/<name>/epoch_20.pth` of that
  repository's release; a dict whose `net_recon` entry is the ResNet-50 reconstruction network);
- `BFM_model_front.mat`: the repository's `BFM/BFM_model_front.mat`, which its README builds from
  the Basel Face Model 2009 (`01_MorphableModel.mat`, after accepting the BFM licence) and the
  expression basis of Guo et al.

`ReconNet` is that network: a torchvision ResNet-50 trunk (no classifier) and one 1 x 1 convolution
per coefficient group, [identity 80, expression 64, texture 80, angles 3, lighting 27, translation
xy 2, translation z 1] (257 in all), the checkpoint's key layout (`backbone.*`, `final_layers.N.*`).
`Deep3DBackend.coefficients` gives, per frame, beta = the 64 expression coefficients and
p = [angles (radians, 3), translation (3)]; `mouth_vertices` the 20 mouth keypoints of the BFM mesh
from identity + expression coefficients (Eq. 1 of FD2Talk), for the lip expert.

Departure: Deep3DFaceRecon aligns each face by a similarity fit of 5 landmarks to its standard 3D
template before the 224 x 224 crop; here the crop is the square box of the frame's 68 landmarks
(1.25 x their extent), resized to 224, which is close but not the same alignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import MetricUnavailable

GROUPS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans_xy", 2), ("trans_z", 1))
FILES = {"network": "epoch_20.pth", "bfm": "BFM_model_front.mat"}


class Deep3DUnavailable(MetricUnavailable):
    """The Deep3D network or the BFM file is not on this machine."""


def deep3d_files(root: Optional[Path] = None) -> tuple[Path, Path]:
    """(network checkpoint, BFM .mat) under `root` (default $TALKBENCH_HOME/weights/deep3d)."""
    if root is None:
        from core.paths import talkbench_home

        root = talkbench_home() / "weights" / "deep3d"
    root = Path(root)
    paths = {k: root / v for k, v in FILES.items()}
    missing = [f"{p} ({'Deep3DFaceRecon_pytorch checkpoints/<name>/epoch_20.pth' if k == 'network' else 'Deep3DFaceRecon_pytorch BFM/BFM_model_front.mat, built from the Basel Face Model 2009 after accepting its licence'})"
               for k, p in paths.items() if not p.is_file()]
    if missing:
        raise Deep3DUnavailable("the Deep3D motion backend needs files talkbench cannot download (the Basel Face "
                                "Model is licence-gated); put them here: " + "; ".join(missing))
    return paths["network"], paths["bfm"]


class ReconNet(nn.Module):
    """Deep3DFaceRecon's reconstruction network: ResNet-50 trunk + one 1 x 1 conv per coefficient group."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        trunk = torchvision.models.resnet50(weights=None)
        trunk.fc = nn.Identity()
        self.backbone = trunk
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, n, 1) for _, n in GROUPS)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: B x 3 x 224 x 224 RGB in [0, 1] -> coefficient groups."""
        feat = self.backbone(images)[:, :, None, None]
        return {name: layer(feat).flatten(1) for (name, _), layer in zip(GROUPS, self.final_layers)}


class Deep3DBackend:
    """Deep3D coefficients of frames, and BFM mouth vertices of coefficients."""

    def __init__(self, root: Optional[Path] = None, device: str = "cpu") -> None:
        net_path, bfm_path = deep3d_files(root)
        self.device = device
        self.net = ReconNet()
        blob = torch.load(net_path, map_location="cpu", weights_only=True)
        state = blob.get("net_recon", blob) if isinstance(blob, dict) else blob
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("backbone.fc.")}
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise Deep3DUnavailable(f"{net_path} is not a Deep3DFaceRecon net_recon checkpoint "
                                    f"({str(exc).splitlines()[0]})") from exc
        self.net.eval().to(device)
        from scipy.io import loadmat

        bfm = loadmat(str(bfm_path))
        try:
            self.mean_shape = np.asarray(bfm["meanshape"], np.float32).reshape(-1)
            self.id_base = np.asarray(bfm["idBase"], np.float32)
            self.exp_base = np.asarray(bfm["exBase"], np.float32)
            self.keypoints = np.asarray(bfm["keypoints"], np.int64).reshape(-1) - 1  # 1-based in the file
        except KeyError as exc:
            raise Deep3DUnavailable(f"{bfm_path} lacks {exc}; expected Deep3DFaceRecon's BFM_model_front.mat") from exc
        if len(self.keypoints) != 68:
            raise Deep3DUnavailable(f"{bfm_path}: expected 68 keypoints, found {len(self.keypoints)}")

    @staticmethod
    def crop(frames: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """uint8 T x H x W x 3 frames and T x 68 x 2 landmarks -> T x 3 x 224 x 224 in [0, 1]."""
        out = []
        for frame, lmk in zip(frames, landmarks):
            lo, hi = lmk.min(0), lmk.max(0)
            centre, half = (lo + hi) / 2, max(float((hi - lo).max()) * 0.625, 8.0)
            x0, y0 = int(round(centre[0] - half)), int(round(centre[1] - half))
            size = int(round(2 * half))
            H, W = frame.shape[:2]
            pad = max(0, -x0, -y0, x0 + size - W, y0 + size - H)
            img = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else frame
            patch = img[y0 + pad:y0 + pad + size, x0 + pad:x0 + pad + size]
            t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float()[None] / 255.0
            out.append(F.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False)[0])
        return torch.stack(out)

    @torch.no_grad()
    def coefficients(self, frames: np.ndarray, landmarks: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
        """Per frame: `beta` (T x 64), `pose` (T x 6: angles in radians, translation), `id` (T x 80)."""
        groups = {name: [] for name, _ in GROUPS}
        for i in range(0, len(frames), batch):
            x = self.crop(frames[i:i + batch], landmarks[i:i + batch]).to(self.device)
            for name, value in self.net(x).items():
                groups[name].append(value.cpu())
        g = {k: torch.cat(v).numpy() for k, v in groups.items()}
        pose = np.concatenate([g["angle"], g["trans_xy"], g["trans_z"]], axis=1)
        return {"beta": g["exp"], "pose": pose.astype(np.float32), "id": g["id"]}

    def mouth_vertices(self, identity: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """BFM shape (Eq. 1: mean + id basis x alpha + expression basis x beta) at the 20 mouth
        keypoints (iBUG 48-67): T x 20 x 3."""
        rows = np.concatenate([[3 * k, 3 * k + 1, 3 * k + 2] for k in self.keypoints[48:68]])
        shape = (self.mean_shape[rows][None] + identity @ self.id_base[rows].T + beta @ self.exp_base[rows].T)
        return shape.reshape(len(beta), 20, 3)
