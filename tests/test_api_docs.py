"""The API reference builds from the docstrings (mkdocs + mkdocstrings; `./run.sh docs`)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_api_reference_builds(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env_src = str(ROOT / "src")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": env_src})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    attacks = (site / "api" / "attacks" / "index.html").read_text()
    for name in ("TEAM", "run_loader", "set_input_space", "AttackResult", "to_dict"):
        assert name in attacks, name
    assert "InputSpace" in (site / "api" / "inputs" / "index.html").read_text()
