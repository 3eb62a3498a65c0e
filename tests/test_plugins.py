"""A method and a metric from another installed distribution, found through entry points.

The distribution is written at test time as it would be installed: a package plus a
``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` on ``sys.path``. talkbench is not
edited; `talkbench run` then trains nothing, predicts with the plug-in method and scores it with the
plug-in metric beside a built-in one.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from bench.cli import main
from bench.protocol import ProtocolError, load_protocol, parse_protocol

PACKAGE = "tbplugin_demo"

METHODS_SRC = '''
"""A plug-in method: the identity landmarks with the jaw opened in proportion to audio energy."""
import numpy as np

from baselines import Method, Prediction, register
from core.audio import frame_rms


@register
class JawByEnergy(Method):
    name = "plugin_jaw_energy"
    description = "plug-in test method"
    inputs = frozenset({"audio", "identity_landmarks"})
    outputs = frozenset({"landmarks"})

    def predict(self, inp):
        rms = frame_rms(inp.audio, inp.sample_rate, inp.fps, inp.num_frames)
        lmk = np.repeat(inp.identity_landmarks[None], inp.num_frames, axis=0).astype(np.float32)
        lmk[:, 6:11, 1] += (20.0 * rms / (rms.max() + 1e-9))[:, None]  # chin down when loud
        return Prediction(inp.clip_id, landmarks=lmk)
'''

METRICS_SRC = '''
"""A plug-in metric: the mean vertical span of the jaw (points 6-10 to 27), in pixels."""
import numpy as np

from metrics import Metric, MetricError


class JawSpan(Metric):
    name = "PluginJawSpan"
    higher_is_better = True
    needs = ("landmarks",)

    def clip_value(self, pair):
        pos = {p: i for i, p in enumerate(pair.points)}
        if 8 not in pos or 27 not in pos:
            raise MetricError("needs points 8 and 27")
        lmk = np.asarray(pair.pred["landmarks"], dtype=np.float64)
        return float(np.mean(lmk[:, pos[8], 1] - lmk[:, pos[27], 1]))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    pkg = site / PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "methods.py").write_text(METHODS_SRC)
    (pkg / "metrics.py").write_text(METRICS_SRC)
    info = site / f"{PACKAGE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1\n")
    # a module entry point (its decorators register) and a class entry point (registered by talkbench)
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [talkbench.methods]
        jaw = {PACKAGE}.methods

        [talkbench.metrics]
        jawspan = {PACKAGE}.metrics:JawSpan
        """))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_installed_plugin_adds_a_method_and_a_metric_to_a_run(plugin, tmp_path, capsys):
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-plugin"
    raw["dataset"]["options"] = {"size": 2, "seed": 0}
    raw["metrics"] = [{"name": "M-LD"}, {"name": "PluginJawSpan", "label": "Jaw span"}]
    raw["methods"] = ["static", "plugin_jaw_energy"]
    path = tmp_path / "synthtalk-plugin.yaml"
    path.write_text(yaml.safe_dump(raw))

    out_root = tmp_path / "results"
    assert main(["run", str(path), "--methods", "plugin_jaw_energy,static", "--results", str(out_root), "--quiet"]) == 0
    result = json.loads((out_root / "synthtalk-plugin" / "plugin_jaw_energy.json").read_text())
    static = json.loads((out_root / "synthtalk-plugin" / "static.json").read_text())
    assert result["clips"] == 6 and not result["prediction_failures"]
    jaw, jaw_static = result["metrics"]["Jaw span"], static["metrics"]["Jaw span"]
    assert jaw["n"] == 6 and jaw["failures"] == 0
    # the plug-in method opens the jaw, so its span exceeds the still face's
    assert jaw["value"] > jaw_static["value"] + 1.0
    assert result["metrics"]["M-LD"]["n"] == 6

    from baselines import METHODS
    from metrics import METRICS

    assert METHODS.origin("plugin_jaw_energy") == f"{PACKAGE}.methods"
    assert METRICS.origin("PluginJawSpan") == f"{PACKAGE}.metrics"


def test_an_unknown_name_lists_the_known_ones_and_a_close_match():
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["metrics"] = [{"name": "M-LDD"}]
    with pytest.raises(ProtocolError, match=r"unknown metric 'M-LDD'.*did you mean 'M-LD'"):
        parse_protocol(raw)
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["methods"] = ["kfusionn"]
    with pytest.raises(ProtocolError, match=r"methods\[0\]: unknown method 'kfusionn'.*'kfusion'"):
        parse_protocol(raw)
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["preprocessing"]["landmark_backend"] = "openface"
    with pytest.raises(ProtocolError, match=r"unknown landmark backend 'openface'.*'dlib'"):
        parse_protocol(raw)


def test_a_broken_plugin_is_reported_not_dropped(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "tbbroken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbbroken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[talkbench.metrics]\nbroken = tbbroken_missing.module\n")
    monkeypatch.syspath_prepend(str(site))
    from metrics import METRICS

    with pytest.raises(KeyError, match=r"plug-ins that failed to load: broken \(tbbroken_missing"):
        METRICS.get("NoSuchMetric")
    METRICS.plugin_errors.pop("broken", None)
