"""FD2Talk: facial decoupled diffusion (Yao et al., papers/fd2talk.txt, sections 3.2-3.4).

Registered methods (Tables 2 and 3 of the paper are ablations of the same two-stage model):

    fd2talk                 the full model
    fd2talk_single_dit      one DiT predicts [beta, p] jointly (Table 2)
    fd2talk_concat_cond     the UNet's two conditions concatenated into one cross-attention (Table 2)
    fd2talk_no_align        no alignment mask in the DiTs' cross-attention (Table 3)
    fd2talk_no_sync         no lip-expert loss L_sync (Table 3)

Stage 1 (motion). Exp-DiT and Pose-DiT (`model.MotionDiT`, the same architecture) denoise 25-frame
windows of expression coefficients beta and head pose p. Condition c = timestep embedding (diffusers
`Timesteps` + `TimestepEmbedding`) concatenated with wav2vec2 features (transformers'
`Wav2Vec2Model`, `baselines.audio_frontends`), projected by a linear layer to tau(c) and fed by
cross-attention under the alignment mask |i - j| <= k, k = 3. They predict x0; training noise is
diffusers' `DDPMScheduler` (1000 steps, linear betas), sampling is diffusers'
`DDIMScheduler(prediction_type="sample")` (50 steps at `paper`, `ddim_steps_motion` at `tiny`).
L_first = lambda_exp L_exp + lambda_pose L_pose + lambda_sync L_sync (Eq. 12) with MSE on the
normalised coefficients and L_sync = -log P_sync of a frozen lip expert (Eq. 10-11).

Motion representation (the protocol's motion backend): the clip's `motion` (T x M expression
coefficients) and `pose` (T x 6). On synthtalk these are its exact expression coefficients and pose.
`motion_backend` chooses: "given" (the clip's `motion`; an error on clips without it), "landmark_pca"
(the built-in backend, below), "deep3d" (the paper's: Deep3DFaceRecon expression and pose
coefficients, from user-supplied network and BFM files, `deep3d.py`; the lip expert then reads the
BFM mouth vertices) or "auto" (the default: "given" when every train clip has `motion`, else
"landmark_pca"). Deep3D coefficients are computed in `fit` from the train frames (kept in memory,
not cached with the prepared clips: a departure from the issue's wish, for want of time).
- landmark_pca (built in, no download): every frame's 68 2D landmarks are aligned to the train-split
  mean shape by a 2D similarity (Procrustes: translation, scale, in-plane rotation removed), and
  beta = their coordinates on the first `pca_components` principal components of the aligned train
  frames. It captures mouth, jaw, brow and eye-lid deformation as seen in the image plane; it does
  not separate expression from out-of-plane head rotation (yaw / pitch foreshorten the aligned shape
  and leak into beta), and it has no depth. The pose is the clip's `pose` from the protocol's pose
  backend (prepared with the clips). The basis is refitted in `fit` (cheap; it is a function of the
  train split's prepared landmarks, which are cached with the prepared clips) and is not needed at
  prediction, which generates beta.
- beta is normalised by its train-split mean / std; p is taken relative to the clip's first frame
  (the reference frame: `predict` gets that frame, not its absolute pose) and divided by its train
  std. The predicted `pose` output is therefore relative to the reference frame's pose; Diversity
  and Beat Align do not depend on that offset.
- Lip expert: the paper reconstructs 3DMM mouth vertices from beta with the reference's identity
  coefficients. talkbench fits a linear basis beta -> mouth points (20 iBUG mouth points, least
  squares on the train split; from the clip's pose-free `landmarks3d` x/y when present, else the
  identity-normalised 2D landmarks), so "mouth vertices from beta" is a linear 2D-mouth model. The
  expert (`model.LipExpert`, MLPs on 5-frame windows of mouth points and MFCCs, non-negative
  embeddings, cosine similarity) is trained with Wav2Lip's BCE on aligned vs shifted (>= 2 frames)
  pairs of the train split, then frozen. L_sync averages -log P_sync over every 5-frame sub-window.
- Clips longer than 25 frames: windows of 25 frames overlapping by `overlap` frames; the overlap of
  each new window is fixed to the previous window's samples by replacement (the known frames are
  re-noised to the current DDIM step with the scheduler's `add_noise`), so pose and expression are
  continuous across windows. The paper does not say how it handles long clips (talkbench's choice).
- lambda_exp = lambda_pose = 1 on unit-variance targets (MSE starts near 1); lambda_sync = 0.1 puts
  L_sync (about 0.7 for a random P_sync near 0.5, about 0.1 for a well-synced window) on the same
  scale as the MSE terms late in training, as Eq. 12 asks; the paper gives no values.

Stage 2 (frames). A `diffusers.AutoencoderKL` (paper: the SD VAE, `sd_vae_ft_mse` in the weights
registry; tiny: `latent_vae.tiny_autoencoder` trained on train-split frames) whose decoder's first
convolution is widened to take [J_0, reference latent] (2 x 4 channels; `model.widen_decoder_input`,
post_quant_conv widened block-diagonally), fine-tuned with L_rec = ||F2 - D([E(F1), E(F2)])||^2
(Eq. 13; the perceptual term of Eq. 14 is left out at `tiny`, lambda_per = 0, and kept at `paper`
through `image_training.VGG19Perceptual`). The denoiser (`model.FrameDenoiser`) is a
`UNet2DConditionModel` whose cross-attention layers use `model.TwoConditionProcessor`: the layer's
own key / value attend to phi1 (the frame's normalised [beta, p] through an MLP, `motion_tokens`
tokens), a second key / value pair to phi2 (the reference latent as 2 x 2 patch tokens), the two
results summed. It predicts J_0 (DDPM noise for training, DDIM "sample" for inference), as the
reference latent plus the UNet's output (`residual_j0`, talkbench's choice, not in the paper: the
UNet then models how the frame differs from the reference, which a small CPU-trained UNet learns in
far fewer steps; `residual_j0=False` is the paper's plain J_0 output). Frames are
generated one by one (batched over frames; each frame's sampling only sees its own motion and the
reference), all from the same seeded initial noise per clip (talkbench's choice: independent noise
per frame flickers), and decoded with the reference latent concatenated.
- The reference frame in training is the clip's first frame (what `predict` gets); the target frame
  is drawn at random from the same clip.
- `tiny`: 64 px frames (16 x 16 x 4 latents from a 4x-downsampling tiny VAE), upsampled bilinearly to
  the protocol's frame size; 2-layer DiTs of width 64; a random-initialised small wav2vec2 trained
  with the DiTs; step budgets instead of epochs; 8 DDIM steps for motion and 4 for frames; a
  (16, 32, 32)-channel VAE and a (16, 32)-channel UNet, sized for CPU (the fit writes its wall and
  CPU seconds per stage to train_log.json). The DiT and UNet steps clip the gradient norm at 1.0
  (`grad_clip`, a CPU-recipe stabiliser at the tiny learning rate of 1e-3; the paper mentions none,
  so `paper` does not clip).
- `paper`: 256 px frames, SD VAE (4 x 32 x 32 latents; the paper says 64 x 64 latents at 256 px,
  i.e. a 4x VAE, which the SD VAE is not: talkbench keeps the VAE both papers name), L = 6 DiT
  layers, `facebook/wav2vec2-base-960h` frozen (the paper names wav2vec 2.0, not a checkpoint), DDIM
  50 steps; a (128, 256, 512)-channel UNet with 2 layers per block (the paper gives no UNet size).
  Step counts, batch sizes and learning rates are not in the paper; the `paper` preset's
  are talkbench's.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import register
from baselines.audio_frontends import MFCCFrontend, build_frontend
from baselines.base import Method, MethodConfig
from baselines.fd2talk.model import (FrameDenoiser, LipExpert, MotionDiT, decode_with_reference, expert_bce,
                                     sync_loss, widen_decoder_input)
from baselines import latent_vae
from baselines.torch_method import torch_threads
from core.constants import MOUTH
from core.types import Clip, MethodInput, Prediction

MOUTH_POINTS = tuple(MOUTH)  # 20 iBUG-68 points


@dataclass
class FD2TalkConfig(MethodConfig):
    # stage 1
    window: int = 25  # DiT sequence length (paper: 25)
    overlap: int = 5  # frames shared by consecutive windows at inference
    align_k: int = 3
    align: bool = True
    single_dit: bool = False
    use_sync: bool = True
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ff: int = 128
    dropout: float = 0.0
    pretrained: Optional[str] = None  # wav2vec2 checkpoint; None = a small random model
    freeze: str = "none"
    fe_hidden: int = 48
    fe_num_layers: int = 2
    fe_heads: int = 4
    fe_conv_dim: int = 32
    train_timesteps: int = 1000
    ddim_steps_motion: int = 8
    lambda_exp: float = 1.0
    lambda_pose: float = 1.0
    lambda_sync: float = 0.1
    motion_steps: int = 200
    motion_batch: int = 16
    motion_lr: float = 1e-3
    # lip expert
    expert_window: int = 5
    expert_hidden: int = 128
    expert_embed: int = 64
    expert_steps: int = 200
    expert_batch: int = 64
    expert_lr: float = 1e-3
    # stage 2
    image_size: int = 64
    vae: str = "tiny"  # tiny | sd (the registry's sd_vae_ft_mse)
    vae_channels: tuple = (16, 32, 32)
    vae_steps: int = 200
    vae_lr: float = 2e-3
    decoder_steps: int = 100
    decoder_lr: float = 1e-3
    lambda_per: float = 0.0
    unet_channels: tuple = (16, 32)
    unet_cross_dim: int = 32
    unet_head_dim: int = 8
    unet_layers_per_block: int = 1
    motion_tokens: int = 4
    concat_cond: bool = False
    residual_j0: bool = True  # J_0 = reference latent + UNet output (package docstring)
    unet_steps: int = 150
    unet_batch: int = 16
    unet_lr: float = 1e-3
    ddim_steps_frames: int = 4
    image_batch: int = 8  # frames per autoencoder step
    threads: int = 0
    grad_clip: float = 1.0  # max gradient norm of the DiT and UNet steps (0 = off; paper: off)
    sample_seed: int = 0
    motion_backend: str = "auto"  # auto | given | landmark_pca | deep3d
    deep3d_root: Optional[str] = None  # folder of the Deep3D files (default $TALKBENCH_HOME/weights/deep3d)
    pca_components: int = 16

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(threads=1),  # one torch thread, as every tiny preset: the same computation
        # in one process and in a `run --workers N` worker process (bench.runner.fit_in_workers)
        "paper": dict(layers=6, d_model=512, heads=8, ff=2048, dropout=0.1,
                      pretrained="facebook/wav2vec2-base-960h", freeze="all", ddim_steps_motion=50,
                      motion_steps=100000, motion_batch=64, motion_lr=1e-4, expert_hidden=512,
                      expert_embed=512, expert_steps=20000, expert_lr=1e-4, image_size=256, vae="sd",
                      vae_steps=0, decoder_steps=20000, decoder_lr=1e-5, lambda_per=0.1,
                      unet_channels=(128, 256, 512), unet_cross_dim=512, unet_head_dim=64,
                      unet_layers_per_block=2, motion_tokens=4, unet_steps=200000, unet_batch=32,
                      unet_lr=1e-4, ddim_steps_frames=50, image_batch=8, residual_j0=False, grad_clip=0.0),
    }


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def mouth_points(clip: Clip) -> np.ndarray:
    """T x 20 x 2 pose-free mouth points: landmarks3d x/y if the clip has them, else the 2D points
    similarity-aligned to the first frame, in units of its jaw width."""
    if clip.landmarks3d is not None:
        m = np.asarray(clip.landmarks3d, np.float32)[:, MOUTH_POINTS, :2]
        return m
    lmk = np.asarray(clip.landmarks, np.float64)
    scale = float(np.linalg.norm(lmk[0, 16] - lmk[0, 0])) or 1.0
    return (align_to(lmk, lmk[0])[:, MOUTH_POINTS] / scale).astype(np.float32)


def _audio_window(audio: np.ndarray, spf: float, start: int, frames: int) -> np.ndarray:
    a0, n = int(round(start * spf)), int(round(frames * spf))
    seg = np.asarray(audio[max(a0, 0):a0 + n], np.float32)
    return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg


def align_to(shapes: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Frames of 2D points (T x P x 2) aligned to `template` (P x 2) by a similarity each (Procrustes:
    centred, rotated and scaled onto the centred template)."""
    x = shapes - shapes.mean(1, keepdims=True)
    y = template - template.mean(0)
    m = np.einsum("tpi,pj->tij", x, y)
    u, sv, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))  # no reflection
    u[:, :, -1] *= d[:, None]
    sv[:, -1] *= d
    r = u @ vt
    scale = sv.sum(1) / np.maximum((x ** 2).sum((1, 2)), 1e-12)
    return scale[:, None, None] * np.einsum("tpi,tij->tpj", x, r)


def fit_landmark_pca(clips: list[Clip], components: int) -> dict[str, np.ndarray]:
    """The built-in motion backend's basis: mean shape and principal components of the train
    frames' similarity-aligned 68 landmarks (two rounds of generalised Procrustes)."""
    frames = np.concatenate([np.asarray(c.landmarks, np.float64) for c in clips])
    template = frames[0]
    for _ in range(2):
        aligned = align_to(frames, template)
        template = aligned.mean(0)
    flat = aligned.reshape(len(aligned), -1)
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    k = min(int(components), vt.shape[0])
    return {"template": template, "mean": mean, "components": vt[:k]}


def landmark_pca_coefficients(landmarks: np.ndarray, pca: dict[str, np.ndarray]) -> np.ndarray:
    """beta (T x K) of a clip's landmarks under the fitted basis."""
    aligned = align_to(np.asarray(landmarks, np.float64), pca["template"]).reshape(len(landmarks), -1)
    return ((aligned - pca["mean"]) @ pca["components"].T).astype(np.float32)


class Stage1(nn.Module):
    """The audio front-end, the Exp-DiT and Pose-DiT (or one joint DiT), normalisation buffers and
    the linear beta -> mouth basis."""

    def __init__(self, cfg: FD2TalkConfig, beta_dim: int, pose_dim: int) -> None:
        super().__init__()
        opts: dict[str, Any] = {"pretrained": cfg.pretrained, "freeze": cfg.freeze}
        if cfg.pretrained is None:
            opts.update(hidden_size=cfg.fe_hidden, num_layers=cfg.fe_num_layers, num_heads=cfg.fe_heads,
                        conv_dim=cfg.fe_conv_dim)
        self.frontend = build_frontend("wav2vec2", opts)
        dit = dict(audio_dim=self.frontend.dim, d_model=cfg.d_model, layers=cfg.layers, heads=cfg.heads,
                   ff=cfg.ff, max_len=cfg.window, k=cfg.align_k, align=cfg.align, dropout=cfg.dropout)
        self.single = bool(cfg.single_dit)
        self.beta_dim, self.pose_dim = int(beta_dim), int(pose_dim)
        if self.single:
            self.joint_dit = MotionDiT(beta_dim + pose_dim, **dit)
        else:
            self.exp_dit = MotionDiT(beta_dim, **dit)
            self.pose_dit = MotionDiT(pose_dim, **dit)
        for name, n in (("beta_mean", beta_dim), ("beta_std", beta_dim), ("pose_std", pose_dim)):
            self.register_buffer(name, torch.ones(n) if "std" in name else torch.zeros(n))
        self.register_buffer("mouth_basis", torch.zeros(beta_dim + 1, len(MOUTH_POINTS) * 2))

    def denoise(self, x_t, t, feats):
        """x_t: B x F x (beta_dim + pose_dim) normalised -> predicted x0, same layout."""
        if self.single:
            return self.joint_dit(x_t, t, feats)
        b, p = x_t[..., :self.beta_dim], x_t[..., self.beta_dim:]
        return torch.cat([self.exp_dit(b, t, feats), self.pose_dit(p, t, feats)], dim=-1)

    def mouth(self, beta_norm):
        """Normalised beta (... x D) -> mouth points (... x 20 x 2) through the fitted basis."""
        beta = beta_norm * self.beta_std + self.beta_mean
        ones = torch.ones_like(beta[..., :1])
        out = torch.cat([beta, ones], dim=-1) @ self.mouth_basis
        return out.view(*out.shape[:-1], len(MOUTH_POINTS), 2)


class Stage2(nn.Module):
    """The widened autoencoder and the two-condition denoiser, with the motion scale buffers."""

    def __init__(self, cfg: FD2TalkConfig, motion_dim: int, vae=None) -> None:
        super().__init__()
        if vae is None:
            vae = self.build_vae(cfg)
            widen_decoder_input(vae)
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        latent = cfg.image_size // latent_vae.downsampling_factor(vae)
        self.denoiser = FrameDenoiser(vae.config.latent_channels, latent, motion_dim, tuple(cfg.unet_channels),
                                      cfg.unet_cross_dim, cfg.unet_head_dim, cfg.unet_layers_per_block,
                                      cfg.motion_tokens, separate=not cfg.concat_cond,
                                      norm_groups=min(32, min(cfg.unet_channels) // 4),
                                      residual=cfg.residual_j0)

    @staticmethod
    def build_vae(cfg: FD2TalkConfig):
        if cfg.vae == "sd":
            return latent_vae.sd_vae_architecture()
        if cfg.vae == "tiny":
            return latent_vae.tiny_autoencoder(block_out_channels=tuple(cfg.vae_channels))
        raise ValueError(f"fd2talk: vae must be tiny or sd, not {cfg.vae!r}")


def schedulers(cfg: FD2TalkConfig):
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule="linear",
                          prediction_type="sample", clip_sample=False)
    sample = DDIMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule="linear",
                           prediction_type="sample", clip_sample=False, set_alpha_to_one=True)
    return train, sample


@register
class FD2Talk(Method):
    name = "fd2talk"
    description = ("FD2Talk: Exp/Pose diffusion transformers with an audio alignment mask and a lip "
                   "expert, then a two-condition latent diffusion UNet (diffusers)")
    inputs = frozenset({"audio", "identity_frame"})
    outputs = frozenset({"frames", "pose", "motion"})
    Config = FD2TalkConfig
    trainable = True
    ablations = ("fd2talk_single_dit", "fd2talk_concat_cond", "fd2talk_no_align", "fd2talk_no_sync")

    def __init__(self, config: Optional[FD2TalkConfig] = None) -> None:
        super().__init__(config)
        self.stage1: Optional[Stage1] = None
        self.expert: Optional[LipExpert] = None
        self.stage2: Optional[Stage2] = None
        self.mfcc = MFCCFrontend()
        self.device = "cpu"
        self.train_log: dict[str, Any] = {}

    # ------------------------------------------------------------------ data
    def _check_clips(self, clips: list[Clip]) -> None:
        backend = self.config.motion_backend
        if backend not in ("auto", "given", "landmark_pca", "deep3d"):
            raise ValueError(f"{self.name}: motion_backend must be auto, given, landmark_pca or deep3d, "
                             f"not {backend!r}")
        if backend == "auto":
            backend = "given" if all(c.motion is not None for c in clips) else "landmark_pca"
        for clip in clips:
            if clip.pose is None:
                raise ValueError(f"{self.name}: clip {clip.id} has no head `pose`; FD2Talk needs the protocol's "
                                 f"pose backend (preprocessing pose_backend) to provide it")
            if backend == "given" and clip.motion is None:
                raise ValueError(f"{self.name}: clip {clip.id} has no expression coefficients (`motion`); with "
                                 f"motion_backend 'given' the protocol's motion backend must provide them "
                                 f"(synthtalk does), or use motion_backend 'landmark_pca'")
        self._pca = fit_landmark_pca(clips, self.config.pca_components) if backend == "landmark_pca" else None
        self._deep3d, self._deep3d_cache = None, {}
        if backend == "deep3d":
            from baselines.fd2talk.deep3d import Deep3DBackend

            self._deep3d = Deep3DBackend(self.config.deep3d_root, device=self.device)

    def _deep3d_of(self, clip: Clip) -> dict[str, np.ndarray]:
        if clip.id not in self._deep3d_cache:
            self._deep3d_cache[clip.id] = self._deep3d.coefficients(clip.frames, clip.landmarks)
        return self._deep3d_cache[clip.id]

    def _mouth(self, clip: Clip) -> np.ndarray:
        """Mouth points for the lip expert: BFM mouth vertices (x, y) under deep3d, else `mouth_points`."""
        if getattr(self, "_deep3d", None) is not None:
            c = self._deep3d_of(clip)
            ident = np.repeat(c["id"].mean(0, keepdims=True), len(c["beta"]), axis=0)
            return self._deep3d.mouth_vertices(ident, c["beta"])[..., :2].astype(np.float32)
        return mouth_points(clip)

    def _motion(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_deep3d", None) is not None:
            c = self._deep3d_of(clip)
            beta, pose = c["beta"], c["pose"]
        elif getattr(self, "_pca", None) is not None:
            beta = landmark_pca_coefficients(clip.landmarks, self._pca)
            pose = np.asarray(clip.pose, np.float32)[:clip.num_frames]
        else:
            beta = np.asarray(clip.motion, np.float32)[:clip.num_frames]
            pose = np.asarray(clip.pose, np.float32)[:clip.num_frames]
        return beta, pose - pose[:1]

    def _mfcc_frames(self, audio: np.ndarray, spf: float, frames: int) -> torch.Tensor:
        x = torch.as_tensor(_audio_window(audio, spf, 0, frames))[None]
        return self.mfcc(x, frames)[0]  # frames x 39

    # ------------------------------------------------------------------ fit
    def fit(self, train: list[Clip], val: list[Clip], *, device: str = "cpu", seed: int = 0,
            workdir=None) -> None:
        """`_fit_stage1` then `_fit_stage2`. Single-process under torchrun (not data-parallel):
        every rank runs all of it from the same seed, and rank 0's weights are the ones saved
        (`baselines.data_parallel`)."""
        if not train:
            raise ValueError(f"{self.name}: no training clips")
        self.device = device
        self._check_clips(train)
        cfg = self.config
        with torch_threads(cfg.threads):
            torch.manual_seed(seed)
            self.device = device
            t0, c0 = time.perf_counter(), time.process_time()
            self._fit_stage1(train, seed, device)
            t1, c1 = time.perf_counter(), time.process_time()
            self._fit_stage2(train, seed, device)
            # wall and CPU seconds (CPU time tells the budget apart from other processes' load)
            self.train_log["seconds"] = {"stage1_and_expert": t1 - t0, "stage2": time.perf_counter() - t1,
                                         "cpu_stage1_and_expert": c1 - c0, "cpu_stage2": time.process_time() - c1}
        if workdir is not None:
            import json
            from pathlib import Path

            Path(workdir).mkdir(parents=True, exist_ok=True)
            (Path(workdir) / "train_log.json").write_text(json.dumps(self.train_log, indent=1) + "\n")

    def _fit_stage1(self, train: list[Clip], seed: int, device: str) -> None:
        cfg = self.config
        betas, poses, mouths = zip(*[(*self._motion(c), self._mouth(c)) for c in train])
        beta_all, pose_all = np.concatenate(betas), np.concatenate(poses)
        s1 = Stage1(cfg, beta_all.shape[1], pose_all.shape[1])
        s1.beta_mean.copy_(torch.as_tensor(beta_all.mean(0)))
        s1.beta_std.copy_(torch.as_tensor(np.maximum(beta_all.std(0), 1e-3)))
        s1.pose_std.copy_(torch.as_tensor(np.maximum(pose_all.std(0), 1e-3)))
        # the linear beta -> mouth basis (least squares over every train frame)
        mouth_all = np.concatenate(mouths).reshape(len(beta_all), -1)
        design = np.concatenate([beta_all, np.ones((len(beta_all), 1), np.float32)], axis=1)
        basis, *_ = np.linalg.lstsq(design.astype(np.float64), mouth_all.astype(np.float64), rcond=None)
        s1.mouth_basis.copy_(torch.as_tensor(basis, dtype=torch.float32))
        s1 = s1.to(device)
        self.stage1 = s1
        spf = train[0].sample_rate / train[0].fps
        mfccs = [self._mfcc_frames(c.audio, spf, c.num_frames) for c in train]
        mouth_t = [torch.as_tensor(m, dtype=torch.float32) for m in mouths]
        self.expert = self._fit_expert(mouth_t, mfccs, seed, device)
        rng = np.random.default_rng([seed, 1])
        train_sched, _ = schedulers(cfg)
        gen = torch.Generator().manual_seed(seed + 1)
        params = [p for p in s1.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.motion_lr)
        s1.train()
        W, E = cfg.window, cfg.expert_window
        log = []
        for step in range(cfg.motion_steps):
            chosen = rng.integers(0, len(train), cfg.motion_batch)
            length = min([W] + [train[i].num_frames for i in chosen])
            x0, audio, mf = [], [], []
            for i in chosen:
                clip = train[i]
                s = int(rng.integers(0, clip.num_frames - length + 1))
                b = (betas[i][s:s + length] - beta_all.mean(0)) / np.maximum(beta_all.std(0), 1e-3)
                p = poses[i][s:s + length] / np.maximum(pose_all.std(0), 1e-3)
                x0.append(np.concatenate([b, p], axis=1))
                audio.append(_audio_window(clip.audio, spf, s, length))
                mf.append(mfccs[i][s:s + length])
            x0 = torch.as_tensor(np.stack(x0), dtype=torch.float32, device=device)
            audio = torch.as_tensor(np.stack(audio), device=device)
            t = torch.randint(0, cfg.train_timesteps, (len(chosen),), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            x_t = train_sched.add_noise(x0, noise, t)
            feats = s1.frontend(audio, length)
            pred = s1.denoise(x_t, t, feats)
            nb = s1.beta_dim
            l_exp = F.mse_loss(pred[..., :nb], x0[..., :nb])
            l_pose = F.mse_loss(pred[..., nb:], x0[..., nb:])
            loss = cfg.lambda_exp * l_exp + cfg.lambda_pose * l_pose
            l_sync = torch.zeros(())
            if cfg.use_sync and length >= E:
                mouth = s1.mouth(pred[..., :nb])  # B x F x 20 x 2
                mw = mouth.unfold(1, E, 1).permute(0, 1, 4, 2, 3).reshape(-1, E, len(MOUTH_POINTS), 2)
                aw = torch.stack(mf).to(device).unfold(1, E, 1).permute(0, 1, 3, 2).reshape(-1, E, mf[0].shape[-1])
                l_sync = sync_loss(self.expert.p_sync(mw - self._mouth_mean.to(device), aw))
                loss = loss + cfg.lambda_sync * l_sync
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            log.append([float(l_exp.detach()), float(l_pose.detach()), float(l_sync.detach())])
        s1.eval()
        self.train_log["motion"] = {"steps": len(log), "first": log[0] if log else None,
                                    "last_mean": np.mean(log[-20:], axis=0).tolist() if log else None}

    def _fit_expert(self, mouths: list[torch.Tensor], mfccs: list[torch.Tensor], seed: int, device) -> LipExpert:
        """Contrastive pre-training: aligned 5-frame windows vs the same clip shifted by >= 2 frames."""
        cfg = self.config
        E = cfg.expert_window
        self._mouth_mean = torch.cat(mouths).mean(0)
        expert = LipExpert(len(MOUTH_POINTS), mfccs[0].shape[-1], E, cfg.expert_hidden, cfg.expert_embed).to(device)
        expert.register_buffer("mouth_mean", self._mouth_mean.clone())
        rng = np.random.default_rng([seed, 2])
        opt = torch.optim.Adam(expert.parameters(), lr=cfg.expert_lr)
        usable = [i for i, m in enumerate(mouths) if len(m) >= E + 3]
        if not usable:
            raise ValueError(f"{self.name}: no training clip is long enough for the lip expert")
        log = []
        for step in range(cfg.expert_steps):
            mw, aw, label = [], [], []
            for _ in range(cfg.expert_batch):
                i = usable[int(rng.integers(len(usable)))]
                n = len(mouths[i])
                s = int(rng.integers(0, n - E + 1))
                positive = rng.random() < 0.5
                a = s
                if not positive:
                    choices = [x for x in range(0, n - E + 1) if abs(x - s) >= 2]
                    a = int(choices[int(rng.integers(len(choices)))])
                mw.append(mouths[i][s:s + E] - self._mouth_mean)
                aw.append(mfccs[i][a:a + E])
                label.append(1.0 if positive else 0.0)
            p = expert.p_sync(torch.stack(mw).to(device), torch.stack(aw).to(device))
            loss = expert_bce(p, torch.tensor(label, device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append(float(loss.detach()))
        expert.eval().requires_grad_(False)
        self.train_log["expert"] = {"steps": len(log), "first": log[0] if log else None,
                                    "last_mean": float(np.mean(log[-20:])) if log else None}
        return expert

    def _frames_small(self, clip: Clip) -> np.ndarray:
        x = latent_vae.to_tensor(clip.frames, self.config.image_size)
        return ((x + 1) / 2 * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()

    def _fit_stage2(self, train: list[Clip], seed: int, device: str) -> None:
        cfg = self.config
        frames = [self._frames_small(c) for c in train]
        for c in train:
            c.release_frames()
        rng = np.random.default_rng([seed, 3])
        B = cfg.image_batch

        def draw(r):
            out = []
            for _ in range(B):
                f = frames[int(r.integers(len(frames)))]
                out.append(f[int(r.integers(len(f)))])
            return np.stack(out)

        if cfg.vae == "sd":
            vae = latent_vae.load_sd_vae()
            vae.requires_grad_(True)
        else:
            vae = latent_vae.tiny_autoencoder(block_out_channels=tuple(cfg.vae_channels))
        vae = vae.to(device)
        vae_log = latent_vae.train_autoencoder(vae, draw, steps=cfg.vae_steps, batch_size=B, lr=cfg.vae_lr,
                                               size=cfg.image_size, seed=seed) if cfg.vae_steps else []
        widen_decoder_input(vae)
        vae = vae.to(device)
        betas, poses = zip(*[self._motion(c) for c in train])
        s2 = Stage2(cfg, betas[0].shape[1] + poses[0].shape[1], vae=vae).to(device)
        self.stage2 = s2
        scaling = s2.scaling
        # encoder frozen from here: latents of every train frame once
        vae.requires_grad_(False)
        with torch.no_grad():
            latents = [torch.cat([latent_vae.encode(vae, f[i:i + 64], scaling) for i in range(0, len(f), 64)])
                       for f in frames]
        # decoder fine-tuning on [E(F1), E(F2)] -> F2 (Eq. 13), F1 = the clip's first frame
        perceptual = None
        if cfg.lambda_per > 0:
            from baselines.image_training import VGG19Perceptual

            perceptual = VGG19Perceptual().to(device)
        dec_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
        for p in dec_params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(dec_params, lr=cfg.decoder_lr)
        dec_log = []
        for step in range(cfg.decoder_steps):
            idx = [(int(rng.integers(len(frames))),) for _ in range(B)]
            idx = [(i, int(rng.integers(len(frames[i])))) for (i,) in idx]
            z = torch.stack([latents[i][j] for i, j in idx])
            ref = torch.stack([latents[i][0] for i, _ in idx])
            target = latent_vae.to_tensor(np.stack([frames[i][j] for i, j in idx]), device=device)
            out = decode_with_reference(vae, z, ref, scaling) * 2 - 1
            loss = F.mse_loss(out, target)
            if perceptual is not None:
                loss = loss + cfg.lambda_per * perceptual(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dec_log.append(float(loss.detach()))
        vae.requires_grad_(False).eval()
        # the denoiser
        s1 = self.stage1
        norm = [torch.as_tensor(np.concatenate([(b - s1.beta_mean.cpu().numpy()) / s1.beta_std.cpu().numpy(),
                                                p / s1.pose_std.cpu().numpy()], axis=1), dtype=torch.float32)
                for b, p in zip(betas, poses)]
        train_sched, _ = schedulers(cfg)
        gen = torch.Generator().manual_seed(seed + 3)
        den = s2.denoiser
        den.train()
        opt = torch.optim.Adam(den.parameters(), lr=cfg.unet_lr)
        unet_log = []
        for step in range(cfg.unet_steps):
            idx = [int(rng.integers(len(frames))) for _ in range(cfg.unet_batch)]
            idx = [(i, int(rng.integers(len(frames[i])))) for i in idx]
            j0 = torch.stack([latents[i][j] for i, j in idx]).to(device)
            ref = torch.stack([latents[i][0] for i, _ in idx]).to(device)
            motion = torch.stack([norm[i][j] for i, j in idx]).to(device)
            t = torch.randint(0, cfg.train_timesteps, (len(idx),), generator=gen).to(device)
            noise = torch.randn(j0.shape, generator=gen).to(device)
            pred = den(train_sched.add_noise(j0, noise, t), t, motion, ref)
            loss = F.mse_loss(pred, j0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(den.parameters(), cfg.grad_clip)
            opt.step()
            unet_log.append(float(loss.detach()))
        den.eval()
        summary = lambda xs: {"steps": len(xs), "first": xs[0] if xs else None,  # noqa: E731
                              "last_mean": float(np.mean(xs[-20:])) if xs else None}
        self.train_log.update(vae=summary(vae_log), decoder=summary(dec_log), unet=summary(unet_log))

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        if self.stage1 is None or self.stage2 is None or self.expert is None:
            raise RuntimeError(f"{self.name}: no model yet; fit or load first")
        out = {}
        for prefix, module in (("stage1.", self.stage1), ("expert.", self.expert), ("stage2.", self.stage2)):
            for k, v in module.state_dict().items():
                out[prefix + k] = v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
        return dict(sorted(out.items()))

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        cfg = self.config
        try:
            beta_dim = state["stage1.beta_mean"].shape[0]
            pose_dim = state["stage1.pose_std"].shape[0]
            mouth_mean = state["expert.mouth_mean"]
        except KeyError as exc:
            raise ValueError(f"{self.name}: checkpoint lacks {exc}; not an fd2talk checkpoint") from exc
        s1 = Stage1(cfg, beta_dim, pose_dim)
        self._mouth_mean = torch.as_tensor(mouth_mean)
        audio_dim = state["expert.audio.1.weight"].shape[1] // cfg.expert_window
        expert = LipExpert(len(MOUTH_POINTS), audio_dim, cfg.expert_window, cfg.expert_hidden, cfg.expert_embed)
        expert.register_buffer("mouth_mean", self._mouth_mean.clone())
        s2 = Stage2(cfg, beta_dim + pose_dim)
        for prefix, module in (("stage1.", s1), ("expert.", expert), ("stage2.", s2)):
            own = module.state_dict()
            sub = {k[len(prefix):]: torch.as_tensor(np.asarray(v)) for k, v in state.items() if k.startswith(prefix)}
            missing, unexpected = sorted(set(own) - set(sub)), sorted(set(sub) - set(own))
            if missing or unexpected:
                raise ValueError(f"{self.name}: checkpoint does not match the {prefix[:-1]} network: missing "
                                 f"{missing[:5]}, unexpected {unexpected[:5]}")
            module.load_state_dict({k: v.to(own[k].dtype) for k, v in sub.items()}, strict=True)
            module.eval()
        expert.requires_grad_(False)
        self.stage1, self.expert, self.stage2 = s1, expert, s2
        self.device = "cpu"

    # ------------------------------------------------------------------ sampling
    def sample_motion(self, audio: np.ndarray, num_frames: int, spf: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised [beta, p] for `num_frames` frames by DDIM over overlapping windows:
        returns (normalised motion T x D, the same de-normalised as (beta T x Db, pose T x Dp))."""
        cfg = self.config
        s1 = self.stage1
        device = next(s1.parameters()).device
        _, sched = schedulers(cfg)
        sched.set_timesteps(cfg.ddim_steps_motion)
        gen = torch.Generator().manual_seed(seed)
        W = min(cfg.window, num_frames)
        ov = min(cfg.overlap, W - 1) if num_frames > W else 0
        D = s1.beta_dim + s1.pose_dim
        out = torch.zeros(num_frames, D)
        start = 0
        while True:
            start = min(start, num_frames - W)
            known = out[start:start + ov].clone() if start > 0 else None
            a = torch.as_tensor(_audio_window(audio, spf, start, W), device=device)[None]
            feats = s1.frontend(a, W)
            x = torch.randn((1, W, D), generator=gen).to(device)
            for t in sched.timesteps:
                tt = t.reshape(1).to(device)
                if known is not None:  # replacement: the overlap follows the previous window
                    kn = known[None].to(device)
                    x[:, :len(known)] = sched.add_noise(kn, torch.randn(kn.shape, generator=gen).to(device), tt)
                x0 = s1.denoise(x, tt, feats)
                x = sched.step(x0, t, x).prev_sample
            if known is not None:
                x[:, :len(known)] = known[None].to(device)
            out[start:start + W] = x[0].cpu()
            if start + W >= num_frames:
                break
            start += W - ov
        beta = out[:, :s1.beta_dim] * s1.beta_std.cpu() + s1.beta_mean.cpu()
        pose = out[:, s1.beta_dim:] * s1.pose_std.cpu()
        return out, (beta.numpy(), pose.numpy())

    def sample_frames(self, motion: torch.Tensor, ref_latent: torch.Tensor, seed: int) -> torch.Tensor:
        """J_0 for every frame (T x C x h x w) from normalised motion (T x D) and the reference latent."""
        cfg = self.config
        den = self.stage2.denoiser
        device = ref_latent.device
        _, sched = schedulers(cfg)
        sched.set_timesteps(cfg.ddim_steps_frames)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(ref_latent.shape[1:], generator=gen).to(device)
        out = []
        for i in range(0, len(motion), 64):
            m = motion[i:i + 64].to(device)
            x = noise[None].expand(len(m), -1, -1, -1).clone()
            ref = ref_latent.expand(len(m), -1, -1, -1)
            for t in sched.timesteps:
                tt = t.reshape(1).expand(len(m)).to(device)
                j0 = den(x, tt, m, ref)
                x = sched.step(j0, t, x).prev_sample
            out.append(x)
        return torch.cat(out)

    def predict(self, inp: MethodInput) -> Prediction:
        if self.stage1 is None or self.stage2 is None:
            raise RuntimeError(f"{self.name}: fit or load before predict")
        if inp.audio is None or inp.identity_frame is None:
            raise ValueError(f"{self.name}: needs the audio and the identity frame")
        cfg = self.config
        seed = _stable_seed(cfg.sample_seed, inp.clip_id)
        with torch_threads(cfg.threads):
            with torch.no_grad():
                spf = inp.sample_rate / inp.fps
                norm, (beta, pose) = self.sample_motion(inp.audio, int(inp.num_frames), spf, seed)
                vae = self.stage2.vae
                ref = latent_vae.encode(vae, np.asarray(inp.identity_frame)[None], self.stage2.scaling,
                                        size=cfg.image_size)
                j0 = self.sample_frames(norm, ref, seed + 1)
                H, W = inp.frame_size or inp.identity_frame.shape[:2]
                frames = []
                for i in range(0, len(j0), 64):
                    img = decode_with_reference(vae, j0[i:i + 64], ref.expand(len(j0[i:i + 64]), -1, -1, -1),
                                                self.stage2.scaling)
                    if tuple(img.shape[-2:]) != (H, W):
                        img = F.interpolate(img, size=(H, W), mode="bilinear", align_corners=False)
                    frames.append(latent_vae.to_uint8(img))
        return Prediction(inp.clip_id, frames=np.concatenate(frames), pose=pose.astype(np.float32),
                          motion=beta.astype(np.float32))


@dataclass
class FD2TalkSingleDiTConfig(FD2TalkConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        k: {**v, "single_dit": True} for k, v in FD2TalkConfig.PRESETS.items()}


@dataclass
class FD2TalkConcatCondConfig(FD2TalkConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        k: {**v, "concat_cond": True} for k, v in FD2TalkConfig.PRESETS.items()}


@dataclass
class FD2TalkNoAlignConfig(FD2TalkConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        k: {**v, "align": False} for k, v in FD2TalkConfig.PRESETS.items()}


@dataclass
class FD2TalkNoSyncConfig(FD2TalkConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        k: {**v, "use_sync": False} for k, v in FD2TalkConfig.PRESETS.items()}


@register
class FD2TalkSingleDiT(FD2Talk):
    name = "fd2talk_single_dit"
    description = "FD2Talk with one DiT predicting expression and pose jointly (Table 2 ablation)"
    Config = FD2TalkSingleDiTConfig
    ablations = ()


@register
class FD2TalkConcatCond(FD2Talk):
    name = "fd2talk_concat_cond"
    description = "FD2Talk with the UNet's motion and appearance conditions concatenated (Table 2 ablation)"
    Config = FD2TalkConcatCondConfig
    ablations = ()


@register
class FD2TalkNoAlign(FD2Talk):
    name = "fd2talk_no_align"
    description = "FD2Talk without the alignment mask in the DiTs' cross-attention (Table 3 ablation)"
    Config = FD2TalkNoAlignConfig
    ablations = ()


@register
class FD2TalkNoSync(FD2Talk):
    name = "fd2talk_no_sync"
    description = "FD2Talk trained without the lip-expert loss L_sync (Table 3 ablation)"
    Config = FD2TalkNoSyncConfig
    ablations = ()


__all__ = ["FD2Talk", "FD2TalkConfig", "MOUTH_POINTS", "Stage1", "Stage2"]
