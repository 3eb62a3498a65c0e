"""CSIM-ArcFace against insightface's own ArcFace path, on a random ArcFace-shaped ONNX model.

Reference: ``insightface.model_zoo.arcface_onnx.ArcFaceONNX(model_file).get(bgr_image, face)`` with
``face.kps`` the five points talkbench derives from dlib's 68 landmarks (its ``face_align.norm_crop``
alignment and ``cv2.dnn.blobFromImages`` normalisation), on an ONNX model written at test time with
insightface's interface (input N x 3 x 112 x 112, one 512-d output). talkbench's metric loads the
same file through ``core.weights.resolve`` and runs it with onnxruntime alone.

Measured (insightface 2.1, onnxruntime 1.32, two synthtalk speakers): aligned crops identical,
embeddings and the cosine identical (0 difference). With a random network only agreement is
meaningful; no identity-direction test is made.
"""

import zipfile

import numpy as np
import pytest

from bench.calibrate import insightface_embedding, random_arcface_onnx, synthtalk_faces
from core import weights
from core.errors import MetricError, MetricUnavailable
from core.types import ClipPair
from faces.extractors import DlibExtractor
from metrics import build_metric
from metrics.arcface import ARCFACE_TEMPLATE, align_face, alignment_matrix, five_points

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx"
    random_arcface_onnx(path)
    return path


@pytest.fixture(scope="module")
def metric(onnx_file):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_WEIGHTS_ARCFACE_W600K_R50", str(onnx_file))
        return build_metric("CSIM-ArcFace")


@pytest.fixture(scope="module")
def faces():
    return np.stack(synthtalk_faces((1, 2)))


def test_parity_with_insightface(metric, onnx_file, faces):
    pytest.importorskip("insightface")
    found = DlibExtractor().detect(faces)
    assert found.found.all()
    expected = []
    for frame, lm in zip(faces, found.landmarks):
        emb, crop = insightface_embedding(onnx_file, frame, five_points(lm))
        assert np.array_equal(crop, align_face(frame, five_points(lm)))
        expected.append(emb)
    _, ours = metric.embeddings(faces)
    np.testing.assert_allclose(ours, np.stack(expected), rtol=0, atol=1e-5 * np.abs(expected).max())
    cos = np.dot(expected[0], expected[1]) / np.linalg.norm(expected[0]) / np.linalg.norm(expected[1])
    value = metric.clip_value(ClipPair("c", {"frames": faces[1:]}, {"frames": faces[:1]}))
    assert value == pytest.approx(cos, rel=1e-5)
    assert value < 0.9999  # two speakers: not the trivial 1


def test_same_frame_is_one_and_faceless_frames_skipped(metric, faces):
    ref = faces[:1]
    blank = np.full_like(ref, 128)
    pair = ClipPair("clip3", {"frames": np.concatenate([ref, blank, ref])}, {"frames": ref})
    assert metric.clip_value(pair) == pytest.approx(1.0, abs=1e-6)
    assert metric.notes["clip3"] == "1 of 3 frame(s) without a face skipped"
    with pytest.raises(MetricError, match="reference identity frame"):
        metric.clip_value(ClipPair("c", {"frames": ref}, {"frames": blank}))
    with pytest.raises(MetricError, match="no face found in any"):
        metric.clip_value(ClipPair("c", {"frames": blank}, {"frames": ref}))


def test_five_points_and_template():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_array_equal(five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    # points already on the template: the identity transform
    np.testing.assert_allclose(alignment_matrix(ARCFACE_TEMPLATE), [[1, 0, 0], [0, 1, 0]], atol=1e-4)
    np.testing.assert_allclose(alignment_matrix(ARCFACE_TEMPLATE * 2), [[0.5, 0, 0], [0, 0.5, 0]],
                               atol=1e-4)


def test_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("TALKBENCH_WEIGHTS_ARCFACE_W600K_R50", raising=False)
    with pytest.raises(MetricUnavailable, match="talkbench weights download arcface_w600k_r50"):
        build_metric("CSIM-ArcFace")
    bad = tmp_path / "w600k_r50.onnx"
    bad.write_bytes(b"<html>not a model</html>")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_ARCFACE_W600K_R50", str(bad))
    with pytest.raises(MetricUnavailable, match="not a loadable ONNX model"):
        build_metric("CSIM-ArcFace")


def test_download_extracts_the_archive_member(tmp_path, monkeypatch, onnx_file):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path / "home"))
    archive = tmp_path / "buffalo_l.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(onnx_file, "w600k_r50.onnx")
        zf.writestr("det_10g.onnx", b"detector")
    dest = weights.download("arcface_w600k_r50", url=archive.as_uri())
    assert dest.read_bytes() == onnx_file.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]  # no .part or .member left
    with pytest.raises(weights.WeightsError, match="not a zip archive holding"):
        weights.download("arcface_w600k_r50", url=onnx_file.as_uri(), force=True)
    assert dest.read_bytes() == onnx_file.read_bytes()  # the good file was kept
