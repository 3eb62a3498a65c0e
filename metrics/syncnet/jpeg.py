"""syncnet_python's frame path: every frame through ffmpeg's JPEG encoder and back (issue 17).

joonson's ``SyncNetInstance.evaluate`` does not read the video it is given: it first runs
``ffmpeg -y -i VIDEO -threads 1 -f image2 %06d.jpg`` and ``ffmpeg -y -i VIDEO -async 1 -ac 1 -vn
-acodec pcm_s16le -ar 16000 audio.wav``, then reads the JPEG files with ``cv2.imread`` and the wav
with ``scipy.io.wavfile.read`` (`reference/metrics.md` §1.2). Papers' LSE numbers come through that
path, and the JPEG round trip moves LSE-D by up to ~0.4% on synthtalk (issue 17).

What this module reproduces (`jpeg_roundtrip`):

* the encoder: ffmpeg's ``mjpeg`` encoder from the libavcodec PyAV bundles, with the CLI's
  settings for that command -- no ``-q:v``, so the default rate control at the default 200 kb/s
  (``b``) over the clip's frame rate (the encoder's time base is 1/fps, one context for the whole
  clip, so the quantiser of a frame depends on the frames before it, as in the CLI), one thread
  (``-threads 1``, one slice), pixel format ``yuvj420p`` (the one the CLI picks for JPEG), the RGB
  -> YUV conversion with swscale's bicubic filter (the CLI's default ``sws_flags``). This is *not*
  ``-qscale:v 2``: that setting belongs to ``run_pipeline.py``'s re-encode of the source video, not
  to ``evaluate``;
* the decoder: ``cv2.imdecode(..., IMREAD_COLOR)``, the same libjpeg call as ``cv2.imread`` on the
  written file (BGR uint8);
* the audio: ``-ac 1 -ar 16000 -acodec pcm_s16le`` on 16 kHz mono float audio is swresample's
  float -> s16 conversion (x * 32768 rounded to nearest, clipped), which is what
  `metrics.syncnet.features.audio_to_int16` already does for both frame paths; ``-async 1`` only
  pads or trims the stream's start, a no-op for audio that starts at 0.

What it cannot reproduce: the exact bytes of another ffmpeg build (the encoder's rate control and
swscale differ between versions, so the identity of a round-tripped value records the libavcodec
and OpenCV versions); and the source colour path -- the reference converts the *decoded* stream
(usually limited-range yuv420p H.264) straight to yuvj420p, while talkbench's metrics receive RGB
frames and convert RGB -> yuvj420p, so on a lossy yuv420p source the chroma is resampled once more
(a lossless RGB source gives identical JPEG files; `bench.perf` times it that way). Before
``evaluate``, ``run_pipeline.py`` also re-encodes the video (mpeg4 ``-qscale:v 2``) and writes the
face crops as XVID; those lossy stages are not reproduced.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Iterator

import numpy as np

FRAME_PATHS = ("direct", "jpeg_roundtrip")
PIX_FMT = "yuvj420p"
SWS_INTERPOLATION = "BICUBIC"


def encoder_versions() -> dict:
    """The libraries whose versions decide a round-tripped frame's bytes (for the metric identity)."""
    import av
    import cv2

    return {"libavcodec": ".".join(str(v) for v in av.library_versions.get("libavcodec", ())),
            "libswscale": ".".join(str(v) for v in av.library_versions.get("libswscale", ())),
            "opencv": cv2.__version__}


def jpeg_encoder(width: int, height: int, fps: float):
    """A PyAV ``mjpeg`` encoder set as ``ffmpeg -i VIDEO -threads 1 -f image2 %06d.jpg`` sets it."""
    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = int(width), int(height)
    ctx.pix_fmt = PIX_FMT
    rate = Fraction(fps).limit_denominator(1001)
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.thread_count = 1
    return ctx


def encode_jpegs(frames: Iterable, fps: float) -> Iterator[bytes]:
    """One JPEG file's bytes per frame. `frames`: RGB uint8 H x W x 3 arrays or PyAV VideoFrames
    (a decoded video's frames, converted from their own format as the CLI does)."""
    import av

    ctx = None
    for t, frame in enumerate(frames):
        if not isinstance(frame, av.VideoFrame):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if ctx is None:
            ctx = jpeg_encoder(frame.width, frame.height, fps)
        out = frame.reformat(format=PIX_FMT, interpolation=SWS_INTERPOLATION)
        out.pts, out.time_base = t, ctx.time_base
        for packet in ctx.encode(out):
            yield bytes(packet)
    if ctx is not None:
        for packet in ctx.encode(None):
            yield bytes(packet)


def decode_jpeg(data: bytes) -> np.ndarray:
    """BGR uint8, as ``cv2.imread`` reads the file."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("cv2 could not decode a JPEG frame")
    return image


def jpeg_roundtrip(frames_rgb: np.ndarray, fps: float) -> np.ndarray:
    """T x H x W x 3 RGB uint8 -> the BGR uint8 frames syncnet_python reads after its JPEG step."""
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
        raise ValueError(f"expected T x H x W x 3 uint8 RGB frames, got {frames_rgb.shape} "
                         f"{frames_rgb.dtype}")
    out = np.stack([decode_jpeg(b) for b in encode_jpegs(frames_rgb, fps)])
    if len(out) != len(frames_rgb):
        raise ValueError(f"the JPEG encoder returned {len(out)} frames for {len(frames_rgb)}")
    return out
