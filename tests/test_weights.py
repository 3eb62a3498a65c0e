"""The weight-file registry: entries, path resolution, download, verification and the CLI.

Downloads are exercised against local sources only: ``file://`` URLs and an ``http.server`` bound to
127.0.0.1 that a fixture starts and shuts down (requests time out after a few seconds).
"""

import argparse
import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest

from bench import weights_cli
from core import weights
from core.weights import WeightSpec, WeightsError
from core.errors import MetricUnavailable

HEX = re.compile(r"[0-9a-f]*")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private TALKBENCH_HOME and no TALKBENCH_WEIGHTS_* overrides."""
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path / "home"))
    for spec in weights.list_specs():
        monkeypatch.delenv(spec.env_var, raising=False)
    return tmp_path / "home"


def payload(n=3 * weights.CHUNK + 12345, seed=1):
    """Bytes spanning several download chunks, and their sha256."""
    data = hashlib.shake_256(str(seed).encode()).digest(n)
    return data, hashlib.sha256(data).hexdigest()


def add_spec(monkeypatch, **kw) -> WeightSpec:
    fields = dict(name="testnet", filename="testnet-v1.bin", url="file:///nonexistent",
                  sha256=None, size=None, licence="test", used_by=("TEST",))
    fields.update(kw)
    spec = WeightSpec(**fields)
    monkeypatch.setitem(weights.SPECS, spec.name, spec)
    return spec


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*")) if folder.exists() else []


# -- registry --------------------------------------------------------------------------------------
def test_registry_entries_are_well_formed():
    specs = weights.list_specs()
    assert [s.name for s in specs] == list(weights.SPECS)
    assert {"alexnet", "pt_inception", "syncnet_v2", "s3fd"} <= set(weights.SPECS)
    for spec in specs:
        assert weights.SPECS[spec.name] is spec
        assert re.fullmatch(r"[a-z0-9_]+", spec.name)
        assert spec.url.startswith("https://")
        # a URL names its file, except Google Drive's, which names a file id, and a Hugging Face
        # repository's, whose file has the generic diffusers name (stored under the repo's name),
        # and a zip archive's, whose member is the file
        assert spec.url.rsplit("/", 1)[1] == spec.filename or (
            spec.url.startswith("https://drive.google.com/") and "Google Drive" in spec.note) or (
            spec.url.startswith("https://huggingface.co/")
            and spec.url.split("/")[4] in spec.filename) or (
            spec.url.endswith(".zip") and spec.archive_member.rsplit("/", 1)[-1] == spec.filename)
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert HEX.fullmatch(spec.sha256_prefix) and HEX.fullmatch(spec.sha256_suffix)
        assert spec.size is None or (isinstance(spec.size, int) and spec.size > 0)
        assert spec.licence and spec.used_by and all(isinstance(u, str) for u in spec.used_by)
        if spec.sha256 is None:  # an unverified hash is said so, never invented
            assert "not verified" in spec.note
        # torch.hub convention: "<name>-<first hex digits of sha256>.<ext>"
        hub = re.search(r"-([0-9a-f]{8,})\.", spec.filename)
        if hub:
            assert spec.sha256_prefix == hub.group(1)
    assert weights.get_spec("alexnet").used_by == ("LPIPS",)
    assert weights.get_spec("pt_inception").used_by == ("FID",)
    with pytest.raises(KeyError, match="known"):
        weights.get_spec("nope")


def test_registry_urls_match_the_packages():
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import AlexNet_Weights

    assert weights.get_spec("pt_inception").url == FID_WEIGHTS_URL
    assert weights.get_spec("alexnet").url == AlexNet_Weights.IMAGENET1K_V1.url


# -- resolve ---------------------------------------------------------------------------------------
def test_weights_dir_follows_talkbench_home(home):
    assert weights.weights_dir() == home / "weights"
    assert weights.default_path("alexnet") == home / "weights" / "alexnet-owt-7be5be79.pth"


def test_resolve_precedence(tmp_path, monkeypatch):
    spec = weights.get_spec("alexnet")
    in_dir = weights.weights_dir() / spec.filename
    in_dir.parent.mkdir(parents=True)
    in_dir.write_bytes(b"dir")
    assert weights.resolve("alexnet") == in_dir
    from_env = tmp_path / "env.pth"
    from_env.write_bytes(b"env")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(from_env))
    assert weights.resolve("alexnet") == from_env
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"explicit")
    assert weights.resolve("alexnet", explicit) == explicit
    assert weights.resolve("alexnet", str(explicit)) == explicit
    # a folder stands for the file under its usual name
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / spec.filename).write_bytes(b"folder")
    assert weights.resolve("alexnet", folder) == folder / spec.filename
    monkeypatch.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(folder))
    assert weights.resolve("alexnet") == folder / spec.filename


def test_resolve_missing_names_the_download_command(tmp_path, monkeypatch):
    expected = weights.weights_dir() / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(MetricUnavailable) as err:
        weights.resolve("pt_inception")
    assert str(err.value) == (f"{expected} missing, get it with "
                              f"`talkbench weights download pt_inception`")
    # an override that points nowhere is not silently replaced by the weights folder
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"x")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_PT_INCEPTION", str(tmp_path / "gone.pth"))
    with pytest.raises(MetricUnavailable) as err:
        weights.resolve("pt_inception")
    msg = str(err.value)
    assert "gone.pth missing" in msg and "TALKBENCH_WEIGHTS_PT_INCEPTION" in msg
    assert "`talkbench weights download pt_inception`" in msg
    with pytest.raises(MetricUnavailable, match="the given path"):
        weights.resolve("pt_inception", tmp_path / "also-gone.pth")


# -- verify ----------------------------------------------------------------------------------------
def test_verify_missing_ok_corrupt(tmp_path, monkeypatch):
    data, sha = payload(5000)
    add_spec(monkeypatch, sha256=sha, size=len(data))
    assert weights.verify("testnet").state == "missing"
    dest = weights.default_path("testnet")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    st = weights.verify("testnet")
    assert (st.state, st.size, st.sha256, st.path, st.usable) == ("ok", len(data), sha, dest, True)
    dest.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    st = weights.verify("testnet")
    assert st.state == "corrupt" and "sha256" in st.detail and not st.usable
    dest.write_bytes(data[:100])
    st = weights.verify("testnet")
    assert st.state == "corrupt" and "size 100" in st.detail
    # verify checks the file resolve would load: an explicit path or the env override
    other = tmp_path / "copy.bin"
    other.write_bytes(data)
    assert weights.verify("testnet", other).state == "ok"
    monkeypatch.setenv("TALKBENCH_WEIGHTS_TESTNET", str(other))
    assert weights.verify("testnet").state == "ok"


def test_verify_partial_and_unchecked(monkeypatch):
    data, sha = payload(4000, seed=7)
    dest = weights.weights_dir() / "testnet-v1.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    add_spec(monkeypatch, sha256_prefix=sha[:8], sha256_suffix=sha[-4:])
    assert weights.verify("testnet").state == "partial"
    add_spec(monkeypatch, sha256_prefix=sha[:8], sha256_suffix="0000" if sha[-4:] != "0000" else "1111")
    st = weights.verify("testnet")
    assert st.state == "corrupt" and "does not end with" in st.detail
    add_spec(monkeypatch, sha256_prefix="ffffffff" if not sha.startswith("ffffffff") else "00000000")
    assert weights.verify("testnet").state == "corrupt"
    add_spec(monkeypatch)
    assert weights.verify("testnet").state == "unchecked"


def test_fingerprint_is_the_sha256_and_follows_changes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    assert weights.fingerprint(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"second")
    assert weights.fingerprint(f) == hashlib.sha256(b"second").hexdigest()


# -- download --------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    hits: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)  # then close: the body is cut short
            self.close_connection = True
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 for the duration of one test."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.timeout = 5
    _Handler.files, _Handler.hits = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_download_from_file_url(tmp_path, monkeypatch):
    data, sha = payload()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    add_spec(monkeypatch, url=src.as_uri(), sha256=sha, size=len(data))
    seen = []
    path = weights.download("testnet", progress=lambda got, total: seen.append((got, total)))
    assert path == weights.weights_dir() / "testnet-v1.bin"
    assert path.read_bytes() == data
    assert leftovers(path.parent) == ["testnet-v1.bin"]  # no .part file left
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 4  # streamed in chunks
    assert weights.verify("testnet").state == "ok"
    assert weights.resolve("testnet") == path


def test_download_over_http_and_existing_files(server, monkeypatch):
    base, handler = server
    data, sha = payload(seed=2)
    handler.files["/w/testnet-v1.bin"] = data
    add_spec(monkeypatch, url=f"{base}/w/testnet-v1.bin", sha256=sha)
    path = weights.download("testnet", timeout=5)
    assert path.read_bytes() == data and handler.hits == ["/w/testnet-v1.bin"]
    # present and valid: kept, no request
    assert weights.download("testnet", timeout=5) == path and len(handler.hits) == 1
    # force: fetched again
    weights.download("testnet", force=True, timeout=5)
    assert len(handler.hits) == 2
    # present but corrupt: refused without force, replaced with it
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="--force"):
        weights.download("testnet", timeout=5)
    assert path.read_bytes() == b"garbage"
    weights.download("testnet", force=True, timeout=5)
    assert path.read_bytes() == data
    # a mirror URL replaces the registered one; the checksum still applies
    handler.files["/mirror/copy.bin"] = data
    weights.download("testnet", force=True, url=f"{base}/mirror/copy.bin", timeout=5)
    assert handler.hits[-1] == "/mirror/copy.bin"
    assert leftovers(path.parent) == ["testnet-v1.bin"]


def test_download_refuses_a_checksum_mismatch(server, monkeypatch):
    base, handler = server
    data, sha = payload(seed=3)
    handler.files["/w.bin"] = data
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    add_spec(monkeypatch, url=f"{base}/w.bin", sha256=wrong)
    with pytest.raises(WeightsError, match="does not match the registry"):
        weights.download("testnet", timeout=5)
    assert leftovers(weights.weights_dir()) == []
    # the known-digit check refuses too
    add_spec(monkeypatch, url=f"{base}/w.bin", sha256_prefix=wrong[:8])
    with pytest.raises(WeightsError, match="does not start with"):
        weights.download("testnet", timeout=5)
    add_spec(monkeypatch, url=f"{base}/w.bin", size=len(data) + 1)
    with pytest.raises(WeightsError, match="size"):
        weights.download("testnet", timeout=5)
    assert leftovers(weights.weights_dir()) == []
    # a failed forced re-download leaves the existing file alone
    add_spec(monkeypatch, url=f"{base}/w.bin", sha256=sha)
    path = weights.download("testnet", timeout=5)
    add_spec(monkeypatch, url=f"{base}/w.bin", sha256=wrong)
    with pytest.raises(WeightsError):
        weights.download("testnet", force=True, timeout=5)
    assert path.read_bytes() == data and leftovers(path.parent) == ["testnet-v1.bin"]


def test_download_network_failures_leave_nothing(server, monkeypatch, tmp_path):
    base, _ = server
    cases = {
        f"{base}/missing.bin": "404",
        f"{base}/truncated": "",
        "http://127.0.0.1:9/refused.bin": "",  # the discard port: nothing listens there
        (tmp_path / "nope.bin").as_uri(): "",
        "notaurl": "",
    }
    for url, text in cases.items():
        add_spec(monkeypatch, url=url)
        with pytest.raises(WeightsError, match="could not download|cut short") as err:
            weights.download("testnet", timeout=5)
        assert text in str(err.value) and url in str(err.value)
        assert leftovers(weights.weights_dir()) == []


# -- command line ----------------------------------------------------------------------------------
def run_cli(argv):
    parser = argparse.ArgumentParser(prog="talkbench")
    sub = parser.add_subparsers(dest="command", required=True)
    weights_cli.add_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_path(capsys, monkeypatch, tmp_path):
    assert run_cli(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for spec in weights.list_specs():
        assert spec.name in out and spec.filename in out and spec.url in out
    assert "missing" in out and str(weights.weights_dir()) in out

    assert run_cli(["weights", "path", "alexnet"]) == 1
    err = capsys.readouterr().err
    assert "`talkbench weights download alexnet`" in err
    f = tmp_path / "alex.pth"
    f.write_bytes(b"a")
    monkeypatch.setenv("TALKBENCH_WEIGHTS_ALEXNET", str(f))
    assert run_cli(["weights", "path", "alexnet"]) == 0
    assert capsys.readouterr().out.strip() == str(f)
    assert run_cli(["weights", "list"]) == 0
    assert "present (via TALKBENCH_WEIGHTS_ALEXNET)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse rejects unknown names
        run_cli(["weights", "path", "nope"])


def test_cli_download_and_verify(capsys, monkeypatch, tmp_path):
    data, sha = payload(seed=4)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    add_spec(monkeypatch, url=(tmp_path / "absent.bin").as_uri(), sha256=sha)
    assert run_cli(["weights", "verify", "testnet"]) == 1
    assert "missing" in capsys.readouterr().out
    assert run_cli(["weights", "download", "testnet", "--quiet"]) == 1
    assert "could not download" in capsys.readouterr().err
    assert run_cli(["weights", "download", "testnet", "--url", src.as_uri()]) == 0
    assert "testnet: " in capsys.readouterr().out
    assert run_cli(["weights", "verify", "testnet"]) == 0
    assert "ok" in capsys.readouterr().out
    assert run_cli(["weights", "verify"]) == 0  # the other files are missing: listed, not failed
    out = capsys.readouterr().out
    assert all(name in out for name in weights.SPECS)
    weights.default_path("testnet").write_bytes(b"broken")
    assert run_cli(["weights", "verify"]) == 1
    assert "corrupt" in capsys.readouterr().out
