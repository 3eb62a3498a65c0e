"""The synthtalk face model: exact per-frame ground truth for a talking face.

A 68-point iBUG-topology 3D shape (millimetres) is built per speaker, animated by
  * visemes from espeak-ng's phoneme timings, blended with coarticulation (dominance functions
    that reach into neighbouring phonemes, further ahead than behind, so the mouth anticipates);
  * one of MEAD's 8 emotions at intensity 1-3 (brows, eyes, mouth corners, lips);
  * seeded random blinks;
then rotated by a smooth head pose with speech-correlated nods and projected (weak perspective)
into 256 x 256 pixel coordinates.

Conventions
  head coordinates: x to the image right, y down, z towards the camera, millimetres, origin
  between the eyes on the eye line; `landmarks3d` are in these coordinates (pose not applied).
  pose: yaw, pitch, roll in degrees, tx, ty, tz in millimetres. Positive yaw turns the nose to the
  image right, positive pitch tips the chin down (a nod), positive roll turns the face clockwise
  in the image; tz > 0 moves the head away from the camera (it looks smaller).
  "left"/"right" in motion names are image sides (the side of points 48 / 54).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.constants import EMOTIONS, SAMPLE_RATE

FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
FRAME_SIZE = 256

AU_NAMES = ("AU10", "AU14", "AU20", "AU25", "AU26")
MOUTH_PARAMS = ("jaw", "lip_round", "lip_stretch", "upper_lip_raise", "lip_close")
MOTION_NAMES = MOUTH_PARAMS + (
    "smile_left", "smile_right", "corner_down", "dimpler_left", "dimpler_right",
    "brow_inner_raise", "brow_outer_raise", "brow_lower", "eye_wide", "eye_squint", "blink",
)
_M = {name: i for i, name in enumerate(MOTION_NAMES)}

# Millimetres of movement for a parameter at 1.0.
JAW_OPEN_MM = 19.0  # lip gap at full jaw opening
UPPER_LIP_RAISE_MM = 4.0
# AU occurrence thresholds (see `action_units`).
AU25_GAP_MM = 1.0  # lips part
AU26_CHIN_DROP_MM = 6.0  # jaw drop
AU10_RAISE_MM = 1.5  # upper lip raised
AU14_DIMPLER = 0.3
AU20_STRETCH = 0.35

# Camera: pixels per millimetre at the nominal distance, image position of the head origin.
CAMERA_DISTANCE_MM = 600.0
PX_PER_MM = 1.12
IMAGE_ORIGIN = (128.0, 90.0)
PIVOT = np.array([0.0, 55.0, -90.0])  # rotation centre of the head (top of the neck)


# ----------------------------------------------------------------------------- identity shape

def _mirror(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    return [(-x, y, z) for x, y, z in points]


def base_shape(jaw_squareness: float = 2.4) -> np.ndarray:
    """The neutral 68 x 3 shape of an average adult face, built from facial proportions.

    The numbers were then nudged (by a few millimetres) towards where dlib's 68-point predictor,
    run on frames of this face, puts its points, so that the drawn face and the iBUG annotation
    convention the predictor learnt agree (see render.py).
    """
    pts = np.zeros((68, 3))
    # Jaw 0-16: lower half of a superellipse from beside the outer eye corner round the chin
    # (larger exponents give a squarer jaw), with the points evenly spaced along it as in iBUG's
    # annotation. The sides recede in depth.
    phi = np.linspace(np.pi, 0.0, 721)
    e = 2.0 / jaw_squareness
    c, s = np.cos(phi), np.sin(phi)
    curve = np.stack([68.0 * np.sign(c) * np.abs(c) ** e, 1.0 + 112.0 * np.abs(s) ** e], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    at = np.linspace(0.0, arc[-1], 17)
    pts[:17, 0] = np.interp(at, arc, curve[:, 0])
    pts[:17, 1] = np.interp(at, arc, curve[:, 1])
    pts[:17, 2] = -8.0 - 62.0 * np.abs(pts[:17, 0] / 68.0) ** 1.5
    # Brows 17-21 (image left, outer to inner) and 22-26 (inner to outer).
    right_brow = [(-55, -18.5, -16), (-45.5, -27, -8), (-33, -29.5, -3), (-21, -27, 0),
                  (-9.5, -20.5, 1)]
    pts[17:22] = right_brow
    pts[22:27] = _mirror(right_brow)[::-1]
    # Nose: bridge 27-30 down to the tip, nostril base 31-35.
    pts[27:31] = [(0, -1, -2), (0, 11, 7), (0, 23, 15), (0, 35, 24)]
    pts[31:36] = [(-14, 48, 4), (-7, 50, 9), (0, 51, 12), (7, 50, 9), (14, 48, 4)]
    # Eyes: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid (image left);
    # 42 inner, 43-44 upper, 45 outer, 46-47 lower (image right).
    right_eye = [(-43, 0.5, -16), (-36, -4.5, -9), (-26, -4.5, -8), (-18, 3.5, -10),
                 (-26.5, 6, -8), (-36, 5.5, -9)]
    pts[36:42] = right_eye
    left = _mirror(right_eye)
    pts[42:48] = [left[3], left[2], left[1], left[0], left[5], left[4]]
    # Mouth: outer lip 48-59 (48 and 54 the corners), inner lip 60-67, lips closed.
    pts[48:60] = [(-25, 76, -6), (-16, 68.5, 4), (-7, 65.3, 9), (0, 66.3, 10), (7, 65.3, 9),
                  (16, 68.5, 4), (25, 76, -6), (16, 81.5, 4), (8, 85, 8), (0, 85.5, 9),
                  (-8, 85, 8), (-16, 81.5, 4)]
    pts[60:68] = [(-21, 75.6, -3), (-9, 73.6, 5), (0, 73.6, 6), (9, 73.6, 5), (21, 75.6, -3),
                  (9, 73.6, 5), (0, 73.6, 6), (-9, 73.6, 5)]
    return pts


@dataclass(frozen=True)
class Identity:
    """One speaker's neutral face: `shape` is 68 x 3 in head coordinates (mm)."""

    shape: np.ndarray
    motion_scale: float = 1.0  # how much this speaker moves the head
    blink_rate_hz: float = 0.3
    articulation: float = 1.0  # how wide this speaker opens the mouth


def sample_identity(rng: np.random.Generator, sex: str = "m") -> Identity:
    """A plausible face: proportions of `base_shape` varied by a few per cent (seeded)."""
    def n(sd: float, lim: float = 2.0) -> float:  # bounded normal draw, in units of sd
        return float(np.clip(rng.normal(), -lim, lim) * sd)

    shape = base_shape(jaw_squareness=2.4 + n(0.18) + (0.15 if sex == "m" else -0.15))
    # Proportions vary by a few per cent only: dlib's predictor (which must find these faces)
    # is held to its training faces' proportions, and strays from them on unusual ones.
    width = 1.0 + n(0.025) + (0.015 if sex == "m" else -0.015)
    height = 1.0 + n(0.025)
    shape[:, 0] *= width
    shape[:, 1] *= height
    shape[:17, 1] += np.abs(np.sin(np.linspace(0, np.pi, 17))) * n(2.0)  # chin length
    spacing = n(1.2)
    shape[36:42, 0] -= spacing
    shape[42:48, 0] += spacing
    for eye, brow in ((slice(36, 42), slice(17, 22)), (slice(42, 48), slice(22, 27))):
        centre = shape[eye].mean(axis=0)
        lid_before = shape[eye][[1, 2], 1].mean()
        shape[eye] = centre + (shape[eye] - centre) * (1.0 + n(0.04))
        # Brows keep their distance from the upper lid.
        shape[brow, 1] += shape[eye][[1, 2], 1].mean() - lid_before
    shape[17:27, 1] += n(0.6)
    shape[[18, 19, 20, 23, 24, 25], 1] -= n(0.5)  # brow arch
    shape[28:36, 1] += np.linspace(0.3, 1.0, 8) * n(1.5)  # nose length
    shape[31:36, 0] *= 1.0 + n(0.06)  # nose width
    mouth = slice(48, 68)
    shape[mouth, 1] += n(1.5)
    shape[mouth, 0] *= 1.0 + n(0.04) + (0.0 if sex == "m" else -0.02)
    lip = 1.0 + n(0.12) + (0.0 if sex == "m" else 0.08)  # lip thickness about the lip line
    line = shape[62, 1]
    shape[48:60, 1] = line + (shape[48:60, 1] - line) * lip
    return Identity(shape=shape, motion_scale=float(np.clip(1.0 + rng.normal() * 0.25, 0.6, 1.5)),
                    blink_rate_hz=float(rng.uniform(0.2, 0.45)),
                    articulation=float(np.clip(1.0 + rng.normal() * 0.1, 0.8, 1.2)))


# ----------------------------------------------------------------------------- visemes

# Per viseme: target and dominance of each mouth parameter (jaw, round, stretch, upper, close).
# A dominance near zero means the parameter is left to the neighbours (coarticulation): e.g.
# consonants do not care about rounding, so a /t/ before /u:/ is already rounded.
_FREE = 0.12  # dominance of a parameter a viseme leaves to its neighbours


def _viseme(jaw, rnd=None, stretch=None, upper=0.0, close=0.0, *, jaw_dom=1.0, round_dom=1.5,
            close_dom=1.5):
    targets = [jaw, rnd or 0.0, stretch or 0.0, upper, close]
    dominance = [jaw_dom, _FREE if rnd is None else round_dom, _FREE if stretch is None else 1.0,
                 0.8, close_dom]
    return np.array(targets), np.array(dominance)


VISEMES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "SIL": _viseme(0.0, 0.0, 0.0, 0.0, 1.0, jaw_dom=1.5, round_dom=0.6, close_dom=2.0),
    # consonants
    "PBM": _viseme(0.08, close=1.0, jaw_dom=0.8, close_dom=12.0),
    "FV": _viseme(0.1, upper=0.55, close=0.8, jaw_dom=0.8, close_dom=5.0),
    "TH": _viseme(0.2, None, 0.1, upper=0.15, close_dom=1.0),
    "TDNL": _viseme(0.16, close_dom=1.0, jaw_dom=0.7),
    "SZ": _viseme(0.08, None, 0.3, close_dom=1.0, jaw_dom=1.2),
    "SH": _viseme(0.14, 0.7, 0.0, close_dom=1.0, round_dom=2.0),
    "KG": _viseme(0.25, close_dom=0.8, jaw_dom=0.4),
    "H": _viseme(0.3, close_dom=0.3, jaw_dom=0.15),
    "R": _viseme(0.18, 0.5, 0.0, round_dom=1.5),
    "W": _viseme(0.1, 0.95, 0.0, round_dom=3.0, close_dom=1.0),
    "Y": _viseme(0.15, 0.0, 0.4),
    # vowels: the jaw and the open lips dominate
    "AA": _viseme(0.85, 0.0, 0.1, jaw_dom=2.0, close_dom=2.5),
    "AE": _viseme(0.72, 0.0, 0.3, jaw_dom=2.0, close_dom=2.5),
    "AH": _viseme(0.55, 0.0, 0.05, jaw_dom=2.0, close_dom=2.5),
    "AO": _viseme(0.62, 0.55, 0.0, jaw_dom=2.0, close_dom=2.5),
    "OH": _viseme(0.45, 0.65, 0.0, jaw_dom=2.0, close_dom=2.5),
    "SCHWA": _viseme(0.35, None, None, jaw_dom=1.2, close_dom=2.0),
    "ER": _viseme(0.35, 0.35, 0.0, jaw_dom=1.5, close_dom=2.0),
    "EH": _viseme(0.55, 0.0, 0.35, jaw_dom=2.0, close_dom=2.5),
    "IH": _viseme(0.3, 0.0, 0.45, jaw_dom=1.5, close_dom=2.0),
    "IY": _viseme(0.2, 0.0, 0.6, jaw_dom=1.5, close_dom=2.0),
    "UH": _viseme(0.3, 0.6, 0.0, jaw_dom=1.5, close_dom=2.0),
    "UW": _viseme(0.22, 0.95, 0.0, jaw_dom=1.5, round_dom=2.5, close_dom=2.0),
}

# espeak-ng English phoneme mnemonics (stress marks removed) -> viseme, or two visemes for a
# diphthong (first and second half of its interval).
PHONEME_VISEMES: dict[str, tuple[str, ...]] = {
    **{p: ("PBM",) for p in ("p", "b", "m")},
    **{p: ("FV",) for p in ("f", "v")},
    **{p: ("TH",) for p in ("T", "D")},
    **{p: ("TDNL",) for p in ("t", "d", "n", "l", "t#", "d#", "n-", "l/", "l#", "t2", "d2")},
    **{p: ("SZ",) for p in ("s", "z")},
    **{p: ("SH",) for p in ("S", "Z", "tS", "dZ")},
    **{p: ("KG",) for p in ("k", "g", "N", "x")},
    **{p: ("H",) for p in ("h", "?")},
    **{p: ("R",) for p in ("r", "r-", "*")},
    "w": ("W",), "j": ("Y",),
    **{p: ("AA",) for p in ("A:", "A@", "aa", "A")},
    "a": ("AE",), "a#": ("AH",), "V": ("AH",),
    **{p: ("AO",) for p in ("0", "O", "O:", "O@", "O2")},
    **{p: ("SCHWA",) for p in ("@", "@L", "@2", "@5", "@-", "@#")},
    **{p: ("ER",) for p in ("3", "3:", "@r")},
    **{p: ("EH",) for p in ("E", "E2", "E@", "e")},
    **{p: ("IH",) for p in ("I", "I#", "I2", "i")},
    "i:": ("IY",),
    **{p: ("UH",) for p in ("U", "U@")},
    "u:": ("UW",),
    "aI": ("AA", "IH"), "aI@": ("AA", "IH"), "aI3": ("AA", "ER"), "aU": ("AA", "UH"),
    "eI": ("EH", "IH"), "OI": ("AO", "IH"), "oU": ("OH", "UW"), "o@": ("OH", "ER"),
    "i@": ("IH", "SCHWA"), "i@3": ("IH", "ER"), "e@": ("EH", "SCHWA"),
}
_VOWEL_CHARS = set("aeiouAEIOUV03@")


def phoneme_visemes(name: str) -> tuple[str, ...]:
    """Viseme(s) of an espeak-ng phoneme mnemonic; unknown names fall back by their first letter."""
    base = name.lstrip("',=%")
    if not base or base.startswith("_"):
        return ("SIL",)
    if base in PHONEME_VISEMES:
        return PHONEME_VISEMES[base]
    if base.rstrip("#") in PHONEME_VISEMES:
        return PHONEME_VISEMES[base.rstrip("#")]
    return ("SCHWA",) if base[0] in _VOWEL_CHARS else ("KG",)


def _segments(phonemes: list[tuple[str, float, float]], duration: float
              ) -> list[tuple[str, float, float]]:
    """Viseme segments covering [0, duration]: diphthongs split, silence before and after."""
    segs = []
    for name, start, end in phonemes:
        visemes = phoneme_visemes(name)
        edges = np.linspace(start, end, len(visemes) + 1)
        segs += [(v, float(a), float(b)) for v, a, b in zip(visemes, edges[:-1], edges[1:])]
    first = segs[0][1] if segs else duration
    last = segs[-1][2] if segs else 0.0
    return [("SIL", 0.0, first)] + segs + [("SIL", last, duration)]


# Dominance decays exponentially away from a segment, more slowly before it (anticipation)
# than after it (carry-over). Seconds, per mouth parameter.
ARTICULATION_LEAD_S = 0.04
_TAU_AHEAD = np.array([0.055, 0.09, 0.06, 0.05, 0.03])
_TAU_BEHIND = np.array([0.04, 0.06, 0.04, 0.04, 0.025])


def articulation(phonemes: list[tuple[str, float, float]], times: np.ndarray, duration: float
                 ) -> np.ndarray:
    """Mouth parameters (T x 5, `MOUTH_PARAMS`) at `times` by dominance-weighted blending."""
    segs = _segments(phonemes, duration)
    targets = np.stack([VISEMES[v][0] for v, _, _ in segs])  # S x 5
    dominance = np.stack([VISEMES[v][1] for v, _, _ in segs])
    starts = np.array([a for _, a, _ in segs])[None, :, None]
    ends = np.array([b for _, _, b in segs])[None, :, None]
    t = times[:, None, None]
    ahead = np.clip(starts - t, 0.0, None)  # time until the segment starts
    behind = np.clip(t - ends, 0.0, None)  # time since it ended
    weight = dominance[None] * np.exp(-ahead / _TAU_AHEAD - behind / _TAU_BEHIND)  # T x S x 5
    weight = weight + 1e-9
    return (weight * targets[None]).sum(axis=1) / weight.sum(axis=1)


# ----------------------------------------------------------------------------- emotion

# Expression at intensity 3 (MEAD's strongest), in motion-parameter units.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": dict(brow_lower=0.9, eye_squint=0.35, eye_wide=0.2, corner_down=0.25,
                  lip_close=0.1),
    "contempt": dict(dimpler_right=0.8, smile_right=0.35, eye_squint=0.1, brow_lower=0.1),
    "disgusted": dict(upper_lip_raise=0.75, brow_lower=0.6, eye_squint=0.5, corner_down=0.3),
    "fear": dict(brow_inner_raise=0.9, brow_outer_raise=0.5, brow_lower=0.35, eye_wide=0.8,
                 lip_stretch=0.75, jaw=0.08, lip_close=-0.3),
    "happy": dict(smile_left=0.85, smile_right=0.85, eye_squint=0.5, lip_stretch=0.15),
    "sad": dict(brow_inner_raise=0.85, brow_lower=0.15, corner_down=0.75, eye_squint=0.2),
    "surprised": dict(brow_inner_raise=0.9, brow_outer_raise=0.9, eye_wide=0.9, jaw=0.3,
                      lip_close=-0.5),  # the mouth hangs open
}
INTENSITY_SCALE = {1: 0.45, 2: 0.72, 3: 1.0}
# How an emotion changes articulation, voice and head motion (scaled by intensity).
EMOTION_STYLE: dict[str, dict[str, float]] = {
    "neutral": dict(articulation=1.0, motion=1.0, head_pitch=0.0),
    "angry": dict(articulation=1.15, motion=1.2, head_pitch=2.0),
    "contempt": dict(articulation=0.9, motion=0.8, head_pitch=-1.5),
    "disgusted": dict(articulation=0.9, motion=0.9, head_pitch=1.0),
    "fear": dict(articulation=0.95, motion=1.1, head_pitch=1.0),
    "happy": dict(articulation=1.1, motion=1.3, head_pitch=-1.0),
    "sad": dict(articulation=0.8, motion=0.6, head_pitch=3.0),
    "surprised": dict(articulation=1.15, motion=1.2, head_pitch=-2.5),
}


def expression(emotion: str, intensity: int, num_frames: int) -> np.ndarray:
    """The emotion's constant expression offsets, T x M."""
    if emotion not in EXPRESSIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")
    out = np.zeros((num_frames, len(MOTION_NAMES)))
    for name, value in EXPRESSIONS[emotion].items():
        out[:, _M[name]] = value * INTENSITY_SCALE[int(intensity)]
    return out


def blinks(rng: np.random.Generator, times: np.ndarray, rate_hz: float) -> np.ndarray:
    """Eyelid closure in [0, 1]: seeded random blinks, closing in ~70 ms, reopening in ~130 ms."""
    closure = np.zeros_like(times)
    t = rng.uniform(0.2, 1.0 / rate_hz)
    while t < times[-1] + 0.3:
        close_s, open_s = rng.uniform(0.06, 0.09), rng.uniform(0.11, 0.16)
        rel = times - t
        shape = np.where(rel < 0, np.clip(1 + rel / close_s, 0, 1), np.clip(1 - rel / open_s, 0, 1))
        closure = np.maximum(closure, np.sin(shape * np.pi / 2) ** 2)
        t += max(0.4, rng.exponential(1.0 / rate_hz))
    return closure


def motion_track(phonemes, times: np.ndarray, duration: float, identity: Identity, emotion: str,
                 intensity: int, rng: np.random.Generator) -> np.ndarray:
    """All expression coefficients per frame (T x M, `MOTION_NAMES`), clipped to [0, 1]."""
    scale = INTENSITY_SCALE[int(intensity)]
    style = EMOTION_STYLE[emotion]
    gain = identity.articulation * (1.0 + (style["articulation"] - 1.0) * scale)
    # Articulators move before the sound they shape (lips and jaw lead the acoustics by a few
    # tens of milliseconds), so the face at time t takes the mouth of t + lead.
    mouth = articulation(phonemes, times + ARTICULATION_LEAD_S, duration)
    mouth[:, 0] *= gain  # jaw opening
    motion = expression(emotion, intensity, len(times))
    motion[:, :5] += mouth
    motion[:, _M["blink"]] = blinks(rng, times, identity.blink_rate_hz)
    return np.clip(motion, 0.0, 1.0)


# ----------------------------------------------------------------------------- geometry

def _side_weights(x: np.ndarray, centre: float, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """How much each point belongs to the image-left / image-right half of a feature (0..1)."""
    u = np.clip((x - centre) / half_width, -1.0, 1.0)
    return np.clip(-u, 0, 1), np.clip(u, 0, 1)


def deform(identity: Identity, motion: np.ndarray) -> np.ndarray:
    """Apply expression coefficients (T x M) to the identity shape: T x 68 x 3 (head coords)."""
    base = identity.shape
    T = motion.shape[0]
    p = {name: motion[:, i][:, None] for i, name in enumerate(MOTION_NAMES)}  # each T x 1
    out = np.repeat(base[None].astype(np.float64), T, axis=0)
    _deform_mouth(out, base, p)
    _deform_jaw(out, base, p)
    _deform_brows(out, base, p)
    _deform_eyes(out, base, p)
    out[:, 31:36, 1] -= 1.0 * p["upper_lip_raise"]  # AU10 lifts the nostril wings a little
    return out


def _deform_mouth(out, base, p) -> None:
    mouth = np.arange(48, 68)
    mx = 0.5 * (base[48, 0] + base[54, 0])
    half = 0.5 * (base[54, 0] - base[48, 0])
    x0 = base[mouth, 0] - mx  # T-independent offsets from the mouth centre
    left, right = _side_weights(base[mouth, 0], mx, half)
    corner = np.abs(x0) / half  # 1 at the corners, 0 in the middle
    centre = 1.0 - corner

    # Width: rounding narrows and pushes the lips forward, stretching widens them.
    width = 1.0 - 0.32 * p["lip_round"] + 0.16 * p["lip_stretch"]
    dx = x0[None] * (width - 1.0)
    dz = 7.0 * p["lip_round"] * (0.4 + 0.6 * centre)[None]
    dy = np.zeros_like(dx)
    # Rounding also makes the outer lips rounder (upper lip up, lower lip down at the middle).
    outer_up = np.isin(mouth, (49, 50, 51, 52, 53))
    outer_low = np.isin(mouth, (55, 56, 57, 58, 59))
    dy -= 1.5 * p["lip_round"] * (outer_up * centre)[None]
    dy += 1.5 * p["lip_round"] * (outer_low * centre)[None]
    # Stretch (AU20) pulls the corners sideways and a little down, thinning the lips.
    dy += 1.5 * p["lip_stretch"] * corner[None]
    dy += 1.0 * p["lip_stretch"] * (outer_up * centre)[None] - 1.0 * p["lip_stretch"] * (
        outer_low * centre)[None]
    # Smile (AU12) per side lifts the corners up and out; corner_down (AU15) drops both.
    smile = p["smile_left"] * left[None] + p["smile_right"] * right[None]
    dy -= 5.0 * smile * corner[None] ** 1.5
    dx += 3.0 * smile * np.sign(x0)[None] * corner[None] ** 1.5
    dy += 4.0 * p["corner_down"] * corner[None] ** 2
    # Dimpler (AU14) per side tightens the corner inwards and back.
    dimple = p["dimpler_left"] * left[None] + p["dimpler_right"] * right[None]
    dx -= 2.0 * dimple * np.sign(x0)[None] * corner[None] ** 2
    dy -= 1.0 * dimple * corner[None] ** 2
    dz -= 3.0 * dimple * corner[None] ** 2
    # Upper lip raiser (AU10) lifts the upper lip, most at the middle.
    upper = np.isin(mouth, (49, 50, 51, 52, 53, 61, 62, 63))
    dy -= UPPER_LIP_RAISE_MM * p["upper_lip_raise"] * (upper * (0.3 + 0.7 * centre))[None]

    # Jaw opening parts the lips unless they are held closed (bilabials, rest).
    jaw_mm = JAW_OPEN_MM * p["jaw"]
    gap = jaw_mm * (1.0 - p["lip_close"])
    lower_inner = np.isin(mouth, (65, 66, 67))
    lower_outer = np.isin(mouth, (55, 56, 57, 58, 59))
    dy += gap * lower_inner[None]
    # The lower lip's outline follows the jaw; closed lips stretch up over the open jaw.
    dy += (gap + 0.35 * (jaw_mm - gap)) * (lower_outer * (0.55 + 0.45 * centre))[None]
    # The corners drop with the jaw and come in a little.
    corners = np.isin(mouth, (48, 54, 60, 64))
    dy += 0.35 * jaw_mm * corners[None]
    dx -= 0.08 * jaw_mm * np.sign(x0)[None] * corners[None]
    out[:, 48:68, 0] += dx
    out[:, 48:68, 1] += dy
    out[:, 48:68, 2] += dz


def _deform_jaw(out, base, p) -> None:
    """The mandible rotates about the ear: jaw points drop more the further they are from it."""
    y = base[:17, 1]
    reach = np.clip((y - y.min()) / (y.max() - y.min()), 0.0, 1.0)
    out[:, :17, 1] += 1.1 * JAW_OPEN_MM * p["jaw"] * reach[None]
    # The lowered jaw swings back under the face, so its outline narrows.
    out[:, :17, 0] -= 0.1 * p["jaw"] * (reach * base[:17, 0])[None]
    out[:, :17, 2] -= 0.25 * JAW_OPEN_MM * p["jaw"] * reach[None]


def _deform_brows(out, base, p) -> None:
    inner = np.array([0.0, 0.2, 0.5, 0.8, 1.0])  # 17..21 from outer to inner
    inner = np.concatenate([inner, inner[::-1]])  # 17..26
    outer = 1.0 - inner
    # Raises are kept within the range dlib's predictor follows (a few millimetres).
    dy = -(3.0 * p["brow_inner_raise"] * inner + 3.0 * p["brow_outer_raise"] * outer
           + 0.8 * p["brow_inner_raise"] * outer)
    dy += 4.0 * p["brow_lower"] * (0.4 + 0.6 * inner)
    # Squinting and blinking (orbicularis oculi) pull the brows down a little as well.
    dy += 1.5 * p["eye_squint"] + 1.0 * p["blink"]
    toward_centre = -np.sign(base[17:27, 0])
    out[:, 17:27, 0] += 2.5 * p["brow_lower"] * inner * toward_centre
    out[:, 17:27, 1] += dy


def _deform_eyes(out, base, p) -> None:
    """Lids: wide (AU5) raises the upper lid, squint (AU6/7) closes from below, blink from above."""
    for upper, lower in (((37, 38), (40, 41)), ((43, 44), (46, 47))):
        up, low = list(upper), list(lower)
        height = base[low, 1].mean() - base[up, 1].mean()
        up_y = base[up, 1][None] - 0.18 * height * p["eye_wide"] + 0.15 * height * p["eye_squint"]
        low_y = base[low, 1][None] - 0.2 * height * p["eye_squint"]
        # A blink brings the upper lid down to (just above) the lower lid.
        closed_y = low_y - 0.5
        up_y = up_y + (closed_y - up_y) * p["blink"]
        out[:, up, 1] = up_y
        out[:, low, 1] = low_y


def rotation_matrix(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """T x 3 x 3 rotations Rz(roll) Ry(yaw) Rx(pitch) for the conventions in the module doc."""
    y, p, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    one, zero = np.ones_like(y), np.zeros_like(y)
    rx = np.stack([np.stack([one, zero, zero], -1),
                   np.stack([zero, np.cos(p), np.sin(p)], -1),
                   np.stack([zero, -np.sin(p), np.cos(p)], -1)], -2)
    ry = np.stack([np.stack([np.cos(y), zero, np.sin(y)], -1),
                   np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(y), zero, np.cos(y)], -1)], -2)
    rz = np.stack([np.stack([np.cos(r), -np.sin(r), zero], -1),
                   np.stack([np.sin(r), np.cos(r), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def project(landmarks3d: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Pose (T x 6) applied to head-coordinate points (T x N x 3) -> T x N x 2 pixels."""
    rot = rotation_matrix(pose[:, 0], pose[:, 1], pose[:, 2])
    cam = np.einsum("tij,tnj->tni", rot, landmarks3d - PIVOT) + PIVOT + pose[:, None, 3:6]
    # Weak perspective: one scale per frame, set by the head's distance.
    scale = PX_PER_MM * CAMERA_DISTANCE_MM / (CAMERA_DISTANCE_MM + pose[:, 5])
    return np.array(IMAGE_ORIGIN) + scale[:, None, None] * cam[..., :2]


# ----------------------------------------------------------------------------- head pose

def _smooth_noise(rng: np.random.Generator, times: np.ndarray, std: float,
                  freqs=(0.12, 0.7)) -> np.ndarray:
    """A smooth random signal: three sinusoids of random frequency and phase."""
    out = np.zeros_like(times)
    for _ in range(3):
        f = rng.uniform(*freqs)
        out += np.clip(rng.normal(), -2, 2) * np.sin(2 * np.pi * f * times + rng.uniform(0, 2 * np.pi))
    return out * std / np.sqrt(1.5)


def frame_energy(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS of the audio under each video frame (frame k covers samples 640k .. 640k+639)."""
    frames = audio[: num_frames * SAMPLES_PER_FRAME].reshape(num_frames, SAMPLES_PER_FRAME)
    return np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))


def head_pose(rng: np.random.Generator, times: np.ndarray, phonemes, energy: np.ndarray,
              identity: Identity, emotion: str, intensity: int) -> np.ndarray:
    """T x 6 pose: slow wandering, nods on stressed syllables and with loudness, an emotion tilt."""
    style = EMOTION_STYLE[emotion]
    k = INTENSITY_SCALE[int(intensity)]
    amount = float(np.clip(identity.motion_scale * (1.0 + (style["motion"] - 1.0) * k), 0.5, 1.6))
    yaw = _smooth_noise(rng, times, 1.6 * amount)
    pitch = _smooth_noise(rng, times, 0.9 * amount) + style["head_pitch"] * k
    roll = _smooth_noise(rng, times, 0.8 * amount)
    # Nods: the head dips just after each stressed vowel onset ...
    for name, start, _ in phonemes:
        if name.startswith("'"):
            pitch += 1.0 * amount * np.exp(-0.5 * ((times - start - 0.08) / 0.1) ** 2)
    # ... and leans with the loudness of the voice (smoothed over ~0.35 s).
    kernel = np.hanning(9)
    loud = np.convolve(energy / (energy.max() + 1e-9), kernel / kernel.sum(), mode="same")
    pitch += 0.8 * amount * loud
    tx = _smooth_noise(rng, times, 1.5 * amount, freqs=(0.08, 0.4))
    ty = _smooth_noise(rng, times, 1.0 * amount, freqs=(0.08, 0.4)) + 0.6 * loud * amount
    tz = _smooth_noise(rng, times, 6.0 * amount, freqs=(0.05, 0.3))
    return np.stack([yaw, pitch, roll, tx, ty, tz], axis=1)


# ----------------------------------------------------------------------------- AUs and clips

def lip_gap(landmarks3d: np.ndarray) -> np.ndarray:
    """Mean vertical distance between the inner lips (61-67, 62-66, 63-65), per frame."""
    return (landmarks3d[:, [67, 66, 65], 1] - landmarks3d[:, [61, 62, 63], 1]).mean(axis=1)


def action_units(identity: Identity, motion: np.ndarray, landmarks3d: np.ndarray) -> np.ndarray:
    """Speech-AU occurrence (T x 5, `AU_NAMES`) from the mouth geometry and parameters.

    AU25 lips part: inner-lip gap > 1 mm.  AU26 jaw drop: chin (pt 8) > 6 mm below neutral.
    AU10 upper-lip raiser: upper-lip middle (pt 51) > 1.5 mm above neutral.
    AU14 dimpler and AU20 lip stretcher: their coefficients above 0.3 / 0.35.
    """
    au10 = identity.shape[51, 1] - landmarks3d[:, 51, 1] > AU10_RAISE_MM
    dimpler = motion[:, [_M["dimpler_left"], _M["dimpler_right"]]].max(axis=1)
    au14 = dimpler > AU14_DIMPLER
    au20 = motion[:, _M["lip_stretch"]] > AU20_STRETCH
    au25 = lip_gap(landmarks3d) > AU25_GAP_MM
    au26 = landmarks3d[:, 8, 1] - identity.shape[8, 1] > AU26_CHIN_DROP_MM
    return np.stack([au10, au14, au20, au25, au26], axis=1).astype(np.uint8)


@dataclass
class FaceTrack:
    """Per-frame ground truth of one clip."""

    landmarks: np.ndarray  # T x 68 x 2 float32 pixels
    landmarks3d: np.ndarray  # T x 68 x 3 float32 head coordinates (mm)
    pose: np.ndarray  # T x 6 float32
    aus: np.ndarray  # T x 5 uint8
    motion: np.ndarray  # T x M float32
    au_names: tuple[str, ...] = AU_NAMES
    motion_names: tuple[str, ...] = MOTION_NAMES


def num_frames_for(num_samples: int, fps: int = FPS) -> int:
    return int(round(num_samples / SAMPLE_RATE * fps))


def align_audio(audio: np.ndarray, fps: int = FPS) -> tuple[np.ndarray, int]:
    """Pad (with silence) or trim audio to a whole number of frames: (audio, T), len = T * 640."""
    T = num_frames_for(len(audio), fps)
    n = T * (SAMPLE_RATE // fps)
    audio = np.asarray(audio, dtype=np.float32)
    out = np.zeros(n, np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out, T


def animate(phonemes: list[tuple[str, float, float]], audio: np.ndarray, identity: Identity,
            emotion: str, intensity: int, rng: np.random.Generator) -> FaceTrack:
    """Ground truth for frame-aligned `audio` (len = T * 640) spoken with these phonemes."""
    if len(audio) % SAMPLES_PER_FRAME:
        raise ValueError("audio must be frame-aligned; use align_audio first")
    T = len(audio) // SAMPLES_PER_FRAME
    times = (np.arange(T) + 0.5) / FPS  # frame centres
    motion = motion_track(phonemes, times, T / FPS, identity, emotion, intensity, rng)
    shape3d = deform(identity, motion)
    pose = head_pose(rng, times, phonemes, frame_energy(audio, T), identity, emotion, intensity)
    landmarks = project(shape3d, pose)
    aus = action_units(identity, motion, shape3d)
    return FaceTrack(landmarks=landmarks.astype(np.float32), landmarks3d=shape3d.astype(np.float32),
                     pose=pose.astype(np.float32), aus=aus, motion=motion.astype(np.float32))
