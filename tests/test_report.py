"""`teamattack report`: one self-contained HTML page, checked as text and rendered in headless Chromium."""
import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from teamattack import report
from teamattack.cli import main

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
DOCS = [RESULTS / "untargeted-l2-digits-cnn.json", RESULTS / "math" / "math-fig2.json"]
UNKNOWN = {"whatever": "a document of a kind the report does not know",
           "scores": {"a": {"x": 1.5, "y": [1, 2]}, "b": {"x": 2.5, "y": [3, 4]}},
           "nested": {"depth": 2, "records": [{"k": 1, "v": 0.25}, {"k": 2, "v": None}]},
           "matrix": [[1, 2], [3, 4]]}
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-logging=stderr", "--v=0", "--window-size=1200,1600"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    unknown = tmp / "unknown.json"
    unknown.write_text(json.dumps(UNKNOWN))
    out = tmp / "out.html"
    assert main(["report", *map(str, DOCS), str(unknown), "--html", str(out), "--title", "test report"]) == 0
    return out


def test_page_is_self_contained_with_tables_and_images(page):
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)    # nothing fetched: data URIs and anchors only
    assert "<script" not in html
    bench = json.loads(DOCS[0].read_text())
    for run in bench["runs"]:                                         # every bench run is a row
        assert f"<td>{run['attack']}</td>" in html
    assert "median l2 per attack" in html                             # the bar chart
    assert "math_fig2.png" in html                                    # the experiment's own figure
    assert "<h3>scores</h3>" in html and "<h3>nested.records</h3>" in html   # unknown documents, generically
    from PIL import Image

    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) >= 2
    for b64 in uris:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.verify()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json"), "--html", str(tmp_path / "o.html")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--html", str(tmp_path / "o.html")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("teamattack report:") for line in err)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browse(exe: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_renders_in_headless_chromium(page, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Debian's chromium is not installed here (./run.sh test installs it with apt-get "
                    "where apt-get can; it could not on this machine)")
    url = page.as_uri()
    dom = _browse(exe, url, tmp_path / "p1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 4 and dom.stdout.count('<img src="data:image/png') >= 2
    assert "<td>team-l2</td>" in dom.stdout
    assert _console_lines(dom.stderr) == [], _console_lines(dom.stderr)
    shot_path = tmp_path / "shot.png"
    shot = _browse(exe, url, tmp_path / "p2", f"--screenshot={shot_path}")
    assert shot.returncode == 0 and shot_path.is_file(), shot.stderr[-2000:]
    assert _console_lines(shot.stderr) == []
    from PIL import Image

    with Image.open(shot_path) as im:
        gray = im.convert("L")
        assert gray.size == (1200, 1600)
        hist = gray.histogram()
        dark = sum(hist[:128])                     # text, rules, plot lines
        assert dark > 0.002 * gray.size[0] * gray.size[1], "screenshot is blank"
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 20      # more than a flat page
    # the console detector itself: a page that logs an error is caught
    control = tmp_path / "control.html"
    control.write_text('<html><body><script>console.error("report-test-control")</script></body></html>')
    caught = _console_lines(_browse(exe, control.as_uri(), tmp_path / "p3", "--dump-dom").stderr)
    assert any("report-test-control" in line for line in caught)
