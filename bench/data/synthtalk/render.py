"""Frames of the synthtalk face, drawn from its 68 landmarks as anti-aliased filled polygons.

Only the 2D landmarks (and the speaker's colours) go in, so the same renderer shows the ground
truth and any method's predicted landmarks. The drawing is made so that a real face detector
finds it: dlib's HOG detector fires on it and dlib's 68-point predictor puts its points back on
the landmarks within ~2 px (see tests/test_synthtalk.py), so landmark metrics computed on
generated frames go through a real detector, as they would on real video.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Appearance:
    """One speaker's colours (RGB) and hair shape."""

    skin: Colour = (224, 182, 152)
    hair: Colour = (60, 42, 30)
    background: Colour = (120, 130, 150)
    iris: Colour = (90, 60, 40)
    lips: Colour = (176, 96, 92)
    clothes: Colour = (50, 70, 110)
    hair_volume: float = 1.0  # how far the hair stands out round the head
    fringe: float = 0.5  # how low the hairline comes down the forehead (0..1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Appearance":
        return cls(**{k: tuple(int(c) for c in v) if isinstance(v, (list, tuple)) else float(v)
                      for k, v in d.items()})


_SKIN_TONES = [(245, 208, 180), (233, 190, 160), (222, 172, 135), (198, 140, 105),
               (165, 110, 80), (142, 96, 68), (122, 80, 56)]
_HAIR = [(28, 24, 22), (60, 42, 30), (95, 62, 38), (150, 110, 60), (200, 165, 105),
         (140, 60, 30), (150, 150, 150)]
_BACKGROUNDS = [(122, 136, 160), (150, 150, 140), (96, 118, 110), (170, 160, 150),
                (110, 100, 120), (185, 190, 200), (80, 95, 120)]
_IRIS = [(70, 45, 30), (100, 70, 45), (80, 110, 140), (90, 120, 80), (50, 35, 25)]


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _darker_than(c: Colour, luma: float) -> Colour:
    """`c` darkened (hue kept) until its luma is at most `luma`: hair must stand out from skin,
    or the face outline (and the detector with it) gets lost in it."""
    k = min(1.0, max(luma, 15.0) / max(_luma(c), 1e-6))
    return tuple(int(v * k) for v in c)


def _apart_from(c: Colour, luma: float, margin: float) -> Colour:
    """`c` made lighter or darker until its luma differs from `luma` by at least `margin`."""
    own = _luma(c)
    if abs(own - luma) >= margin:
        return c
    target = luma - margin if luma >= 128 else luma + margin
    return tuple(int(np.clip(v + (target - own), 0, 255)) for v in c)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Seeded colours: a skin tone with a matching lip colour, hair, background, eyes, clothes."""
    def jitter(c: Colour, amount: float) -> Colour:
        return tuple(int(np.clip(v + rng.normal() * amount, 0, 255)) for v in c)

    skin = jitter(_SKIN_TONES[rng.integers(len(_SKIN_TONES))], 6)
    # Very dark renderings lose the small intensity differences dlib's predictor relies on
    # (its points then slide off the features), so the darkest tones are lit up a little.
    skin = tuple(int(min(255, v * max(1.0, 115.0 / _luma(skin)))) for v in skin)
    lips = tuple(int(np.clip(v, 0, 255)) for v in np.array(skin) * (0.78, 0.55, 0.58) + (20, 5, 10))
    hair = jitter(_HAIR[rng.integers(len(_HAIR))], 8)
    background = jitter(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], 10)
    return Appearance(
        skin=skin, lips=lips,
        hair=_darker_than(hair, _luma(skin) - 60),
        background=_apart_from(background, _luma(skin), 45),
        iris=jitter(_IRIS[rng.integers(len(_IRIS))], 8),
        clothes=tuple(int(v) for v in rng.integers(30, 200, size=3)),
        hair_volume=float(rng.uniform(0.8, 1.3)), fringe=float(rng.uniform(0.2, 0.8)),
    )


def _fix(points: np.ndarray) -> np.ndarray:
    """Float pixel points -> OpenCV's fixed-point int32 (N x 1 x 2)."""
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, points: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fix(points)], tuple(float(c) for c in colour), cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, points: np.ndarray, colour, thickness: float, closed=False) -> None:
    cv2.polylines(img, [_fix(points)], closed, tuple(float(c) for c in colour),
                  max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _ellipse(img, centre, axes, angle_deg, colour) -> None:
    cv2.ellipse(img, (_fix(centre)[0, 0, 0], _fix(centre)[0, 0, 1]),
                (max(1, int(axes[0] * _ONE)), max(1, int(axes[1] * _ONE))), angle_deg, 0, 360,
                tuple(float(c) for c in colour), -1, cv2.LINE_AA, _SHIFT)


def _scale(colour, k: float) -> tuple:
    return tuple(float(np.clip(c * k, 0, 255)) for c in colour)


@dataclass
class _Frame:
    """Where the head is in one frame: centre of the jaw ends, axes, face width."""

    centre: np.ndarray
    ex: np.ndarray  # unit vector along the face, image-left to image-right
    ey: np.ndarray  # unit vector down the face
    width: float
    angle: float  # degrees, the roll of the face in the image

    @classmethod
    def of(cls, lm: np.ndarray) -> "_Frame":
        across = lm[16] - lm[0]
        width = float(np.linalg.norm(across))
        ex = across / width
        return cls(centre=(lm[0] + lm[16]) / 2, ex=ex, ey=np.array([-ex[1], ex[0]]), width=width,
                   angle=float(np.degrees(np.arctan2(ex[1], ex[0]))))

    def at(self, u, v) -> np.ndarray:
        """Points at face coordinates (u across, v down), in units of the face width."""
        u, v = np.asarray(u, float), np.asarray(v, float)
        return self.centre + self.width * (u[..., None] * self.ex + v[..., None] * self.ey)

    def dome(self, half_width: float, height: float, start=0.0, stop=np.pi, n=40) -> np.ndarray:
        """A rounded arc over the head from angle `start` to `stop` (0 = image right)."""
        theta = np.linspace(start, stop, n)
        c, s = np.cos(theta), np.sin(theta)
        # A superellipse (exponent 2.6) is squarer than an ellipse, like a skull.
        u = half_width * np.sign(c) * np.abs(c) ** (2 / 2.6)
        v = -height * np.sign(s) * np.abs(s) ** (2 / 2.6)
        return self.at(u, v)


def _forehead_height(lm: np.ndarray, fr: _Frame) -> float:
    """Distance (face widths) from the jaw-end line up to the top of the forehead."""
    brow_top = -min(float(np.dot(p - fr.centre, fr.ey)) for p in lm[17:27]) / fr.width
    return brow_top + 0.3


def render_frame(lm: np.ndarray, look: Appearance, size: int = 256) -> np.ndarray:
    """One uint8 size x size x 3 RGB frame from 68 x 2 pixel landmarks."""
    lm = np.asarray(lm, np.float64)
    fr = _Frame.of(lm)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = look.background
    top = _forehead_height(lm, fr)
    _draw_back(img, lm, fr, look, top)
    _draw_face(img, lm, fr, look, top)
    _draw_brows(img, lm, fr, look)
    _draw_eyes(img, lm, fr, look)
    _draw_nose(img, lm, fr, look)
    _draw_mouth(img, lm, fr, look)
    return cv2.GaussianBlur(img, (0, 0), 0.7)


def render_frames(landmarks: np.ndarray, appearance: Appearance | dict, size: int = 256
                  ) -> np.ndarray:
    """Frames (T x size x size x 3 uint8 RGB) of landmarks (T x 68 x 2 pixels, for 256 px)."""
    look = appearance if isinstance(appearance, Appearance) else Appearance.from_dict(appearance)
    landmarks = np.asarray(landmarks, np.float64) * (size / 256.0)
    out = np.empty((len(landmarks), size, size, 3), np.uint8)
    for t, lm in enumerate(landmarks):
        out[t] = render_frame(lm, look, size)
    return out


def _draw_back(img, lm, fr: _Frame, look: Appearance, top: float) -> None:
    """Hair behind the head, ears, neck and shoulders: everything the face is drawn over."""
    vol = 0.06 * look.hair_volume
    hair = fr.dome(0.5 + vol, top + vol, -0.2 * np.pi, 1.2 * np.pi)
    _fill(img, hair, look.hair)
    # Shoulders and clothes, then the neck (in shadow under the chin).
    shoulders = np.concatenate([fr.at([-0.9, -0.55, -0.2, 0.2, 0.55, 0.9], [1.6, 1.28, 1.2, 1.2, 1.28, 1.6]),
                                fr.at([0.9, -0.9], [3.0, 3.0])])
    _fill(img, shoulders, look.clothes)
    neck = np.array([lm[4] * 0.8 + lm[8] * 0.2, lm[12] * 0.8 + lm[8] * 0.2,
                     *fr.at([0.27, -0.27], [1.35, 1.35])])
    _fill(img, neck, _scale(look.skin, 0.72))
    for side, jaw_pt in ((-1, 1), (1, 15)):  # ears
        centre = lm[jaw_pt] + fr.width * (0.015 * side * fr.ex - 0.04 * fr.ey)
        _ellipse(img, centre, (0.06 * fr.width, 0.13 * fr.width), fr.angle, _scale(look.skin, 0.86))


def _draw_face(img, lm, fr: _Frame, look: Appearance, top: float) -> None:
    """Skin (jaw outline + forehead dome), shaded darker towards its edge, then the fringe."""
    outline = np.concatenate([lm[0:17], fr.dome(0.5, top)[1:-1]])
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [_fix(outline)], 255, cv2.LINE_AA, _SHIFT)
    cover = mask.astype(np.float32) * (1.0 / 255.0)
    # Shading: a blurred copy of the mask is ~0.5 at the outline and 1 deep inside (blurred at
    # half resolution: it is smooth anyway, and this is the costliest step of a frame).
    small = cv2.resize(cover, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 0.035 * fr.width)
    inner = cv2.resize(small, img.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    shade = 0.74 + 0.26 * np.sqrt(np.clip((inner - 0.5) * 2.2, 0, 1))
    skin = cv2.merge([shade * float(c) for c in look.skin])
    img[:] = cv2.blendLinear(img.astype(np.float32), skin, 1.0 - cover, cover) \
        .round().astype(np.uint8)
    # Hair over the top of the forehead: between the dome and a lower hairline arc.
    hairline = top - 0.05 - 0.12 * look.fringe
    fringe = np.concatenate([fr.dome(0.505, top + 0.005), fr.dome(0.49, hairline)[::-1]])
    _fill(img, fringe, look.hair)


def _draw_brows(img, lm, fr: _Frame, look: Appearance) -> None:
    # Brows stay clearly darker than the skin whatever the hair colour (blond hair included).
    colour = np.minimum(np.array(look.hair, float), np.array(look.skin, float) * 0.38)
    up = -fr.ey * fr.width
    for brow in (lm[17:22], lm[26:21:-1]):  # outer -> inner for both brows
        thick = np.array([0.022, 0.044, 0.056, 0.062, 0.066])[:, None]  # tapered to the tail
        upper = brow + up * thick * 0.35
        lower = brow - up * thick * 0.65
        _fill(img, np.concatenate([upper, lower[::-1]]), colour)


def _draw_eyes(img, lm, fr: _Frame, look: Appearance) -> None:
    lid = _scale(look.skin, 0.35)
    for eye in (lm[36:42], lm[42:48]):
        width = float(np.linalg.norm(eye[3] - eye[0]))
        opening = float(np.mean([np.linalg.norm(eye[1] - eye[5]), np.linalg.norm(eye[2] - eye[4])]))
        if opening > 1.0:
            _fill(img, eye, (238, 234, 228))
            _draw_iris(img, eye, width, look)
        # Upper lid and lashes, drawn above the lid points so the eye opening ends on them;
        # a closing eye shows a heavier lash line and the skin of the lid above it.
        closure = float(np.clip(1.0 - opening / (0.28 * width), 0.0, 1.0))
        if closure > 0:
            lid_skin = np.concatenate([eye[[0, 1, 2, 3]],
                                       eye[[3, 2, 1, 0]] - fr.ey * 0.3 * width * closure])
            _fill(img, lid_skin, _scale(look.skin, 0.9))
        lash = max(1.5, 0.07 * width * (1.0 + 0.8 * closure))
        _line(img, eye[[0, 1, 2, 3]] - fr.ey * 0.4 * lash * np.array([[0.3], [1], [1], [0.3]]),
              lid, lash)
        _line(img, eye[[3, 4, 5, 0]], _scale(look.skin, 0.6), 1)


def _draw_iris(img, eye, width, look: Appearance) -> None:
    """Iris and pupil in the middle of the eye, clipped to the eye opening."""
    centre = eye.mean(axis=0)
    radius = 0.22 * width

    def paint(layer, origin):
        c = centre - origin
        _ellipse(layer, c, (radius, radius), 0, look.iris)
        _ellipse(layer, c, (0.45 * radius, 0.45 * radius), 0, (15, 12, 12))
        _ellipse(layer, c + radius * np.array([0.3, -0.35]), (0.15 * radius, 0.15 * radius), 0,
                 (250, 250, 250))

    _paint_inside(img, eye, paint)


def _paint_inside(img, polygon: np.ndarray, paint) -> None:
    """Run `paint(layer, origin)` on a copy of the polygon's bounding box and keep what it drew
    only inside the polygon (with an anti-aliased edge): the iris inside the eye, the teeth
    inside the mouth. `origin` is the box's top-left corner, to subtract from coordinates."""
    height, width = img.shape[:2]
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 3, (width, height))
    if x1 <= x0 or y1 <= y0:
        return
    origin = np.array([x0, y0], np.float64)
    roi = img[y0:y1, x0:x1]
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(mask, [_fix(polygon - origin)], 255, cv2.LINE_AA, _SHIFT)
    layer = roi.copy()
    paint(layer, origin)
    cover = (mask.astype(np.float32) / 255.0)[..., None]
    roi[:] = (roi * (1 - cover) + layer * cover + 0.5).astype(np.uint8)


def _draw_nose(img, lm, fr: _Frame, look: Appearance) -> None:
    w = fr.width
    shadow = _scale(look.skin, 0.8)
    # The sides of the bridge, fading from the brows to the wings.
    for side in (-1, 1):
        top = lm[27] * 0.5 + lm[28] * 0.5
        ridge = np.array([top, lm[29], lm[30]]) + side * fr.ex * w * np.array([0.05, 0.06, 0.07])[:, None]
        _line(img, ridge, shadow, 0.018 * w)
    # Underside of the nose (between tip and nostril base), wings and nostrils.
    under = np.concatenate([lm[[31]] - fr.ey * 0.03 * w, lm[31:36], lm[[35]] - fr.ey * 0.03 * w,
                            lm[[30]] + fr.ey * 0.02 * w])
    _fill(img, under, _scale(look.skin, 0.86))
    for outer, inner, side in ((31, 32, -1), (35, 34, 1)):
        wing = np.array([lm[outer] - fr.ey * 0.075 * w + side * fr.ex * 0.01 * w,
                         lm[outer] + side * fr.ex * 0.03 * w - fr.ey * 0.03 * w,
                         lm[outer] + side * fr.ex * 0.012 * w, lm[inner]])
        _line(img, wing, _scale(look.skin, 0.62), 0.018 * w)
        nostril = (lm[outer] + lm[inner]) / 2 - fr.ey * 0.012 * w
        _ellipse(img, nostril, (0.028 * w, 0.014 * w), fr.angle + side * 15, _scale(look.skin, 0.3))
    _ellipse(img, lm[30] - fr.ey * 0.02 * w, (0.03 * w, 0.02 * w), fr.angle, _scale(look.skin, 1.06))


def _draw_mouth(img, lm, fr: _Frame, look: Appearance) -> None:
    w = fr.width
    upper = lm[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]]
    lower = lm[[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]]
    _fill(img, upper, _scale(look.lips, 0.9))
    _fill(img, lower, look.lips)
    cavity = lm[60:68]
    gap = float(np.mean(lm[[67, 66, 65], 1] - lm[[61, 62, 63], 1]))
    if gap > 0.6:
        teeth = (232, 228, 215)

        def paint(layer, origin):
            _fill(layer, cavity - origin, (45, 14, 20))
            # Upper teeth hang from the upper lip; lower teeth show once the jaw is well open.
            band = np.concatenate([lm[60:65], lm[64:59:-1] + fr.ey * min(0.03 * w, 0.45 * gap)])
            _fill(layer, band - origin, teeth)
            if gap > 8:
                low = np.concatenate([lm[[64, 65, 66, 67, 60]],
                                      lm[[60, 67, 66, 65, 64]] - fr.ey * 0.025 * w])
                _fill(layer, low - origin, _scale(teeth, 0.9))

        _paint_inside(img, cavity, paint)
    # The line between the lips, darkest at the corners.
    _line(img, lm[[48, 60, 61, 62, 63, 64, 54]], _scale(look.lips, 0.45), 1)
