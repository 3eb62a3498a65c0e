"""NeRF building blocks of the Gaussian-landmark NeRF (stage 2): rays, sampling, volume rendering,
a multiresolution hash-grid encoding, the landmark encodings of Table III and the conditioned field.

- `pinhole_rays`: one ray per pixel centre of a pinhole camera (intrinsics `fx, fy, cx, cy`, pixel
  centres at integer coordinates, OpenCV axes: x right, y down, z forward) whose camera-to-world
  matrix is `c2w` (3 x 4). Directions are unit length.
- `box_bounds` + `stratified_edges`: the ray's segment inside the box [-bound, bound]^3 cut into
  `S` equal bins; samples are drawn uniformly inside each bin (stratified, jittered when training,
  bin midpoints when not).
- `composite`: alpha compositing (NeRF's quadrature of Eq. 4-5): alpha_i = 1 - exp(-sigma_i delta_i)
  with delta_i the bin width, T_i = prod_{j<i} (1 - alpha_j), weight_i = T_i alpha_i; returns
  colour, accumulated opacity and depth.
- `HashGrid`: Instant-NGP's multiresolution hash encoding in pure PyTorch (runs on CPU): L levels
  with resolutions growing geometrically from `base` to `finest`, a table of `2^log2_size` entries
  of F features per level (dense indexing while the level's (res+1)^3 vertices fit, spatial hash
  x*1 ^ y*2654435761 ^ z*805459861 otherwise), trilinear interpolation of the 8 cell corners.
  `tinycudann` is not used: it is not installed on the test machines, so its agreement with this
  implementation is untested.
- Landmark encodings (`LandmarkEncoding`, Table III): `gaussian` (Eq. 8a: per landmark a learnable
  anisotropic Gaussian Sigma = R S (R S)^T, R from a unit quaternion, S = diag(scales) with scales
  initialised to 0.05; weight exp(-1/2 delta Sigma^-1 delta^T) times gamma(d_z), d_z the relative
  depth of the sample to the landmark in camera coordinates), `nodepth` (Eq. 8a without gamma(d_z):
  the weight alone), `keypoint` (Eq. 7, KeypointNeRF: isotropic exp(-|d|^2 / (2 alpha^2)) gamma(d_z),
  alpha fixed at 0.05), `pe` (gamma of the flattened landmarks, one code per frame) and `mlp`
  (GeneFace++-style: Linear-ReLU-Linear on the flattened landmarks, one code per frame).
  gamma(v) = (sin(2^k pi v), cos(2^k pi v)), k < `depth_freqs` (NeRF's positional encoding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PRIMES = (1, 2654435761, 805459861)
ENCODINGS = ("gaussian", "nodepth", "keypoint", "pe", "mlp")


# ----------------------------------------------------------------------------- rays and rendering

def pinhole_rays(fx: float, fy: float, cx: float, cy: float, c2w: torch.Tensor, pixels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through `pixels` (N x 2, x then y, pixel centres at integers) of a pinhole camera.

    Returns (origins N x 3, unit directions N x 3) in world coordinates: direction = c2w[:, :3] @
    ((x - cx) / fx, (y - cy) / fy, 1), origin = c2w[:, 3].
    """
    pixels = pixels.to(c2w.dtype)
    cam = torch.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy, torch.ones_like(pixels[:, 0])], -1)
    dirs = cam @ c2w[:, :3].T
    dirs = dirs / torch.linalg.vector_norm(dirs, dim=-1, keepdim=True)
    return c2w[:, 3].expand_as(dirs), dirs


def box_bounds(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(near, far) of each ray inside the box [-bound, bound]^3 (near = far where the ray misses it)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-bound - origins) / safe, (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


def stratified_edges(near: torch.Tensor, far: torch.Tensor, samples: int) -> torch.Tensor:
    """Bin edges N x (S + 1) cutting [near, far] into `samples` equal bins."""
    u = torch.linspace(0.0, 1.0, samples + 1, dtype=near.dtype, device=near.device)
    return near[:, None] + (far - near)[:, None] * u


def sample_in_bins(edges: torch.Tensor, jitter: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One t per bin: uniform inside it (`jitter`) or its midpoint."""
    lo, hi = edges[:, :-1], edges[:, 1:]
    if not jitter:
        return 0.5 * (lo + hi)
    u = torch.rand(lo.shape, dtype=lo.dtype, device=lo.device, generator=generator)
    return lo + (hi - lo) * u


def composite(sigma: torch.Tensor, rgb: torch.Tensor, edges: torch.Tensor, t: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume rendering of N rays x S samples: (colour N x 3, opacity N, depth N).

    sigma N x S (>= 0), rgb N x S x 3, edges N x (S + 1) bin edges, t N x S sample positions.
    """
    delta = edges[:, 1:] - edges[:, :-1]
    alpha = 1.0 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * trans
    return (weights[..., None] * rgb).sum(1), weights.sum(1), (weights * t).sum(1)


def frequency_encoding(x: torch.Tensor, freqs: int) -> torch.Tensor:
    """gamma(x): (sin(2^k pi x), cos(2^k pi x)) for k < freqs, on the last axis (... x D -> ... x 2 D freqs)."""
    scales = (2.0 ** torch.arange(freqs, dtype=x.dtype, device=x.device)) * math.pi
    arg = x[..., None] * scales
    return torch.cat([torch.sin(arg), torch.cos(arg)], -1).flatten(-2)


# ----------------------------------------------------------------------------- hash grid

class HashGrid(nn.Module):
    """Multiresolution hash encoding of points in [-bound, bound]^3 (module docstring)."""

    def __init__(self, levels: int = 16, features: int = 2, log2_size: int = 19, base: int = 16,
                 finest: int = 2048, bound: float = 1.0) -> None:
        super().__init__()
        self.levels, self.features, self.bound = int(levels), int(features), float(bound)
        growth = math.exp((math.log(finest) - math.log(base)) / max(1, levels - 1))
        self.resolutions = [int(math.floor(base * growth ** level)) for level in range(levels)]
        cap = 2 ** int(log2_size)
        self.sizes = [min(cap, (r + 1) ** 3) for r in self.resolutions]
        self.hashed = [(r + 1) ** 3 > cap for r in self.resolutions]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)
        self.table = nn.Parameter(torch.empty(self.offsets[-1], self.features).uniform_(-1e-4, 1e-4))
        corners = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corners", corners, persistent=False)

    @property
    def dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x + self.bound) / (2 * self.bound)).clamp(0.0, 1.0)
        cx, cy, cz = self.corners.unbind(-1)
        out = []
        for level, res in enumerate(self.resolutions):
            pos = u * res
            p0 = torch.floor(pos).clamp(max=res - 1)
            w = pos - p0
            wc = torch.stack([1.0 - w, w], -1)  # N x 3 x 2
            cw = wc[:, 0, cx] * wc[:, 1, cy] * wc[:, 2, cz]  # N x 8 trilinear weights
            vert = p0.to(torch.int64)[:, None, :] + self.corners  # N x 8 x 3
            if self.hashed[level]:  # table sizes are powers of two: & (size - 1) is the modulo
                idx = ((vert[..., 0] * PRIMES[0]) ^ (vert[..., 1] * PRIMES[1]) ^ (vert[..., 2] * PRIMES[2])) \
                    & (self.sizes[level] - 1)
            else:
                idx = (vert[..., 0] * (res + 1) + vert[..., 1]) * (res + 1) + vert[..., 2]
            feats = F.embedding(idx + self.offsets[level], self.table)  # N x 8 x F
            out.append(torch.einsum("nc,ncf->nf", cw, feats))
        return torch.cat(out, -1)


# ----------------------------------------------------------------------------- landmark encodings

def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `... x 3 x 3` of quaternions `... x 4` (w, x, y, z), normalised first."""
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def gaussian_weights(delta: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """exp(-1/2 delta Sigma_k^-1 delta^T) for Sigma_k = R_k S_k (R_k S_k)^T.

    delta N x K x 3 (sample minus landmark), quats K x 4, scales K x 3 (> 0). Sigma^-1 =
    R S^-2 R^T, so the quadratic form is |(delta R) / s|^2.
    """
    rot = quaternion_to_matrix(quats)  # K x 3 x 3
    local = torch.einsum("nki,kij->nkj", delta, rot) / scales
    return torch.exp(-0.5 * (local * local).sum(-1))


class LandmarkEncoding(nn.Module):
    """A frame's landmarks (K x 3, head coordinates) as features of each sample point (Table III)."""

    def __init__(self, kind: str, points: int = 68, depth_freqs: int = 2, scale_init: float = 0.05,
                 alpha: float = 0.05, pe_freqs: int = 4, mlp_hidden: int = 64, mlp_out: int = 64) -> None:
        super().__init__()
        if kind not in ENCODINGS:
            raise ValueError(f"unknown landmark encoding {kind!r}; known: {list(ENCODINGS)}")
        self.kind, self.points, self.depth_freqs = kind, int(points), int(depth_freqs)
        self.alpha, self.pe_freqs = float(alpha), int(pe_freqs)
        if kind in ("gaussian", "nodepth"):
            quats = torch.zeros(points, 4)
            quats[:, 0] = 1.0
            self.quats = nn.Parameter(quats)
            self.log_scales = nn.Parameter(torch.full((points, 3), math.log(scale_init)))
        if kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(points * 3, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, mlp_out))
        self.dim = {"gaussian": points * 2 * depth_freqs, "keypoint": points * 2 * depth_freqs,
                    "nodepth": points, "pe": points * 3 * 2 * pe_freqs, "mlp": mlp_out}[kind]

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor, cam_rot: torch.Tensor) -> torch.Tensor:
        """x N x 3 sample points of one frame, landmarks K x 3, cam_rot 3 x 3 (camera-to-world
        rotation: its columns are the camera axes in world coordinates). Returns N x dim."""
        if self.kind == "pe":
            return frequency_encoding(landmarks.reshape(-1), self.pe_freqs).expand(len(x), -1)
        if self.kind == "mlp":
            return self.mlp(landmarks.reshape(-1)).expand(len(x), -1)
        delta = x[:, None, :] - landmarks[None]  # N x K x 3
        if self.kind == "keypoint":
            weight = torch.exp(-(delta * delta).sum(-1) / (2 * self.alpha ** 2))
        else:
            weight = gaussian_weights(delta, self.quats, torch.exp(self.log_scales))
        if self.kind == "nodepth":
            return weight
        d_z = delta @ cam_rot[:, 2]  # relative depth along the camera's forward axis
        code = frequency_encoding(d_z[..., None], self.depth_freqs)  # N x K x 2F
        return (weight[..., None] * code).flatten(1)


# ----------------------------------------------------------------------------- the field

class ConditionedField(nn.Module):
    """Density and colour of points given a frame's landmarks, audio feature and latent code.

    density MLP: [hash grid(x), landmark encoding, ReLU(Linear(audio)), latent] -> (sigma, geo)
    colour MLP:  [geo, gamma(view direction), latent] -> rgb (sigmoid). sigma = softplus(raw - 1).
    """

    def __init__(self, grid: HashGrid, encoding: LandmarkEncoding, audio_dim: int = 64, audio_out: int = 32,
                 latent_dim: int = 16, frames: int = 1, hidden: int = 64, layers: int = 3, geo_dim: int = 15,
                 color_hidden: int = 64, color_layers: int = 2, dir_freqs: int = 2) -> None:
        super().__init__()
        self.grid, self.encoding = grid, encoding
        self.audio = nn.Sequential(nn.Linear(audio_dim, audio_out), nn.ReLU())
        self.latents = nn.Embedding(max(1, frames), latent_dim)
        nn.init.normal_(self.latents.weight, std=0.01)
        self.dir_freqs = int(dir_freqs)

        def mlp(inp, width, depth, out):
            mods, d = [], inp
            for _ in range(depth - 1):
                mods += [nn.Linear(d, width), nn.ReLU()]
                d = width
            mods.append(nn.Linear(d, out))
            return nn.Sequential(*mods)

        self.density = mlp(grid.dim + encoding.dim + audio_out + latent_dim, hidden, layers, 1 + geo_dim)
        self.color = mlp(geo_dim + 6 * dir_freqs + latent_dim, color_hidden, color_layers, 3)

    def latent(self, frame: int | None) -> torch.Tensor:
        """A training frame's code, or (None: an unseen frame) the mean of the training codes."""
        if frame is None:
            return self.latents.weight.mean(0)
        return self.latents.weight[int(frame)]

    def forward(self, x, dirs, landmarks, cam_rot, audio, latent):
        n = len(x)
        cond = torch.cat([self.audio(audio), latent], -1).expand(n, -1)
        h = self.density(torch.cat([self.grid(x), self.encoding(x, landmarks, cam_rot), cond], -1))
        sigma = F.softplus(h[:, 0] - 1.0)
        rgb = torch.sigmoid(self.color(torch.cat([h[:, 1:], frequency_encoding(dirs, self.dir_freqs),
                                                  latent.expand(n, -1)], -1)))
        return sigma, rgb


def render_rays(field: ConditionedField, origins, dirs, landmarks, cam_rot, audio, latent, *, bound: float,
                samples: int, jitter: bool, generator=None, chunk: int = 0):
    """Colour, opacity and depth of rays of one frame (before the background)."""
    near, far = box_bounds(origins, dirs, bound)
    edges = stratified_edges(near, far, samples)
    t = sample_in_bins(edges, jitter, generator)
    pts = (origins[:, None, :] + dirs[:, None, :] * t[..., None]).reshape(-1, 3)
    vdirs = dirs[:, None, :].expand(-1, samples, -1).reshape(-1, 3)
    if chunk and len(pts) > chunk:
        parts = [field(pts[i:i + chunk], vdirs[i:i + chunk], landmarks, cam_rot, audio, latent)
                 for i in range(0, len(pts), chunk)]
        sigma, rgb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    else:
        sigma, rgb = field(pts, vdirs, landmarks, cam_rot, audio, latent)
    return composite(sigma.reshape(-1, samples), rgb.reshape(-1, samples, 3), edges, t)
