"""Reading and writing talking-head videos: H.264 frames + AAC audio in mp4, through PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np


class VideoError(Exception):
    """A video that cannot be read (corrupt, truncated, no video stream)."""


@dataclass
class VideoData:
    frames: np.ndarray  # T x H x W x 3 uint8 RGB
    fps: float
    audio: Optional[np.ndarray]  # float32 mono, or None when the file has no audio stream
    sample_rate: Optional[int]


CODEC_NAMES = {"libx264": "h264", "libmp3lame": "mp3", "mp3float": "mp3", "mp2float": "mp2",
               "libopus": "opus", "libvpx-vp9": "vp9"}  # encoder / decoder name -> the codec's name
ENCODERS = {"h264": "libx264", "mp3": "libmp3lame"}  # codec name -> the encoder PyAV writes it with


def codec_name(name: Optional[str]) -> Optional[str]:
    """The codec's own name for an encoder or decoder name (libx264 -> h264, mp3float -> mp3)."""
    return None if name is None else CODEC_NAMES.get(name, name)


@dataclass(frozen=True)
class Encoding:
    """How a video is encoded: what a protocol's `encode:` pins and what `write_encoded` writes.

    Codecs by their ffmpeg codec names (h264, mpeg4, aac, mp2, ...). `crf` (x264/x265) or
    `bitrate` (bits/s, other codecs) set the quality when writing; neither can be read back from a
    file, so a file matches an encoding when its codecs, pixel format and audio rate do. MPEG audio
    layer II in an mp4 container reads back as mp3 (the two share the mp4 object type)."""

    video_codec: str = "h264"
    pix_fmt: str = "yuv420p"
    crf: Optional[int] = 18
    bitrate: Optional[int] = None
    audio_codec: Optional[str] = "aac"
    sample_rate: Optional[int] = 16000

    KEYS = ("video_codec", "pix_fmt", "crf", "bitrate", "audio_codec", "sample_rate")

    @classmethod
    def from_dict(cls, raw: dict) -> "Encoding":
        unknown = sorted(set(raw) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"encode: unknown key(s) {unknown}; known: {list(cls.KEYS)}")
        enc = cls(**{**{"crf": None if raw.get("bitrate") else 18}, **raw})
        for name in (enc.video_codec, enc.audio_codec):
            if name is not None:
                try:
                    av.codec.Codec(ENCODERS.get(name, name), "w")
                except Exception:
                    raise ValueError(f"encode: no encoder for codec {name!r} in this ffmpeg") from None
        if enc.crf is not None and not (isinstance(enc.crf, int) and 0 <= enc.crf <= 51):
            raise ValueError(f"encode: crf must be an integer 0..51, got {enc.crf!r}")
        if enc.crf is not None and enc.bitrate is not None:
            raise ValueError("encode: give crf or bitrate, not both")
        if enc.bitrate is not None and not (isinstance(enc.bitrate, int) and enc.bitrate > 0):
            raise ValueError(f"encode: bitrate must be a positive integer (bits/s), got {enc.bitrate!r}")
        if enc.sample_rate is not None and not (isinstance(enc.sample_rate, int) and enc.sample_rate > 0):
            raise ValueError(f"encode: sample_rate must be a positive integer, got {enc.sample_rate!r}")
        return enc

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}

    def differences(self, info: "MediaInfo") -> list[str]:
        """What of `info` differs from this encoding (empty: it matches)."""
        out = []
        if codec_name(info.video_codec) != self.video_codec:
            out.append(f"video codec {codec_name(info.video_codec)} (pinned {self.video_codec})")
        if info.pix_fmt != self.pix_fmt:
            out.append(f"pixel format {info.pix_fmt} (pinned {self.pix_fmt})")
        audio = codec_name(info.audio_codec)
        pinned_audio = "mp3" if self.audio_codec == "mp2" and info.format.startswith("mov") else self.audio_codec
        if self.audio_codec is not None and audio != pinned_audio:
            out.append(f"audio codec {audio} (pinned {self.audio_codec})")
        if self.sample_rate is not None and info.audio_codec is not None and info.sample_rate != self.sample_rate:
            out.append(f"audio rate {info.sample_rate} Hz (pinned {self.sample_rate})")
        return out


DEFAULT_ENCODING = Encoding()  # what talkbench writes when nothing is pinned: H.264 CRF 18 + AAC


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: Optional[np.ndarray] = None,
              sample_rate: int = 16000, crf: int = 18) -> Path:
    """Write uint8 T x H x W x 3 RGB frames (and mono float audio in [-1, 1]) as H.264 + AAC."""
    return write_encoded(path, frames, fps, audio, sample_rate,
                         Encoding(crf=crf, sample_rate=None))


def write_encoded(path: Path, frames: np.ndarray, fps: float, audio: Optional[np.ndarray],
                  sample_rate: int, encoding: Encoding) -> Path:
    """Write frames (+ mono audio, resampled to the encoding's rate) in `encoding`; the container
    follows the suffix (.mp4 by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = _even_frames(frames)
    tmp = path.with_name(path.name + ".tmp" + (path.suffix or ".mp4"))
    with av.open(str(tmp), mode="w") as container:
        vcodec = ENCODERS.get(encoding.video_codec, encoding.video_codec)
        vstream = container.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = encoding.pix_fmt
        if encoding.crf is not None and vcodec in ("libx264", "libx265"):
            vstream.options = {"crf": str(encoding.crf), "preset": "veryfast"}
        elif encoding.bitrate is not None:
            vstream.bit_rate = int(encoding.bitrate)
        else:
            vstream.bit_rate = 1_500_000  # the low default bit rate of the old codecs smears faces
        astream = None
        rate = encoding.sample_rate or sample_rate
        if audio is not None and encoding.audio_codec is not None:
            astream = container.add_stream(ENCODERS.get(encoding.audio_codec, encoding.audio_codec), rate=rate)
            astream.layout = "mono"
        _encode_frames(container, vstream, frames)
        if astream is not None:
            _encode_audio(container, astream, _resample(audio, sample_rate, rate), rate)
    tmp.replace(path)
    return path


def _even_frames(frames: np.ndarray) -> np.ndarray:
    """Check uint8 T x H x W x 3 frames and crop them to even sizes (yuv420p needs them)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    return frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]


def _encode_frames(container, stream, frames: np.ndarray) -> None:
    for image in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def read_video(path: Path, sample_rate: Optional[int] = 16000) -> VideoData:
    """Decode every frame (RGB) and the audio (mono float32, resampled to `sample_rate`)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            vstream = container.streams.video[0]
            fps = float(vstream.average_rate or vstream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(vstream)]
        audio, rate = _read_audio(path, sample_rate)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: unreadable video ({exc})") from exc
    if not frames:
        raise VideoError(f"{path}: no decodable frames")
    return VideoData(np.stack(frames), fps, audio, rate)


def _read_audio(path: Path, sample_rate: Optional[int]) -> tuple[Optional[np.ndarray], Optional[int]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, None
        stream = container.streams.audio[0]
        rate = sample_rate or stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio, rate


# -- other containers (real-dataset layouts) and cheap probing -------------------------------------

# How each container of the real datasets is written: (format, video codec, audio codec, audio
# rate or None to keep the input rate, pixel format). The codecs are those the corpora ship in
# (CREMA-D: Flash video with MP3 audio; GRID: MPEG-1 video with MPEG audio layer II in an MPEG
# program stream) that PyAV's bundled ffmpeg can encode. FLV only allows MP3 at 11025/22050/44100 Hz.
CONTAINERS: dict[str, tuple[str, str, str, Optional[int], str]] = {
    ".mp4": ("mp4", "libx264", "aac", None, "yuv420p"),
    ".flv": ("flv", "flv", "libmp3lame", 22050, "yuv420p"),
    ".mpg": ("mpeg", "mpeg1video", "mp2", 32000, "yuv420p"),
}
AUDIO_CONTAINERS: dict[str, tuple[str, str]] = {  # audio-only files: (format, codec)
    ".wav": ("wav", "pcm_s16le"),
    ".m4a": ("ipod", "aac"),
}


def _resample(audio: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    if rate == out_rate:
        return np.asarray(audio, np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, np.float32), rate, out_rate, quality="HQ").astype(np.float32)


def _encode_audio(container, stream, audio: np.ndarray, rate: int) -> None:
    samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)[None, :]
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0  # lets the encoder give its priming packets negative pts -> mp4 edit list
    frame.time_base = Fraction(1, rate)
    for packet in stream.encode(frame):  # PyAV converts the sample format and re-frames for us
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_video(path: Path, frames: np.ndarray, fps: float, audio: Optional[np.ndarray] = None,
                sample_rate: int = 16000) -> Path:
    """Write frames (+ mono audio) in the container its suffix names (.mp4, .flv, .mpg).

    .mp4 goes through `write_mp4` (H.264 + AAC); the others use the codecs in `CONTAINERS`,
    resampling the audio to the rate the format allows.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        raise ValueError(f"{path}: no writer for {suffix!r}; known: {sorted(CONTAINERS)}")
    if suffix == ".mp4":
        return write_mp4(path, frames, fps, audio, sample_rate)
    fmt, vcodec, acodec, arate, pix_fmt = CONTAINERS[suffix]
    frames = _even_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    with av.open(str(tmp), mode="w", format=fmt) as container:
        vstream = container.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = pix_fmt
        vstream.bit_rate = 1_500_000  # the low default bit rate of these old codecs smears faces
        astream = None
        if audio is not None:
            rate = arate or sample_rate
            astream = container.add_stream(acodec, rate=rate)
            astream.layout = "mono"
        _encode_frames(container, vstream, frames)
        if astream is not None:
            _encode_audio(container, astream, _resample(audio, sample_rate, rate), rate)
    tmp.replace(path)
    return path


def write_audio(path: Path, audio: np.ndarray, sample_rate: int = 16000,
                out_rate: Optional[int] = None) -> Path:
    """Write mono audio alone: .wav (16-bit PCM) or .m4a (AAC), at `out_rate` (default: as given)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_CONTAINERS:
        raise ValueError(f"{path}: no audio writer for {suffix!r}; known: {sorted(AUDIO_CONTAINERS)}")
    fmt, codec = AUDIO_CONTAINERS[suffix]
    rate = out_rate or sample_rate
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    with av.open(str(tmp), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        _encode_audio(container, stream, _resample(audio, sample_rate, rate), rate)
    tmp.replace(path)
    return path


def strip_audio(path: Path) -> Path:
    """Rewrite a media file in place without its audio streams (packets copied, nothing re-encoded)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    # The output format follows the suffix (tmp keeps it), e.g. mp4 rather than the demuxer's "mov".
    with av.open(str(path)) as src, av.open(str(tmp), mode="w") as dst:
        if not src.streams.video:
            raise VideoError(f"{path}: no video stream to keep")
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for packet in src.demux(vin):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = vout
            dst.mux(packet)
    tmp.replace(path)
    return path


@dataclass
class MediaInfo:
    """What a container says about itself, read by demuxing packets (no decoding).

    duration: seconds to the end of the last packet of the longest stream; header_duration: the
    duration the container header declares (None if it declares none), so a file cut short
    shows as packets ending well before the declared end.
    """

    path: Path
    format: str
    video_codec: Optional[str]
    audio_codec: Optional[str]
    width: int
    height: int
    fps: float
    sample_rate: Optional[int]
    duration: float
    header_duration: Optional[float]
    video_duration: Optional[float]
    audio_duration: Optional[float]
    video_packets: int
    pix_fmt: Optional[str] = None


def probe(path: Path) -> MediaInfo:
    """Stream metadata and packet-level durations of a media file; VideoError if unreadable.

    Only packets are read (the demuxer walks the file once), so this is far cheaper than decoding
    and still catches a file cut short: its packets end before the header's duration, or (for
    containers whose duration is only estimated, like MPEG-PS) before the separate audio.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            vstreams, astreams = container.streams.video, container.streams.audio
            v = vstreams[0] if vstreams else None
            a = astreams[0] if astreams else None
            ends: dict[int, float] = {}
            video_packets = 0
            for packet in container.demux(*[s for s in (v, a) if s is not None]):
                if packet.pts is None and packet.dts is None:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                end = float((stamp + (packet.duration or 0)) * packet.time_base)
                if not packet.duration and v is not None and packet.stream.index == v.index \
                        and v.average_rate:  # FLV leaves frame durations out: one frame each
                    end += 1.0 / float(v.average_rate)
                key = packet.stream.index
                ends[key] = max(ends.get(key, 0.0), end)
                if v is not None and packet.stream.index == v.index:
                    video_packets += 1
            header = container.duration / av.time_base if container.duration else None
            fmt = container.format.name
            info = MediaInfo(
                path=path, format=fmt,
                video_codec=v.codec_context.name if v is not None else None,
                audio_codec=a.codec_context.name if a is not None else None,
                width=v.codec_context.width if v is not None else 0,
                height=v.codec_context.height if v is not None else 0,
                fps=float(v.average_rate or v.guessed_rate or 0) if v is not None else 0.0,
                sample_rate=a.codec_context.sample_rate if a is not None else None,
                duration=0.0, header_duration=header,
                video_duration=_stream_span(v, ends), audio_duration=_stream_span(a, ends),
                video_packets=video_packets,
                pix_fmt=v.codec_context.pix_fmt if v is not None else None,
            )
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: unreadable container ({exc})") from exc
    spans = [d for d in (info.video_duration, info.audio_duration) if d is not None]
    info.duration = max(spans) if spans else 0.0
    if v is not None and video_packets == 0:
        raise VideoError(f"{path}: the video stream has no packets")
    return info


def _stream_span(stream, ends: dict[int, float]) -> Optional[float]:
    if stream is None or stream.index not in ends:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return max(0.0, ends[stream.index] - start)
