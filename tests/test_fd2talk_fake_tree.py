"""FD2Talk on real-video data: the fake HDTF and VoxCeleb2 trees, prepared with the paper protocol's recipe (dlib
and pnp in place of FAN / Hopenet, as in test_fake_tree_runs), run end to end with the built-in
landmark-PCA motion backend (prepared real clips carry no expression coefficients)."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.data.clips import load_splits
from bench.data.fake_trees import build_fake_tree
from bench.protocol import load_protocol
from bench.runner import run

SMALL = dict(image_size=32, motion_steps=20, expert_steps=20, vae_steps=10, decoder_steps=10, unet_steps=20,
             unet_batch=8, image_batch=8, motion_batch=8, ddim_steps_motion=3, ddim_steps_frames=2,
             fe_hidden=16, fe_num_layers=1, fe_conv_dim=8, d_model=32, ff=64, layers=1)


CASES = {"hdtf": ("fd2talk_t1_hdtf", ["WRA_KellyAyotte", "RD_Radio34", "WDA_BarackObama"]),
         "voxceleb2": ("fd2talk_t1_voxceleb", ["id00017", "id00061", "id00081"])}


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_fake_tree_runs_fd2talk_with_the_builtin_motion_backend(dataset, tmp_path):
    protocol_id, speakers = CASES[dataset]
    tree = build_fake_tree(dataset, tmp_path / "root", speakers=speakers, clips_per_speaker=2, seconds=1.2)
    raw = load_protocol(protocol_id).raw
    raw["id"] = f"fake_{dataset}_fd2talk"
    raw["preprocessing"].update(landmark_backend="dlib", landmark_params={}, pose_backend="pnp")
    raw["preprocessing"]["crop_params"] = {**raw["preprocessing"].get("crop_params", {}), "detect_size": 360}
    raw["metrics"] = ["M-LD", {"name": "PSNR", "params": {"data_range": 255}}]
    raw["methods"] = [{"name": "fd2talk", "config": SMALL}]
    raw["reference_results"] = []
    raw["split"] = {"rule": "explicit", "train": speakers[:2], "val": [], "test": speakers[2:]}
    path = tmp_path / f"fake_{dataset}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    protocol = load_protocol(path)
    splits = load_splits(protocol, progress=False, root=tree.root)
    assert all(c.motion is None and c.pose is not None for c in splits["train"])  # real video: no coefficients

    out = run(str(path), device="cpu", out_root=tmp_path / "results", progress=False, data_root=tree.root)
    result = json.loads((out / "fd2talk.json").read_text())
    assert result["clips"] == len(splits["test"]) > 0
    assert result["metrics"]["PSNR"]["n"] == len(splits["test"])
