"""Remote sources: HTTP with Range requests on 127.0.0.1, unreachable URLs, optional XRootD."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import data_path

from tpcflow.errors import DataFormatError
from tpcflow.io.root import DataReader, RemoteSourceError
from tpcflow.loader.root_generator import DataGenerator


class RangeHTTPRequestHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single ``Range: bytes=a-b`` requests (what uproot/fsspec send)."""

    ranges_served = 0

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404, "File not found")
            return None
        size = os.path.getsize(path)
        f = open(path, "rb")  # noqa: SIM115 -- closed by the base class after copyfile
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start, end = int(m.group(1)), int(m.group(2) or size - 1)
            else:
                start, end = size - int(m.group(2)), size - 1
            end = min(end, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            f.seek(start)
            self._remaining = end - start + 1
            type(self).ranges_served += 1
        else:
            self.send_response(200)
            self._remaining = size
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        return f

    def copyfile(self, source, outputfile):
        outputfile.write(source.read(self._remaining))

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root_dir():
    directory = data_path("root/uproot-HZZ.root").parent
    handler = functools.partial(RangeHTTPRequestHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_source_matches_local(http_root_dir):
    RangeHTTPRequestHandler.ranges_served = 0
    url = f"{http_root_dir}/uproot-HZZ.root"
    remote = DataReader(url, include=["Muon_*", "MET_*"], timeout=10)
    local = DataReader(data_path("root/uproot-HZZ.root"), include=["Muon_*", "MET_*"])
    assert remote.first_pass().branches == local.first_pass().branches
    g_remote = DataGenerator([url], include=["Muon_*"], shuffle=False, chunk_size=1000)
    g_local = DataGenerator([data_path("root/uproot-HZZ.root")], include=["Muon_*"], shuffle=False, chunk_size=1000)
    for a, b in zip(g_remote.iterate("all"), g_local.iterate("all")):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert RangeHTTPRequestHandler.ranges_served > 0  # really read through Range requests


def test_http_404_is_a_clear_error_without_retries(http_root_dir):
    t0 = time.perf_counter()
    with pytest.raises(DataFormatError, match="not found"):
        DataReader(f"{http_root_dir}/missing.root", retries=3)
    assert time.perf_counter() - t0 < 3


def test_unreachable_url_retries_then_fails_in_bounded_time():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/file.root"
    t0 = time.perf_counter()
    with pytest.raises(RemoteSourceError) as err:
        DataReader(url, retries=2, timeout=2)
    elapsed = time.perf_counter() - t0
    assert err.value.attempts == 3 and url in str(err.value)
    assert 1.0 <= elapsed < 15  # two back-off sleeps (0.5 s + 1 s), then a prompt error


def test_xrootd_url_without_plugin_has_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fsspec_xrootd", None)  # behave as if fsspec-xrootd were not installed
    with pytest.raises(ModuleNotFoundError, match=r"tpcflow\[xrootd\]"):
        DataReader("root://127.0.0.1:1//data/file.root")


def test_xrootd_server_on_loopback():
    """RECIPES.md: a real xrootd server on 127.0.0.1, run as 'nobody'; read HZZ through root://."""
    import signal
    import tempfile

    if shutil.which("xrootd") is None:
        pytest.skip("xrootd server binary not installed (apt-get install xrootd-server)")
    if importlib.util.find_spec("fsspec_xrootd") is None:
        pytest.skip("fsspec-xrootd not installed (pip install 'tpcflow[xrootd]')")
    src = data_path("root/uproot-HZZ.root")
    base = tempfile.mkdtemp(prefix="tpcflow-xrd-", dir="/tmp")  # readable by 'nobody', unlike pytest's tmp_path
    try:
        os.chmod(base, 0o777)
        shutil.copy(src, os.path.join(base, "hzz.root"))
        os.chmod(os.path.join(base, "hzz.root"), 0o644)
        port = _closed_port()
        cfg = os.path.join(base, "xrd.cfg")
        with open(cfg, "w") as fh:
            fh.write(f"all.export {base}\nxrd.port {port}\nxrd.network nodnr\n")
        cmd = ["xrootd", "-c", cfg, "-n", f"tpcflow{port}"]
        if os.geteuid() == 0:  # xrootd refuses to run as root
            cmd = ["su", "-s", "/bin/sh", "nobody", "-c", "exec " + " ".join(cmd)]
        proc = subprocess.Popen(cmd, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # wait until the port accepts connections
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.2)
            else:
                pytest.fail("xrootd server did not listen within 20 s")
            r = DataReader(f"root://127.0.0.1:{port}/{base}/hzz.root", include=["NJet", "Muon_Px"], retries=1,
                           timeout=10)
            local = DataReader(src, include=["NJet", "Muon_Px"])
            assert r.num_entries == 2421
            assert r.first_pass().branches == local.first_pass().branches
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_server_gone_while_reading_fails_clearly():
    directory = data_path("root/uproot-HZZ.root").parent
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHTTPRequestHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        r = DataReader(f"http://127.0.0.1:{server.server_address[1]}/uproot-HZZ.root", include=["Jet_*"],
                       retries=1, timeout=2)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    t0 = time.perf_counter()
    with pytest.raises(RemoteSourceError) as err:  # baskets are fetched on demand: the server is gone
        r.read(0, 100)
    assert time.perf_counter() - t0 < 15 and "uproot-HZZ.root" in str(err.value)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
