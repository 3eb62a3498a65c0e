"""Protocol files without copies: `extends`, split files, the hash of the resolved protocol, and the
speaker names of every split list (bench/protocol.py's docstring states the rules)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import bench.protocol as bp
from bench.protocol import (ProtocolError, list_protocols, load_protocol, merge_protocols, protocol_path,
                            resolve_protocol_file)

FLAT = """\
id: tiny
version: 1
dataset: {name: mead, options: {views: [front]}}
preprocessing: {fps: 30, resolution: 256, crop: center_square, crop_params: {}, landmark_backend: fan}
split: {rule: explicit, train: [M003, M005], val: [M032], test: [M037, W037]}
windowing: {mode: fixed, seconds: 1.0, hop: 1.0}
metrics: [M-LD, F-LD]
methods: [static]
bootstrap: {samples: 100, seed: 0, confidence: 0.95}
"""
BASE = """\
version: 1
dataset: {name: mead, options: {views: [front]}}
preprocessing: {fps: 25, resolution: 256, crop: center_square, crop_params: {}, landmark_backend: fan}
split: {rule: explicit, file: splits/speakers.yaml}
windowing: {mode: fixed, seconds: 1.0, hop: 1.0}
metrics: [M-LD, F-LD, PSNR]
bootstrap: {samples: 100, seed: 0, confidence: 0.95}
"""
SPEAKERS = """\
# where the list comes from
train: [M003, M005]
val: [M032]
test: [M037, W037]
"""
CHILD = """\
extends: _base
id: tiny
preprocessing: {fps: 30}
metrics: [M-LD, F-LD]
methods: [static]
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def tree(tmp_path):
    return _write(tmp_path, {"flat.yaml": FLAT, "_base.yaml": BASE, "splits/speakers.yaml": SPEAKERS,
                             "child.yaml": CHILD})


def test_extends_and_split_file_hash_like_the_same_content_written_flat(tree):
    flat, child = load_protocol(tree / "flat.yaml"), load_protocol(tree / "child.yaml")
    assert child.raw == flat.raw and child.hash == flat.hash
    assert "extends" not in child.raw and "file" not in child.split
    assert child.split["test"] == ["M037", "W037"] and child.fps == 30


def test_a_change_in_a_base_or_split_file_changes_the_hash(tree):
    before = load_protocol(tree / "child.yaml").hash
    (tree / "_base.yaml").write_text(BASE.replace("confidence: 0.95", "confidence: 0.9"))
    after_base = load_protocol(tree / "child.yaml").hash
    (tree / "splits/speakers.yaml").write_text(SPEAKERS.replace("W037]", "W038]"))
    after_split = load_protocol(tree / "child.yaml").hash
    assert len({before, after_base, after_split}) == 3
    # a comment in a split or base file is not content
    (tree / "splits/speakers.yaml").write_text("# another note\n" + SPEAKERS.replace("W037]", "W038]"))
    assert load_protocol(tree / "child.yaml").hash == after_split


def test_merge_rule():
    base = {"dataset": {"name": "mead", "options": {"views": ["front"]}},
            "split": {"rule": "explicit", "train": ["a"], "val": ["b"], "test": ["c"]},
            "windowing": {"mode": "fixed", "seconds": 1.0, "hop": 1.0},
            "preprocessing": {"fps": 25, "crop_params": {"margin": 0.1, "detect_size": 360}},
            "metrics": ["M-LD", "F-LD"], "methods": ["static"]}
    child = {"dataset": {"name": "cremad", "options": {}}, "split": {"rule": "time", "test_fraction": 0.1},
             "windowing": {"mode": "whole"}, "preprocessing": {"fps": 30, "crop_params": {"margin": 0.2}},
             "metrics": ["LMD"]}
    merged = merge_protocols(base, child)
    # replaced whole: no MEAD option on CREMA-D, no speaker list under a time rule, no stale window
    assert merged["dataset"] == {"name": "cremad", "options": {}}
    assert merged["split"] == {"rule": "time", "test_fraction": 0.1}
    assert merged["windowing"] == {"mode": "whole"}
    # mappings merged key by key at any depth, lists replaced, keys the child leaves out inherited
    assert merged["preprocessing"] == {"fps": 30, "crop_params": {"margin": 0.2, "detect_size": 360}}
    assert merged["metrics"] == ["LMD"] and merged["methods"] == ["static"]
    assert base["preprocessing"]["fps"] == 25  # the inputs are not changed


def test_extends_by_relative_path_and_by_id_in_protocols(tree, monkeypatch):
    _write(tree, {"sub/child.yaml": CHILD.replace("extends: _base", "extends: ../_base.yaml")})
    assert load_protocol(tree / "sub/child.yaml").hash == load_protocol(tree / "flat.yaml").hash
    # an id not next to the file is looked up in protocols/
    monkeypatch.setattr(bp, "PROTOCOL_DIR", tree)
    _write(tree, {"elsewhere/child.yaml": CHILD})
    assert load_protocol(tree / "elsewhere/child.yaml").hash == load_protocol(tree / "flat.yaml").hash
    _write(tree, {"missing.yaml": CHILD.replace("_base", "_nowhere")})
    with pytest.raises(ProtocolError, match="extends: no base '_nowhere'"):
        load_protocol(tree / "missing.yaml")


def test_extends_cycle_names_the_chain(tree):
    _write(tree, {"a.yaml": "extends: b\nid: a\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: a\n",
                  "self.yaml": "extends: self\n"})
    with pytest.raises(ProtocolError) as err:
        load_protocol(tree / "a.yaml")
    assert re.search(r"extends: cycle \S*a\.yaml -> \S*b\.yaml -> \S*c\.yaml -> \S*a\.yaml$", str(err.value))
    with pytest.raises(ProtocolError, match=r"cycle .*self.yaml -> .*self.yaml"):
        load_protocol(tree / "self.yaml")


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t + "bogus: 1\n", "unknown key 'bogus'"),
    (lambda t: t.replace("{fps: 30}", "{fps: 30, colour: 1}"), "preprocessing.colour"),
    (lambda t: t.replace("methods: [static]", "methods: [{name: static, lr: 3}]"), "methods[0].lr"),
])
def test_a_bad_key_in_a_child_names_the_key_and_the_files(tree, edit, needle):
    (tree / "child.yaml").write_text(edit(CHILD))
    with pytest.raises(ProtocolError) as err:
        load_protocol(tree / "child.yaml")
    assert needle in str(err.value)
    assert str(err.value).startswith("child.yaml (extends "), str(err.value)


@pytest.mark.parametrize("split, speakers, needle", [
    ("{rule: explicit, file: splits/speakers.yaml, test: [M037]}", SPEAKERS, "remove split.test"),
    ("{rule: speaker_disjoint, file: splits/speakers.yaml}", SPEAKERS, "only rule 'explicit'"),
    ("{rule: explicit, file: splits/none.yaml}", SPEAKERS, "no split file"),
    ("{rule: explicit, file: splits/speakers.yaml}", SPEAKERS + "tset: [M040]\n", "unknown key 'tset'"),
    ("{rule: explicit, file: splits/speakers.yaml}", "[M003]\n", "a split file is a mapping"),
    ("{rule: explicit, file: splits/speakers.yaml}", SPEAKERS.replace("M005", "M003"), "in both train and"),
])
def test_split_file_errors(tree, split, speakers, needle):
    _write(tree, {"splits/speakers.yaml": speakers,
                  "_base.yaml": BASE.replace("{rule: explicit, file: splits/speakers.yaml}", split)})
    with pytest.raises(ProtocolError, match=re.escape(needle)):
        load_protocol(tree / "child.yaml")


def test_parse_protocol_wants_the_resolved_mapping(tree):
    with pytest.raises(ProtocolError, match="resolved"):
        bp.parse_protocol(yaml.safe_load(CHILD))
    assert bp.parse_protocol(resolve_protocol_file(tree / "child.yaml")).hash == load_protocol(tree / "flat.yaml").hash


def test_invisible_characters_in_a_speaker_id_are_an_error(tree):
    for bad in ("WDA_\ufeffCarolynMaloney", "M\u200b037", "M037 ", ""):
        (tree / "splits/speakers.yaml").write_text(yaml.safe_dump({"train": ["M003"], "test": [bad]}))
        with pytest.raises(ProtocolError, match="invisible or space"):
            load_protocol(tree / "child.yaml")


def test_bases_are_not_listed_or_run(tree, monkeypatch):
    monkeypatch.setattr(bp, "PROTOCOL_DIR", tree)
    assert list_protocols() == ["child", "flat"]
    with pytest.raises(ProtocolError, match="'_base' is a base"):
        protocol_path("_base")


# -- the shipped protocols -------------------------------------------------------------------------

SHIPPED = bp.PROTOCOL_DIR
PRINTABLE_ASCII = re.compile(r"[!-~]+")  # no spaces, no byte-order mark, no zero-width or other non-ASCII


def _speaker_lists(body, where: str):
    """(where, list) for every speaker list in a protocol, base, split or pinned split mapping."""
    if not isinstance(body, dict):
        return
    split = body.get("split") if isinstance(body.get("split"), dict) else {}
    speakers = body.get("speakers") if isinstance(body.get("speakers"), dict) else {}
    for holder, prefix in ((body, ""), (split, "split."), (speakers, "speakers.")):
        for name in bp.SPLITS:
            if isinstance(holder.get(name), list):
                yield f"{where}: {prefix}{name}", holder[name]


def test_every_split_list_name_is_plain_printable_ascii():
    files = sorted(SHIPPED.glob("*.yaml")) + sorted((SHIPPED / "splits").iterdir())
    lists = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        body = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        lists += _speaker_lists(body, path.name)
    lists += [item for pid in list_protocols() for item in _speaker_lists(load_protocol(pid).raw, pid)]
    assert any("splits" not in where and "mead" in where for where, _ in lists)
    assert len(lists) > 20
    bad = [(where, name) for where, names in lists for name in names
           if not (isinstance(name, str) and PRINTABLE_ASCII.fullmatch(name))]
    assert not bad, f"speaker names that are not plain printable ASCII: {bad}"
    assert not PRINTABLE_ASCII.fullmatch("WDA_\ufeffCarolynMaloney")  # the check sees a byte-order mark


def test_package_data_ships_every_protocol_file():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((SHIPPED.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["protocols"]
    files = {p for p in SHIPPED.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts}
    assert any(p.parent.name == "splits" for p in files)
    shipped = {p for pattern in patterns for p in SHIPPED.glob(pattern)}  # setuptools globs them the same way
    unshipped = sorted(p.relative_to(SHIPPED).as_posix() for p in files - shipped)
    assert not unshipped, f"protocols/ files a wheel would leave out: {unshipped}"


def _chain(folder: Path, pid: str) -> list[str]:
    """The files a protocol reads, itself first, following `extends` (shipped files use ids)."""
    names = [f"{pid}.yaml"]
    while "extends" in (raw := yaml.safe_load((folder / names[-1]).read_text())):
        names.append(f"{raw['extends']}.yaml")
    return names


def _split_file_of(folder: Path, pid: str):
    """The split file a protocol uses: named by the nearest file of its chain that states a split."""
    for name in _chain(folder, pid):
        split = yaml.safe_load((folder / name).read_text()).get("split")
        if split is not None:
            return split.get("file")
    return None


def test_a_change_in_a_shipped_base_or_split_file_changes_every_protocol_that_uses_it(tmp_path, monkeypatch):
    folder = Path(shutil.copytree(SHIPPED, tmp_path / "protocols", ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setattr(bp, "PROTOCOL_DIR", folder)
    ids = list_protocols()
    before = {pid: load_protocol(pid).hash for pid in ids}
    assert before == {pid: load_protocol(pid).hash for pid in ids} and len(set(before.values())) == len(ids)
    bases = sorted(p.name for p in folder.glob("_*.yaml"))
    split_files = sorted(f"splits/{p.name}" for p in (folder / "splits").glob("*.yaml"))
    users = {name: {pid for pid in ids if name in _chain(folder, pid)} for name in bases}
    users |= {name: {pid for pid in ids if _split_file_of(folder, pid) == name} for name in split_files}
    assert users["splits/mead.yaml"] == {"kfusion_t1_mead", "kfusion_t2_mead", "spear_t1_mead", "spear_t2_mead",
                                         "spear_t3_mead"}
    assert users["_tcsan.yaml"] == {pid for pid in ids if pid.startswith("tcsan_")}
    assert {"splits/hdtf.yaml", "splits/grid.yaml", "splits/tcdtimit.yaml"} <= set(users)
    for name, expected in users.items():
        assert expected, f"{name} is used by no protocol"
        path = folder / name
        original = path.read_text()
        body = yaml.safe_load(original)
        if name.startswith("splits/"):
            body["test"] = body["test"] + ["ZZ999"]
        else:
            body["bootstrap"] = {**body.get("bootstrap", {}), "seed": 7}
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        changed = {pid for pid in ids if load_protocol(pid).hash != before[pid]}
        path.write_text(original)
        assert changed == expected, name


def test_each_speaker_list_is_stated_once():
    """The MEAD, HDTF, GRID and TCD-TIMIT lists live in protocols/splits; no protocol file copies one."""
    split_lists = {}
    for path in sorted((SHIPPED / "splits").glob("*.yaml")):
        for where, names in _speaker_lists(yaml.safe_load(path.read_text()), f"splits/{path.name}"):
            split_lists[tuple(names)] = where
    assert {w.split(":")[0] for w in split_lists.values()} >= {"splits/mead.yaml", "splits/hdtf.yaml",
                                                              "splits/grid.yaml", "splits/tcdtimit.yaml"}
    copies = [(path.name, where, split_lists[tuple(names)]) for path in sorted(SHIPPED.glob("*.yaml"))
              for where, names in _speaker_lists(yaml.safe_load(path.read_text()), path.name)
              if names and tuple(names) in split_lists]
    assert not copies, f"speaker lists copied from a split file: {copies}"
