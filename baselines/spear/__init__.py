"""SPEAR end to end (Cao & Tran, 2025): stage 1 `spear_a2l` (audio -> lower-face landmarks) chained
with stage 2, the landmark-to-face SPADE-Net in the latent space of a frozen VAE (section 3.2).

Registered methods:

    spear           stage 1 + stage 2 (G1 predicts a latent optical flow, G2 uses the warped features)
    spear_no_flow   ablation: stage 2 without G1 (G2 conditioned on the target landmark latent and
                    the unwarped reference latent), to show what the flow warping buys

Stage 1 is `baselines.spear_a2l.SpearA2LMethod` itself (its preset named by `stage1_preset`, with
`stage1` overrides), fitted first into `workdir/stage1`; its weights are part of this checkpoint
under `stage1.`. Stage 2 (`model.py`):

- Inputs per target frame: the target landmarks rendered as a sketch (`render_sketch`: iBUG-68 parts
  drawn as coloured lines on a black canvas), the "target" frame with its lower half masked, the
  reference frame and its sketch. Each goes through the frozen VAE encoder (posterior mean times the
  scaling factor) to a 4-channel latent; SPADE-Net predicts the target latent; the VAE decoder makes
  the frame.
- Target landmarks: stage 1 predicts jaw + mouth (37 points); the other 31 points (brows, nose,
  eyes) are the reference's, moved by the similarity transform that maps the reference's upper jaw
  (points 0-4, 12-16, which mouth opening barely moves) onto the predicted one (`full_landmarks`).
  Training builds the target sketch the same way from the ground-truth jaw + mouth.
- Losses (Eq. 8): lambda_r * MSE(image) + lambda_p * VGG19 perceptual + lambda_g * GAN + lambda_m *
  MSE inside the mouth box (the mouth points' box grown by `mouth_margin` on each side), all on the
  decoded frames. GAN: least-squares (LSGAN) with pix2pix's PatchDiscriminator on the decoded frames;
  the discriminator is part of the model and trained in the same step: its loss is computed on the
  detached fake and added to the total, while the generator's adversarial term is computed with the
  discriminator's parameters frozen, so one Adam step is exactly the simultaneous G / D update (the
  reported training loss includes the discriminator's term; the val loss has no GAN terms).
- Paper preset: the SD VAE `stabilityai/sd-vae-ft-mse` (registry `sd_vae_ft_mse`, scaling 0.18215)
  at 256 px (latents 4 x 32 x 32), VGG19 ImageNet weights (registry `vgg19`), lambda_r = lambda_g =
  1, lambda_p = 4, lambda_m = 2.5, Adam lr 1e-4, batch 32, 300 epochs. N, the SPADE block count,
  is not in the paper: N = 4 residual blocks per generator, 256 channels, SPADE hidden width 128,
  after IP_LAP's renderer (SPADE blocks of 256 channels in its DenseFlowNetwork, SPADE's default
  128-channel hidden layer). Parameter counts (SpadeNet G1 + G2 / discriminator / VAE, frozen):
  paper 20.8M (G1 9.5M, G2 11.3M) / 2.8M / 83.7M; tiny 0.25M (G1 0.12M,
  G2 0.14M; spear_no_flow 0.12M) / 0.04M / 0.24M.

Departures from the paper, and why:
- The "masked target frame": talkbench methods get no driving video (only its pose), so at
  prediction there is no target frame to mask; the masked frame is the reference (identity) frame
  with its lower half masked, and training uses the same so the network never learns to rely on
  what prediction cannot give it. The upper face then follows the target sketch through G1's flow.
- Reference frame: the clip's first frame (what `predict` gets), not a random frame of the video.
- Optimiser schedule: the shared trainer's Adam + cosine annealing instead of ExponentialLR (whose
  gamma the paper does not give). An epoch at `paper` is one pass over every training frame
  (`epoch_mode="all_windows"` with 1-frame windows).

Tiny preset (a CPU recipe for synthtalk): frames, sketches and generated frames are 64 px
(`size`), resized (bicubic) to the protocol's frame size; the VAE is a small AutoencoderKL
(16/32/32 channels, 4x downsampling: latents 4 x 16 x 16) trained by talkbench on train-split
frames for `vae_steps` = 200 steps of 8 frames (L1 + KL, `baselines.latent_vae.train_autoencoder`;
its posterior log-variance bias starts at -10 rather than 0 so the decoder is not first trained on
unit-variance noise), kept in this checkpoint and cached in the run folder; stage 1 is spear_a2l's
tiny preset with 30 epochs instead of 60; SPADE-Net has N = 2 blocks of 32 channels and G2's output
is added to the warped reference latent (`residual`, not in the paper: in 12 epochs G2 cannot learn
a whole face from scratch); 12 epochs of one frame per training clip, batch 8, lr 2e-3, gradient
norm clipped at 1; lambda_g = 0.1 instead of 1 (measured on synthtalk, residual G2: with 1 the
discriminator dominates a 12-epoch fit and dlib finds a face in none of the test frames, with 0.1
in 62 %); the perceptual term is off (lambda_p = 0): a VGG19 forward and backward pass per step
costs more than the whole tiny budget on two cores, and random VGG weights would not be the
ImageNet perceptual space anyway. The tiny VAE is the quality bottleneck: 64 px reconstructions of
synthtalk test frames reach about 17 dB PSNR after 100 steps and 19 dB after 300 (measured).

Measured on synthtalk (tiny, seed 0, 2 shared CPU cores at load average ~10, so slower than on a
quiet machine): fit 419 s (stage 1 95 s, VAE 186 s, stage 2 125 s), over the 2-minute target;
dlib finds a face in 65 % of spear's test frames (target 95 %; every frame of one test speaker
fails); against static: M-LD on stage 1's landmarks 1.67 vs 5.72, M-LD on landmarks detected in
the frames 5.19 vs 5.47 on the 16 of 24 clips where dlib finds spear's face, LSE-C (expert) 0.59
vs 0.66 (worse), PSNR 17.8 vs 26.1, SSIM 0.75 vs 0.88; spear_no_flow (fit 377 s) PSNR 18.3, SSIM
0.77, so at this budget the flow does not pay yet. The tiny VAE's blur limits the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import register
from baselines import latent_vae
from baselines.image_training import PatchDiscriminator, VGG19Perceptual, lsgan_d_loss, lsgan_g_loss
from baselines.spear.model import SpadeNet
from baselines.spear_a2l import POINTS, SpearA2LConfig, SpearA2LMethod
from baselines.torch_method import TorchMethod, TorchMethodConfig, crop_starts
from core.constants import MOUTH
from core.types import Clip, MethodInput, Prediction

# iBUG-68 parts drawn on the sketch: (indices, closed, BGR-free RGB colour)
SKETCH_PARTS: tuple[tuple[tuple[int, ...], bool, tuple[int, int, int]], ...] = (
    (tuple(range(0, 17)), False, (255, 255, 255)),  # jaw
    (tuple(range(17, 22)), False, (255, 128, 0)),  # right brow
    (tuple(range(22, 27)), False, (255, 128, 0)),  # left brow
    (tuple(range(27, 31)), False, (0, 255, 255)),  # nose bridge
    (tuple(range(30, 36)), True, (0, 255, 255)),  # lower nose
    (tuple(range(36, 42)), True, (0, 255, 0)),  # right eye
    (tuple(range(42, 48)), True, (0, 255, 0)),  # left eye
    (tuple(range(48, 60)), True, (255, 0, 0)),  # outer lip
    (tuple(range(60, 68)), True, (255, 0, 255)),  # inner lip
)
UPPER_JAW = (0, 1, 2, 3, 4, 12, 13, 14, 15, 16)  # moved by the head, barely by the mouth
_REST = tuple(i for i in range(68) if i not in POINTS)  # brows, nose, eyes


def render_sketch(landmarks: np.ndarray, frame_size: tuple[int, int], size: int) -> np.ndarray:
    """T x 68 x 2 pixel landmarks of `frame_size` (H, W) frames -> T x size x size x 3 uint8 sketches."""
    lmk = np.asarray(landmarks, dtype=np.float64)
    if lmk.ndim != 3 or lmk.shape[1:] != (68, 2):
        raise ValueError(f"render_sketch needs T x 68 x 2 landmarks, got {lmk.shape}")
    h, w = frame_size
    scale = np.array([size / w, size / h])
    thickness = max(1, int(round(size / 128)))
    shift = 4
    out = np.zeros((len(lmk), size, size, 3), np.uint8)
    for t, points in enumerate(lmk):
        fixed = np.round(points * scale * (1 << shift)).astype(np.int32)
        for idx, closed, colour in SKETCH_PARTS:
            cv2.polylines(out[t], [fixed[list(idx)].reshape(-1, 1, 2)], closed, colour, thickness,
                          cv2.LINE_AA, shift)
    return out


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R src + t - dst| over N x 2 point sets (Umeyama, no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    scale = float((sig * np.diag(d)).sum() / max((a ** 2).sum(), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def full_landmarks(lower: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """T x 37 jaw + mouth points (POINTS order) + the 68 identity points -> T x 68 x 2: the 37 points
    where they are, the other 31 the identity's, moved by the similarity of the upper jaw."""
    lower = np.asarray(lower, np.float64)
    identity = np.asarray(identity, np.float64)
    if lower.ndim != 3 or lower.shape[1:] != (len(POINTS), 2) or identity.shape != (68, 2):
        raise ValueError(f"full_landmarks needs T x {len(POINTS)} x 2 and 68 x 2, got {lower.shape}, {identity.shape}")
    out = np.empty((len(lower), 68, 2))
    jaw_rows = [POINTS.index(i) for i in UPPER_JAW]
    for t, pts in enumerate(lower):
        s, rot, tr = similarity(identity[list(UPPER_JAW)], pts[jaw_rows])
        out[t, list(_REST)] = s * identity[list(_REST)] @ rot.T + tr
        out[t, list(POINTS)] = pts
    return out.astype(np.float32)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 T x H x W x 3 -> T x size x size x 3 (area interpolation)."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def mask_lower_half(images: torch.Tensor) -> torch.Tensor:
    """Zero (black) the lower half of B x 3 x H x W images."""
    out = images.clone()
    out[..., images.shape[-2] // 2:, :] = 0
    return out


def mouth_mask(landmarks: np.ndarray, frame_size: tuple[int, int], size: int, margin: float) -> np.ndarray:
    """B x 68 x 2 pixel landmarks -> B x 1 x size x size float masks of the grown mouth box."""
    h, w = frame_size
    out = np.zeros((len(landmarks), 1, size, size), np.float32)
    for i, pts in enumerate(np.asarray(landmarks)[:, list(MOUTH)]):
        x0, y0 = pts.min(0) * (size / w, size / h)
        x1, y1 = pts.max(0) * (size / w, size / h)
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        c0, r0 = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
        c1, r1 = min(size, int(np.ceil(x1 + mx)) + 1), min(size, int(np.ceil(y1 + my)) + 1)
        out[i, 0, r0:r1, c0:c1] = 1
    return out


_TINY = dict(epochs=12, lr=2e-3, lr_min=1e-4, batch_size=8, window_frames=1, epoch_mode="one_per_clip",
             grad_clip=1.0, threads=1, size=64, vae="tiny", vae_channels=(16, 32, 32), vae_steps=200,
             vae_lr=3e-3, vae_batch=8, channels=32, blocks=2, hidden=32, perceptual=None,
             lambda_p=0.0, lambda_g=0.1, residual=True, disc_ndf=16, disc_layers=2, stage1_preset="tiny",
             stage1={"epochs": 30})
_PAPER = dict(epochs=300, lr=1e-4, lr_min=1e-6, batch_size=32, window_frames=1, epoch_mode="all_windows",
              grad_clip=0.0, size=256, vae="sd", vae_steps=0, channels=256, blocks=4, hidden=128,
              perceptual="vgg19", lambda_p=4.0, disc_ndf=64, disc_layers=3, stage1_preset="paper")


@dataclass
class SpearConfig(TorchMethodConfig):
    stage1_preset: str = "tiny"  # spear_a2l preset of stage 1
    stage1: dict = field(default_factory=dict)  # overrides of that preset
    size: int = 64  # px of the sketches, frames and generated frames (resized to the protocol's size)
    vae: str = "tiny"  # "sd": the registry's SD VAE (frozen); "tiny": small AutoencoderKL trained on train frames
    vae_path: Optional[str] = None  # SD VAE file / folder (default: the weights registry)
    vae_channels: tuple = (32, 64, 64)  # tiny VAE block widths (len - 1 downsamplings)
    vae_steps: int = 150
    vae_lr: float = 2e-3
    vae_batch: int = 16
    channels: int = 32  # SPADE-Net width
    blocks: int = 2  # N: SPADE residual blocks in G1 and in G2
    hidden: int = 32  # SPADE's hidden conv width
    flow: bool = True  # False: the spear_no_flow ablation
    residual: bool = False  # G2's output added to the (warped) reference latent (tiny only; not in the paper)
    lambda_r: float = 1.0
    lambda_p: float = 4.0
    lambda_g: float = 1.0
    lambda_m: float = 2.5
    mouth_margin: float = 0.25  # mouth-box growth on each side, as a fraction of its size
    perceptual: Optional[str] = "vgg19"  # weights of the VGG19 perceptual loss (None: random init)
    disc_ndf: int = 64
    disc_layers: int = 3
    infer_batch: int = 32

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(_TINY), "paper": dict(_PAPER)}


@dataclass
class SpearNoFlowConfig(SpearConfig):
    flow: bool = False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {**_TINY, "flow": False},
                                                    "paper": {**_PAPER, "flow": False}}


class SpearRenderer(nn.Module):
    """Frozen VAE + SpadeNet (+ the patch discriminator, used in training only)."""

    def __init__(self, vae: nn.Module, scaling: float, net: SpadeNet, disc: Optional[nn.Module]) -> None:
        super().__init__()
        self.vae, self.net, self.disc = vae, net, disc
        self.scaling = float(scaling)
        for p in self.vae.parameters():
            p.requires_grad_(False)

    def encode(self, *images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B x 3 x S x S in [0, 1]) -> scaled latents, one encoder pass for all."""
        with torch.no_grad():
            z = latent_vae.encode(self.vae, torch.cat(images, 0), self.scaling)
        return list(z.chunk(len(images), 0))

    def forward(self, masked, sketch, reference, ref_sketch) -> torch.Tensor:
        """Images in [0, 1] -> the generated frame in [0, 1] (unclamped)."""
        z_masked, z_sketch, z_ref, z_ref_sketch = self.encode(masked, sketch, reference, ref_sketch)
        z = self.net(z_masked, z_sketch, z_ref, z_ref_sketch)
        return latent_vae.decode(self.vae, z, self.scaling)


def _as_images(frames: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float() / 255.0


@register
class SpearMethod(TorchMethod):
    name = "spear"
    ablations = ("spear_no_flow",)
    description = ("SPEAR end to end: spear_a2l landmarks, then SPADE-Net with latent optical-flow "
                   "warping in a frozen VAE's latent space -> frames")
    inputs = frozenset({"audio", "identity_frame", "identity_landmarks", "pose"})
    outputs = frozenset({"landmarks", "frames"})
    Config = SpearConfig
    points = POINTS

    def __init__(self, config: Optional[SpearConfig] = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.stage1 = SpearA2LMethod(SpearA2LConfig.preset(cfg.stage1_preset, **dict(cfg.stage1)))
        self._vae: Optional[nn.Module] = None  # set by fit (pretrained or trained) before build_model
        self._small: dict[str, np.ndarray] = {}
        self._perceptual: Optional[nn.Module] = None

    # -- model -------------------------------------------------------------------------
    def vae_architecture(self) -> tuple[nn.Module, float]:
        cfg = self.config
        if cfg.vae == "sd":
            return latent_vae.sd_vae_architecture(), latent_vae.SD_VAE_SCALING
        if cfg.vae == "tiny":
            return latent_vae.tiny_autoencoder(block_out_channels=tuple(cfg.vae_channels)), 1.0
        raise ValueError(f"{self.name}: vae must be 'sd' or 'tiny', not {cfg.vae!r}")

    def build_model(self) -> nn.Module:
        cfg = self.config
        vae, scaling = self.vae_architecture()
        if self._vae is not None:
            vae.load_state_dict(self._vae.state_dict())
        net = SpadeNet(latent=vae.config.latent_channels, channels=cfg.channels, blocks=cfg.blocks,
                       hidden=cfg.hidden, flow=cfg.flow,
                       residual=cfg.residual)
        disc = PatchDiscriminator(3, cfg.disc_ndf, cfg.disc_layers) if cfg.lambda_g > 0 else None
        return SpearRenderer(vae, scaling, net, disc)

    # -- training ----------------------------------------------------------------------
    def fit(self, train: list[Clip], val: list[Clip], *, device: str = "cpu", seed: int = 0,
            workdir=None) -> None:
        if not train:
            raise ValueError(f"{self.name}: fit needs at least one training clip")
        missing = [c.id for c in train if not c.has_frames]
        if missing:
            raise ValueError(f"{self.name}: training clips without frames: {missing[:5]}")
        from pathlib import Path

        workdir = Path(workdir) if workdir else None
        self.stage1.fit(train, val, device=device, seed=seed, workdir=workdir / "stage1" if workdir else None)
        self._small = {}
        self._vae = self.fit_vae(train, device, seed, workdir)
        super().fit(train, val, device=device, seed=seed, workdir=workdir)
        self._small = {}

    def fit_vae(self, train: list[Clip], device: str, seed: int, workdir) -> nn.Module:
        cfg = self.config
        if cfg.vae == "sd":
            return latent_vae.load_sd_vae(cfg.vae_path).to(device)
        vae, _ = self.vae_architecture()
        key = {"config": self.config.hash(), "seed": seed, "train": [c.id for c in train]}
        cache = workdir / "vae_tiny.pt" if workdir else None
        if cache is not None and cache.exists():
            saved = torch.load(cache, map_location="cpu", weights_only=False)
            if saved.get("key") == key:
                vae.load_state_dict(saved["state"])
                return vae.to(device).eval()
        torch.manual_seed(seed)
        vae, _ = self.vae_architecture()
        with torch.no_grad():  # posterior log-variance starts at -10: the decoder is not first
            vae.quant_conv.bias[vae.config.latent_channels:] = -10.0  # trained on unit-variance noise
        vae = vae.to(device)

        def frames_fn(rng: np.random.Generator) -> np.ndarray:
            picks = rng.integers(0, len(train), cfg.vae_batch)
            return np.stack([self._frames(train[i])[rng.integers(0, train[i].num_frames)] for i in picks])

        before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        if torch.device(device).type == "cpu":
            torch.use_deterministic_algorithms(True)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        try:
            latent_vae.train_autoencoder(vae, frames_fn, steps=cfg.vae_steps, batch_size=cfg.vae_batch,
                                         lr=cfg.vae_lr, size=cfg.size, seed=seed)
        finally:
            torch.use_deterministic_algorithms(before)
            torch.set_num_threads(threads)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "state": vae.state_dict()}, cache)
        return vae.eval()

    def _frames(self, clip: Clip) -> np.ndarray:
        """The clip's frames at `size` px (cached for the fit)."""
        if clip.id not in self._small:
            self._small[clip.id] = resize_frames(clip.frames, self.config.size)
        return self._small[clip.id]

    def make_batch(self, clips: list[Clip], rng: np.random.Generator, device,
                   starts=None) -> dict[str, torch.Tensor]:
        cfg = self.config
        _, starts = crop_starts(clips, rng, 1, starts)
        target, reference, sketch, ref_sketch, mouth = [], [], [], [], []
        for clip, t in zip(clips, starts):
            small = self._frames(clip)
            size = tuple(clip.frames.shape[1:3])
            ident = clip.landmarks[0]
            full = full_landmarks(clip.landmarks[t:t + 1, list(POINTS)], ident)
            target.append(small[t])
            reference.append(small[0])
            sketch.append(render_sketch(full, size, cfg.size)[0])
            ref_sketch.append(render_sketch(ident[None], size, cfg.size)[0])
            mouth.append(mouth_mask(clip.landmarks[t:t + 1], size, cfg.size, cfg.mouth_margin)[0])
        imgs = lambda xs: _as_images(np.stack(xs), device)  # noqa: E731
        return {"target": imgs(target), "reference": imgs(reference), "sketch": imgs(sketch),
                "ref_sketch": imgs(ref_sketch), "mouth": torch.as_tensor(np.stack(mouth), device=device)}

    def perceptual(self, device) -> nn.Module:
        if self._perceptual is None:
            self._perceptual = VGG19Perceptual(self.config.perceptual)
        return self._perceptual.to(device)

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        target = batch["target"]
        pred = model(mask_lower_half(batch["reference"]), batch["sketch"], batch["reference"], batch["ref_sketch"])
        mouth = batch["mouth"]
        loss = cfg.lambda_r * F.mse_loss(pred, target)
        loss = loss + cfg.lambda_m * (((pred - target) ** 2) * mouth).sum() / (3 * mouth.sum()).clamp_min(1.0)
        if cfg.lambda_p > 0:
            loss = loss + cfg.lambda_p * self.perceptual(pred.device)(pred, target)
        if cfg.lambda_g > 0 and model.training and model.disc is not None:
            disc = model.disc
            disc.requires_grad_(False)  # the generator's term moves the generator only
            g_adv = lsgan_g_loss(disc(pred * 2 - 1))
            disc.requires_grad_(True)
            d_loss = lsgan_d_loss(disc(target * 2 - 1), disc(pred.detach() * 2 - 1))
            loss = loss + cfg.lambda_g * g_adv + d_loss
        return loss

    # -- inference ---------------------------------------------------------------------
    def infer(self, model: nn.Module, inp: MethodInput, device) -> Prediction:
        cfg = self.config
        if inp.identity_frame is None or inp.identity_landmarks is None:
            raise ValueError(f"{self.name}: needs the identity frame and landmarks")
        lower = self.stage1.predict(inp).landmarks
        ident = np.asarray(inp.identity_landmarks, np.float32)
        src_size = tuple(inp.identity_frame.shape[:2])
        out_h, out_w = inp.frame_size or src_size
        full = full_landmarks(lower, ident)
        ref = _as_images(resize_frames(inp.identity_frame[None], cfg.size), device)
        ref_sketch = _as_images(render_sketch(ident[None], src_size, cfg.size), device)
        frames = []
        for i in range(0, len(full), max(1, cfg.infer_batch)):
            chunk = full[i:i + max(1, cfg.infer_batch)]
            n = len(chunk)
            sketch = _as_images(render_sketch(chunk, src_size, cfg.size), device)
            refs = ref.expand(n, -1, -1, -1)
            out = latent_vae.to_uint8(model(mask_lower_half(refs), sketch, refs, ref_sketch.expand(n, -1, -1, -1)))
            frames += [f if f.shape[:2] == (out_h, out_w) else
                       cv2.resize(f, (out_w, out_h), interpolation=cv2.INTER_CUBIC) for f in out]
        return Prediction(inp.clip_id, landmarks=lower.astype(np.float32), points=POINTS,
                          frames=np.stack(frames).astype(np.uint8))

    def predict(self, inp: MethodInput) -> Prediction:
        if self.stage1.model is None:
            raise RuntimeError(f"{self.name}: fit or load before predict")
        return super().predict(inp)

    # -- state -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        own = super().state()
        return {**{f"stage1.{k}": v for k, v in self.stage1.state().items()}, **own}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        first = {k[len("stage1."):]: v for k, v in state.items() if k.startswith("stage1.")}
        if not first:
            raise ValueError(f"{self.name}: checkpoint has no stage-1 (spear_a2l) weights")
        self.stage1.set_state(first)
        super().set_state({k: v for k, v in state.items() if not k.startswith("stage1.")})


@register
class SpearNoFlow(SpearMethod):
    name = "spear_no_flow"
    ablations = ()
    description = "SPEAR without the latent optical flow: G2 conditioned on unwarped latents (ablation)"
    Config = SpearNoFlowConfig


__all__ = ["SpearMethod", "SpearNoFlow", "SpearConfig", "SpearRenderer", "render_sketch", "full_landmarks",
           "mouth_mask", "dataclasses"]
