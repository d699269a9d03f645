"""Every shell block and Python snippet of README.md, docs/ and examples/ runs, in order, as a user would.

Each Markdown file runs in its own scratch folder (``work/``, with ``../shared`` linked to the real
data's parent and ``examples/`` linked from the checkout), its blocks in the order of the page, so a
block may use the files an earlier block made. ``bash`` blocks run with ``bash -e`` in a session of
their own; what they leave in the background (a broker, a server) is stopped when the page ends.
``python`` blocks run as scripts. Blocks of any other language are not run.

What a block may say, in comments the reader sees:

* ``# not run by the tests: REASON``: the block is skipped; the reason must be given.
* ``COMMAND  # in the tests: ARGS``: ARGS are appended to COMMAND (a shorter run).

The fixed ports of the pages (5555, 5556, 8083) are replaced by free ones, so that a page never meets
another program's server.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, data_dir

BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
ALL_PAGES = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")),
             *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*.md"))]
#: the pages with something to run (a page of prose and tables only has nothing)
PAGES = [p for p in ALL_PAGES if any(lang in ("bash", "python") for lang, _ in
                                      (m.groups() for m in BLOCK.finditer((REPO / p).read_text())))]
SKIP = re.compile(r"#\s*not run by the tests:\s*(.*)")
SHORTEN = re.compile(r"^(?P<cmd>.*?)\s*#\s*in the tests:\s*(?P<args>.+)$")
PORTS = ("5555", "5556", "8083")
TIMEOUT_S = 300


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of a Markdown page, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def prepare(code: str, ports: dict[str, str]) -> str:
    """The block as the tests run it: ``# in the tests:`` arguments appended, ports replaced."""
    lines = []
    for line in code.splitlines():
        m = SHORTEN.match(line)
        lines.append(f"{m.group('cmd')} {m.group('args')}" if m else line)
    out = "\n".join(lines) + "\n"
    for old, new in ports.items():
        out = out.replace(old, new)
    return out


def test_the_block_parser_and_directives():
    page = "x\n```bash\necho a  # in the tests: -n\n```\n```python\nprint(1)\n```\n```\nplain\n```\n"
    assert blocks(page) == [("bash", "echo a  # in the tests: -n\n"), ("python", "print(1)\n"), ("", "plain\n")]
    assert prepare("tpcflow x --port 8083  # in the tests: --quick\n", {"8083": "1"}) == "tpcflow x --port 1 --quick\n"
    assert SKIP.search("# not run by the tests: needs a GPU").group(1) == "needs a GPU"


def test_the_pages_with_commands_are_run_and_every_skip_gives_its_reason():
    assert {"README.md", "docs/http.md", "docs/mdp.md", "docs/security.md", "docs/your-data.md"} <= set(PAGES)
    for page in PAGES:
        text = (REPO / page).read_text()
        for lang, code in blocks(text):
            m = SKIP.search(code)
            if m:
                assert len(m.group(1).strip()) > 8, f"{page}: a skipped block must say why: {code[:80]!r}"


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page, tmp_path):
    data = data_dir()
    if not data.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data not found under {data}")
        pytest.skip(f"real data not found under {data} (set TPCFLOW_DATA)")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(data.resolve().parent)
    (work / "examples").symlink_to(REPO / "examples")
    env = dict(os.environ, TPCFLOW_DATA=str(data.resolve()), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ports = {p: _free_port() for p in PORTS}
    sessions: list[subprocess.Popen] = []
    ran = 0
    try:
        for k, (lang, code) in enumerate(blocks((REPO / page).read_text())):
            if lang not in ("bash", "python") or SKIP.search(code):
                continue
            script = work / f".block{k}.{'sh' if lang == 'bash' else 'py'}"
            script.write_text(prepare(code, ports))
            cmd = ["bash", "-e", str(script)] if lang == "bash" else [sys.executable, str(script)]
            log = work / f".block{k}.log"
            with log.open("w") as fh:  # a file, not a pipe: servers left in the background keep it open
                proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            sessions.append(proc)
            try:
                proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop(proc)
                pytest.fail(f"{page}, block {k} ran past {TIMEOUT_S} s:\n{code}\n--- output ---\n"
                            f"{log.read_text()[-4000:]}")
            if proc.returncode != 0:
                pytest.fail(f"{page}, block {k} exited {proc.returncode}:\n{code}\n--- output ---\n"
                            f"{log.read_text()[-4000:]}")
            ran += 1
    finally:
        for proc in sessions:
            _stop(proc)
    assert ran > 0, f"{page}: no block ran"


def _stop(proc: subprocess.Popen) -> None:
    """Stop the block's whole session: what it started in the background too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
