"""Real-dataset adapters, fake dataset trees and `talkbench data check` (issue 5).

Every tree here is written by bench.data.fake_trees in the dataset's distributed layout with real
encoded media (synthtalk speech and faces), then read back by the adapter and probed by check.
"""

from __future__ import annotations

import textwrap

import av
import numpy as np
import pytest

from bench.cli import main as cli_main
from bench.data import fake_trees
from bench.data.check import check
from bench.data.sources.grid import alignment_text, decode_utterance
from bench.data.raw import DatasetError, dataset_root, source
from bench.data.video import VideoError, probe

DEFECTS = ("truncated", "no_face", "missing_audio")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One complete tree per dataset, built once for the module."""
    base = tmp_path_factory.mktemp("trees")
    return {name: fake_trees.build_fake_tree(name, base / name) for name in fake_trees.DATASETS}


def write_protocol(path, dataset, split, options=None, windowing="{mode: whole}"):
    opts = f", options: {options}" if options else ""
    path.write_text(textwrap.dedent(f"""\
        id: test_{dataset}
        version: 1
        dataset: {{name: {dataset}{opts}}}
        preprocessing: {{fps: 25, resolution: 128, crop: center_square}}
        split: {split}
        windowing: {windowing}
        metrics: [M-LD]
        """))
    return path


# ----------------------------------------------------------------------------- every dataset

@pytest.mark.parametrize("name", fake_trees.DATASETS)
def test_discover_finds_every_clip_of_the_fake_tree(trees, name):
    tree = trees[name]
    items = source(name)(tree.root, {})
    assert [i.id for i in items] == tree.ids
    assert sorted({i.speaker for i in items}) == sorted(tree.speakers)
    for item in items:
        clip = tree.clip(item.id)
        assert item.speaker == clip.speaker and item.video == clip.video
        assert (item.emotion, item.intensity) == (clip.emotion, clip.intensity)


@pytest.mark.parametrize("name", fake_trees.DATASETS)
def test_wrong_root_and_unknown_option_raise_helpful_errors(trees, tmp_path, name):
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="does not look like .*expected"):
        source(name)(tmp_path, {})
    with pytest.raises(DatasetError, match="unknown option 'speakerz'"):
        source(name)(trees[name].root, {"speakerz": ["x"]})


EXPECTED_CODECS = {  # dataset -> (video suffix, video codec, audio codec in the video)
    "mead": (".mp4", "h264", "aac"), "cremad": (".flv", "flv", "mp3float"),
    "grid": (".mpg", "mpeg1video", "mp2"), "tcdtimit": (".mp4", "h264", "aac"),
    "hdtf": (".mp4", "h264", "aac"), "voxceleb2": (".mp4", "h264", "aac"),
    "person_specific": (".mp4", "h264", "aac"),
}


@pytest.mark.parametrize("name", fake_trees.DATASETS)
def test_fake_tree_files_are_real_media_in_the_right_containers(trees, name):
    suffix, vcodec, acodec = EXPECTED_CODECS[name]
    width, height = fake_trees.FRAME_SIZE[name]
    for item in source(name)(trees[name].root, {}):
        if item.video is None:
            continue
        info = probe(item.video)
        assert item.video.suffix == suffix
        assert (info.video_codec, info.audio_codec) == (vcodec, acodec)
        assert (info.width, info.height) == (width, height) and info.fps == 25
        # 1.2 s clips at 25 fps; person-specific videos are clips_per_speaker (2) times longer
        assert info.video_packets == (60 if name == "person_specific" else 30)
        if item.audio is not None:
            audio = probe(item.audio)
            assert audio.video_codec is None and audio.duration == pytest.approx(1.2, abs=0.05)


def test_separate_audio_codecs(trees):
    mead = source("mead")(trees["mead"].root, {})
    assert {probe(i.audio).audio_codec for i in mead} == {"aac"}  # .m4a
    cremad = source("cremad")(trees["cremad"].root, {})
    assert {(probe(i.audio).audio_codec, probe(i.audio).sample_rate) for i in cremad} == {("pcm_s16le", 16000)}
    with av.open(str(cremad[0].video)) as container:  # CREMA-D's Flash video carries MP3 audio
        assert container.streams.audio[0].codec_context.name in ("mp3", "mp3float")
    grid = source("grid")(trees["grid"].root, {})
    rates = {i.speaker: probe(i.audio).sample_rate for i in grid}
    assert rates == {"s1": 25000, "s2": 50000}  # audio_25k/ and s2_50kHz/ layouts


def test_face_is_centred_in_a_frame_with_the_dataset_aspect(trees):
    item = source("mead")(trees["mead"].root, {})[0]
    with av.open(str(item.video)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert frame.shape == (180, 320, 3)  # 16:9
    background = frame[2, 2]
    changed = np.abs(frame - background).sum(-1) > 40
    cols = np.flatnonzero(changed.any(0))
    assert cols.size and cols.min() >= (320 - 180) // 2 - 2 and cols.max() <= (320 + 180) // 2 + 2


# ----------------------------------------------------------------------------- dataset specifics

def test_mead_names_views_and_filters(trees):
    root = trees["mead"].root
    items = source("mead")(root, {})
    assert items[0].id == "M003_front_angry_3_001"
    assert items[0].meta == {"view": "front", "sentence": "001"}
    assert items[0].audio == root / "M003/audio/angry/level_3/001.m4a"
    both = source("mead")(root, {"views": ["front", "left_30"]})
    assert {i.meta["view"] for i in both} == {"front", "left_30"}
    assert len(both) == len(items) + 2  # the first take of each actor is also filmed from the left
    assert [i.emotion for i in source("mead")(root, {"emotions": ["happy"]})] == ["happy", "happy"]
    assert {i.intensity for i in source("mead")(root, {"levels": [3]})} == {3}
    with pytest.raises(DatasetError, match="'views' has unknown values \\['side'\\]"):
        source("mead")(root, {"views": ["side"]})


def test_cremad_codes_texts_and_levels(trees):
    items = {i.id: i for i in source("cremad")(trees["cremad"].root, {})}
    dfa = items["1001_DFA_ANG_HI"]
    assert (dfa.speaker, dfa.emotion, dfa.intensity, dfa.text) == ("1001", "angry", 3, "Don't forget a jacket")
    assert dfa.meta == {"sentence": "DFA", "level": "HI"}
    neutral = items["1001_IEO_NEU_XX"]
    assert (neutral.emotion, neutral.intensity, neutral.text) == ("neutral", 1, "It's eleven o'clock")
    assert items["1002_TSI_HAP_LO"].intensity == 1
    assert [i.id for i in source("cremad")(trees["cremad"].root, {"levels": ["HI"]})] == ["1001_DFA_ANG_HI"]


def test_grid_texts_from_alignments_or_the_utterance_code(trees, tmp_path):
    assert decode_utterance("bbaf2n") == "bin blue at f two now"
    assert decode_utterance("lwizzs") == "lay white in z zero soon"
    with pytest.raises(DatasetError, match="not a GRID utterance code"):
        decode_utterance("bbaw2n")  # GRID has no letter w
    tree = trees["grid"]
    for item in source("grid")(tree.root, {}):
        code = item.meta["utterance"]
        if item.speaker == "s1":  # alignments/s1/*.align written from the speech's word timings
            align = tree.root / "alignments" / "s1" / f"{code}.align"
            assert item.meta["text_source"] == "alignment"
            assert item.text == alignment_text(align)
            words = align.read_text().split()[2::3]
            assert item.text.split() == [w for w in words if w not in ("sil", "sp")]
            assert decode_utterance(code).startswith(item.text)  # the 1.2 s clip cuts the sentence
        else:
            assert item.meta["text_source"] == "code" and item.text == decode_utterance(code)
            assert item.text == tree.texts[item.id]
    # s21 is in the corpus with audio but no video: reported as such, never invented
    fake_trees.build_fake_tree("grid", tmp_path / "g", speakers=["s20", "s21"], clips_per_speaker=1)
    s21 = [i for i in source("grid")(tmp_path / "g", {}) if i.speaker == "s21"]
    assert len(s21) == 1 and s21[0].video is None and s21[0].meta["video_missing"]


def test_tcdtimit_groups_and_separate_wav(trees):
    root = trees["tcdtimit"].root
    items = {i.id: i for i in source("tcdtimit")(root, {})}
    assert items["01M_sa1"].meta == {"group": "volunteer", "utterance": "sa1"}
    assert items["Lipspkr1_sa2"].meta["group"] == "lipspeaker"
    assert items["01M_sa1"].audio is None  # audio from the video
    assert items["01M_sa2"].audio == root / "volunteers/01M/straightcam/sa2.wav"
    only = source("tcdtimit")(root, {"groups": ["lipspeaker"]})
    assert {i.speaker for i in only} == {"Lipspkr1"}


def test_hdtf_speaker_is_the_person_not_the_video():
    from bench.data.sources.hdtf import speaker_of

    assert speaker_of("WRA", "CoryGardner0") == speaker_of("WRA", "CoryGardner") == "WRA_CoryGardner"
    assert speaker_of("WDA", "WhipJimClyburn") == speaker_of("WDA", "JamesClyburn1") == "WDA_JamesClyburn"
    assert speaker_of("RD", "Radio34") == "RD_Radio34"  # programme numbers are not people


def test_hdtf_voxceleb2_person_specific_names(trees):
    hdtf = {i.id: i for i in source("hdtf")(trees["hdtf"].root, {})}
    assert hdtf["RD_Radio34_001"].speaker == "RD_Radio34"  # found in the clips/ sub-folder
    assert hdtf["WRA_KellyAyotte_000"].meta == {"source": "WRA", "video": "KellyAyotte"}
    assert [i.speaker for i in source("hdtf")(trees["hdtf"].root, {"sources": ["WRA"]})] == ["WRA_KellyAyotte"] * 2
    vox_root = trees["voxceleb2"].root
    vox = source("voxceleb2")(vox_root, {})
    assert vox[0].id == f"id00017_{vox[0].meta['video']}_00001" and vox[0].speaker == "id00017"
    assert [i.id for i in source("voxceleb2")(vox_root / "mp4", {})] == [i.id for i in vox]
    ps_root = trees["person_specific"].root
    assert [(i.id, i.speaker) for i in source("person_specific")(ps_root, {})] == [("may", "may"), ("obama", "obama")]
    listed = source("person_specific")(ps_root, {"person": "obama", "videos": ["obama.mp4", "gone.mp4"]})
    assert [(i.id, i.speaker) for i in listed] == [("gone", "obama"), ("obama", "obama")]


def test_dataset_root_is_explicit_or_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TALKBENCH_DATA_MEAD", raising=False)
    with pytest.raises(DatasetError, match="TALKBENCH_DATA_MEAD"):
        dataset_root("mead")
    monkeypatch.setenv("TALKBENCH_DATA_MEAD", str(tmp_path))
    assert dataset_root("mead") == tmp_path


# ----------------------------------------------------------------------------- defects and check

def test_defects_are_injected_where_the_tree_says(tmp_path):
    tree = fake_trees.build_fake_tree("mead", tmp_path / "mead", defects=DEFECTS)
    assert len(set(tree.affected.values())) == 3
    assert not tree.clip(tree.affected["missing_audio"]).audio.exists()
    with pytest.raises(VideoError, match="unreadable container"):
        probe(tree.clip(tree.affected["truncated"]).video)
    no_face = tree.clip(tree.affected["no_face"]).video
    with av.open(str(no_face)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.std(axis=(1, 2)).max() < 3  # background only
    # where the audio lives in the video, missing_audio removes the stream
    hdtf = fake_trees.build_fake_tree("hdtf", tmp_path / "hdtf", defects=("missing_audio",))
    assert probe(hdtf.clip(hdtf.affected["missing_audio"]).video).audio_codec is None


def test_check_passes_a_complete_tree(trees, tmp_path, capsys):
    proto = write_protocol(tmp_path / "p.yaml", "mead", "{rule: explicit, train: [M003], test: [W009]}",
                           windowing="{mode: fixed, seconds: 1.0}")
    report = check(proto, trees["mead"].root)
    assert report.ok and report.clips_per_speaker == {"M003": 2, "W009": 2}
    assert len(report.items) == 4 and all(c.duration == pytest.approx(1.2) for c in report.items)
    code = cli_main(["data", "check", str(proto), "--root", str(trees["mead"].root)])
    out = capsys.readouterr().out
    assert code == 0 and "OK: everything the protocol expects is present" in out


@pytest.mark.parametrize("name", ["mead", "cremad", "grid"])
def test_check_reports_missing_audio_truncated_video_and_missing_speaker(tmp_path, capsys, name):
    tree = fake_trees.build_fake_tree(name, tmp_path / name, defects=DEFECTS)
    train, test = tree.speakers
    proto = write_protocol(tmp_path / "p.yaml", name,
                           f"{{rule: explicit, train: ['{train}'], test: ['{test}', 'ghost']}}")
    report = check(proto, tree.root)
    text = "\n".join(report.problems)
    assert f"missing audio file: {tree.affected['missing_audio']}" in text
    assert f"{tree.affected['truncated']}" in text
    assert "missing speaker: ghost (test split)" in text
    assert len(report.problems) == 3  # the no-face clip is a problem for prepare, not for check
    code = cli_main(["data", "check", str(proto), "--root", str(tree.root)])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED: 3 problem(s)" in out and "missing: ghost" in out


def test_check_counts_time_split_window_and_unassigned_speakers(trees, tmp_path):
    ps = write_protocol(tmp_path / "ps.yaml", "person_specific", "{rule: time, test_seconds: 1.0}",
                        options="{person: obama, videos: [obama.mp4]}")
    report = check(ps, trees["person_specific"].root)
    assert report.ok and "obama (obama): 2.40 s -> train 1.40 s, test 1.00 s" in report.split_lines
    windowed = write_protocol(tmp_path / "ps3.yaml", "person_specific", "{rule: time, test_seconds: 1.0}",
                              options="{person: obama, videos: [obama.mp4]}",
                              windowing="{mode: fixed, seconds: 0.4, parts: [test]}")
    report = check(windowed, trees["person_specific"].root)
    assert report.ok and ("obama (obama): 2.40 s -> train 1.40 s, test 1.00 s (2 windows of 0.4 s)"
                          in report.split_lines)
    wide = write_protocol(tmp_path / "ps4.yaml", "person_specific", "{rule: time, test_seconds: 1.0}",
                          options="{person: obama, videos: [obama.mp4]}",
                          windowing="{mode: fixed, seconds: 1.5, parts: [test]}")
    report = check(wide, trees["person_specific"].root)
    assert report.ok and any("obama's test part lasts 1.00 s, a window 1.5 s" in n and "N = 1" in n
                             for n in report.notes)
    too_long = write_protocol(tmp_path / "ps2.yaml", "person_specific", "{rule: time, test_seconds: 3.0}")
    assert any("too short for the time split" in p for p in check(too_long, trees["person_specific"].root).problems)
    counts = write_protocol(tmp_path / "vox.yaml", "voxceleb2",
                            "{rule: speaker_disjoint, counts: {train: 2, test: 1}, seed: 0}")
    assert check(counts, trees["voxceleb2"].root).problems == ["too few speakers: the split needs 3, found 2"]
    window = write_protocol(tmp_path / "hdtf.yaml", "hdtf", "{rule: explicit, train: [], test: [RD_Radio34]}",
                            windowing="{mode: fixed, seconds: 2.0}")
    report = check(window, trees["hdtf"].root)
    assert report.ok and report.unassigned == ["WRA_KellyAyotte"]
    assert sum("shorter than the 2 s window" in n for n in report.notes) == 2


def test_check_refuses_synthtalk_and_a_wrong_root(trees, tmp_path, capsys):
    with pytest.raises(DatasetError, match="real datasets"):
        check("synthtalk", tmp_path)
    proto = write_protocol(tmp_path / "p.yaml", "cremad", "{rule: explicit, train: [], test: ['1001']}")
    assert cli_main(["data", "check", str(proto), "--root", str(trees["mead"].root)]) == 1
    assert "does not look like CREMA-D" in capsys.readouterr().err
