"""`talkbench data check PROTOCOL --root PATH`: is a real dataset ready for a protocol?

Runs before anything heavy: it discovers the dataset with the protocol's adapter options, then
compares what it found with what the protocol expects — the speakers of each split (explicit
lists; counts for a seeded speaker-disjoint rule, or its pinned expansion if one exists; the
videos for the person-specific time split, with the test part's windows; the clip counts of a
clip-level random split), clips per speaker, separate audio files that are missing, containers that
cannot be read or that end early, item durations against the fixed windowing window, non-square
videos that crop `none` would stretch, and speakers found but in no split. Media are only probed
(container header and packet timestamps through PyAV, `bench.data.video.probe`), never decoded.

Exit status (cli_check): 0 when everything the protocol expects is present and readable, 1
otherwise. Problems of items whose speaker no split uses are listed but do not fail the check.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from faces.crops import crop_params, stretch_problem
from bench.data.raw import DatasetError, RawItem, dataset_root, source
from bench.protocol import SPLITS, Protocol, ProtocolError, load_protocol, split_clips_random, split_file
from bench.data.video import MediaInfo, VideoError, probe

# A video that ends this much before its header's duration or its separate audio is cut short.
TRUNCATION_TOLERANCE_S = 0.25
TRUNCATION_TOLERANCE_FRACTION = 0.10


@dataclass
class ItemCheck:
    """What probing one item found: its duration and its problems (each a readable sentence)."""

    item: RawItem
    duration: Optional[float] = None
    video: Optional[MediaInfo] = None
    audio: Optional[MediaInfo] = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail)


@dataclass
class CheckReport:
    protocol: str
    dataset: str
    root: Path
    options: dict
    rule: str
    items: list[ItemCheck]
    split_expected: dict[str, list[str]]  # split -> speakers (explicit or pinned)
    split_counts: dict[str, int]  # speaker_disjoint: split -> count needed
    split_lines: list[str]  # per-split summary lines
    problems: list[str]  # each makes the check fail
    notes: list[str]  # reported, not failing (short items, speakers in no split, ...)
    unassigned: list[str]  # speakers found but in no split

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def clips_per_speaker(self) -> dict[str, int]:
        return dict(sorted(Counter(c.item.speaker for c in self.items).items()))

    def format(self) -> str:
        lines = [f"talkbench data check: protocol {self.protocol} (dataset {self.dataset})",
                 f"root: {self.root}",
                 f"adapter options: {json.dumps(self.options, sort_keys=True) if self.options else 'defaults'}",
                 f"found {len(self.items)} items of {len(self.clips_per_speaker)} speakers", "",
                 f"split (rule {self.rule}):", *[f"  {line}" for line in self.split_lines], "",
                 "clips per speaker:"]
        where = {s: name for name, speakers in self.split_expected.items() for s in speakers}
        for spk, n in self.clips_per_speaker.items():
            tag = where.get(spk) or ("in no split" if self.rule == "explicit" else "")
            lines.append(f"  {spk:<24} {n:>5}  {tag}".rstrip())
        durations = [c.duration for c in self.items if c.duration is not None]
        if durations:
            lines += ["", f"durations: {len(durations)} readable, total {sum(durations):.1f} s, "
                          f"min {min(durations):.2f} s, median {statistics.median(durations):.2f} s, "
                          f"max {max(durations):.2f} s"]
        if self.notes:
            lines += ["", f"notes ({len(self.notes)}):", *[f"  {n}" for n in self.notes]]
        if self.problems:
            lines += ["", f"PROBLEMS ({len(self.problems)}):", *[f"  {p}" for p in self.problems]]
        lines += ["", "OK: everything the protocol expects is present" if self.ok else
                  f"FAILED: {len(self.problems)} problem(s)"]
        return "\n".join(lines)


def check(protocol: Protocol | str | Path, root: Optional[str | Path] = None,
          workers: int = 1) -> CheckReport:
    """Check the dataset under `root` (default $TALKBENCH_DATA_<NAME>) against `protocol`."""
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    if protocol.dataset == "synthtalk":
        raise DatasetError("data check is for the real datasets; synthtalk is built by "
                           "`talkbench data synthtalk` and needs no check")
    root = dataset_root(protocol.dataset, root)
    items = source(protocol.dataset)(root, dict(protocol.dataset_options))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        checks = list(pool.map(_check_item, items))

    rule = protocol.split["rule"]
    found = Counter(item.speaker for item in items)
    expected, counts = _expected_split(protocol)
    split_lines, problems, notes = [], [], []
    used: set[str] = set()
    if expected:
        for name in SPLITS:
            want = expected.get(name, [])
            if not want:
                continue
            have = [s for s in want if s in found]
            missing = [s for s in want if s not in found]
            used.update(want)
            split_lines.append(f"{name}: {len(want)} speakers expected, {len(have)} found"
                               + (f", missing: {', '.join(missing)}" if missing else ""))
            for spk in missing:
                problems.append(f"missing speaker: {spk} ({name} split) has no item under {root}")
    elif rule == "speaker_disjoint":
        need = sum(counts.values())
        usable = {c.item.speaker for c in checks if not c.problems}
        used.update(found)
        split_lines.append(f"speaker_disjoint (seed {protocol.split['seed']}): "
                           + ", ".join(f"{n} {counts.get(n, 0)}" for n in SPLITS)
                           + f" = {need} speakers needed, {len(found)} found "
                             f"({len(usable)} with every item readable)")
        if len(found) < need:
            problems.append(f"too few speakers: the split needs {need}, found {len(found)}")
    elif rule == "clip_random":  # clips, not speakers, are split: every speaker is in every part
        used.update(found)
        parts = split_clips_random([c.item.id for c in checks], protocol.split) if checks else {}
        split_lines.append(f"clip_random (seed {protocol.split['seed']}): "
                           + ", ".join(f"{n} {len(parts.get(n, []))}" for n in SPLITS)
                           + f" of the {len(checks)} items found (drawn again over the items that prepare)")
    else:  # time: every video of the person is cut into train / test by time
        used.update(found)
        split_lines += _time_split_lines(protocol, checks, problems, notes)

    unassigned = sorted(set(found) - used)
    if unassigned:
        notes.append(f"speakers found but in no split ({len(unassigned)}): {', '.join(unassigned)}")
    window = protocol.windowing.get("seconds") if protocol.windowing["mode"] == "fixed" else None
    if rule == "time":  # the time split's own lines check the windowed parts
        window = None
    crop = protocol.preprocessing["crop"]
    params = crop_params(crop, protocol.preprocessing.get("crop_params"))
    for c in checks:
        outside = c.item.speaker in unassigned
        stretched = c.video and stretch_problem(crop, params, c.video.width, c.video.height)
        if stretched:
            c.problems.append(("non-square video", stretched))
        for kind, detail in c.problems:
            line = f"{kind}: {c.item.id}: {detail}"
            (notes if outside else problems).append(line + (" (speaker in no split)" if outside else ""))
        if window and c.duration is not None and c.duration < window and not outside:
            notes.append(f"shorter than the {window:g} s window: {c.item.id} ({c.duration:.2f} s) "
                         "gives no window")
    return CheckReport(protocol.id, protocol.dataset, root, dict(protocol.dataset_options), rule,
                       checks, expected, counts, split_lines, problems, notes, unassigned)


def _expected_split(protocol: Protocol) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Explicit speaker lists (or a pinned expansion of a seeded rule), else the counts."""
    rule = protocol.split["rule"]
    if rule == "explicit":
        return {n: list(protocol.split.get(n, [])) for n in SPLITS}, {}
    if rule == "speaker_disjoint":
        pinned = split_file(protocol)  # only read: check never pins a split
        if pinned.exists():
            body = json.loads(pinned.read_text())
            if body.get("rule") == protocol.split:
                return {n: list(body["speakers"].get(n, [])) for n in SPLITS}, {}
        return {}, dict(protocol.split["counts"])
    return {}, {}


def _time_split_lines(protocol: Protocol, checks: list[ItemCheck], problems: list[str],
                      notes: list[str]) -> list[str]:
    split = protocol.split
    val = float(split.get("val_seconds", 0.0))
    win = protocol.windowing
    windowed = win.get("parts", []) if win["mode"] == "fixed" else []
    lines = []
    for c in checks:
        if c.duration is None:
            lines.append(f"{c.item.id}: unreadable, no split")
            continue
        test = split["test_seconds"] if "test_seconds" in split else c.duration * split["test_fraction"]
        train = c.duration - test - val
        parts = {"train": max(train, 0.0), "val": val, "test": test}
        shown = []
        for name, seconds in parts.items():
            if name == "val" and not seconds:
                continue
            text = f"{name} {seconds:.2f} s" if name != "val" else f"val {seconds:g} s"
            if name in windowed:
                count = int((seconds - win["seconds"]) // win["hop"]) + 1 if seconds >= win["seconds"] else 0
                text += f" ({count} windows of {win['seconds']:g} s)"
                if count == 0 and seconds > 0:
                    notes.append(f"shorter than one window: {c.item.id}'s {name} part lasts "
                                 f"{seconds:.2f} s, a window {win['seconds']:g} s; it is scored "
                                 f"as one whole clip (N = 1)")
            shown.append(text)
        lines.append(f"{c.item.id} ({c.item.speaker}): {c.duration:.2f} s -> " + ", ".join(shown))
        if train <= 0:
            problems.append(f"too short for the time split: {c.item.id} lasts {c.duration:.2f} s, "
                            f"the protocol holds out {test + val:.2f} s")
    if not checks:
        lines.append("no video found")
    return lines


def _check_item(item: RawItem) -> ItemCheck:
    out = ItemCheck(item)
    if item.video is None:
        out.problems.append(("no video", "the dataset has audio but no video for it"))
    else:
        try:
            out.video = probe(item.video)
        except VideoError as exc:
            kind = "missing video" if not Path(item.video).exists() else "unreadable"
            out.problems.append((kind, str(exc)))
    if item.audio is not None:
        if not Path(item.audio).is_file():
            out.problems.append(("missing audio file", str(item.audio)))
        else:
            try:
                out.audio = probe(item.audio)
            except VideoError as exc:
                out.problems.append(("unreadable audio", str(exc)))
    elif out.video is not None and out.video.audio_codec is None:
        out.problems.append(("no audio", f"{item.video} has no audio stream and no separate audio file"))
    if out.video is not None:
        if out.video.video_codec is None:
            out.problems.append(("no video stream", str(item.video)))
        else:
            out.duration = out.video.video_duration
            cut = _truncation(out.video, out.audio)
            if cut:
                out.problems.append(("truncated", f"{item.video}: {cut}"))
    elif out.audio is not None:
        out.duration = out.audio.duration
    if out.duration is not None and (item.start is not None or item.end is not None):
        end = item.end if item.end is not None else out.duration
        out.duration = max(0.0, (end or 0.0) - (item.start or 0.0))
    return out


def _truncation(video: MediaInfo, audio: Optional[MediaInfo]) -> Optional[str]:
    """Why the video looks cut short, or None: its packets end well before the duration its
    header declares or, for containers whose header only estimates it (MPEG-PS), before its
    separate audio file ends."""
    have = video.video_duration or 0.0
    for what, length in (("its header declares", video.header_duration),
                         ("its separate audio lasts", audio.duration if audio else None)):
        if length and have < length - max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * length):
            return f"video packets end at {have:.2f} s but {what} {length:.2f} s"
    return None


def cli_check(args) -> int:
    """Entry point of `talkbench data check`: print the report, 0 if all present, else 1."""
    try:
        report = check(args.protocol, args.root, getattr(args, "workers", 1) or 1)
    except (DatasetError, ProtocolError) as exc:
        print(f"talkbench data check: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.ok else 1
