"""The wheel: what it ships (code, py.typed, zoo weights and cards), what it does not (tests, docs),
and its extras (docs/packaging.md)."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path):
    pytest.importorskip("setuptools")
    tree = tmp_path / "tree"  # build a copy: setuptools writes build/ and *.egg-info in the tree it builds
    for name in ("pyproject.toml", "README.md"):
        tree.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(proc.stderr[-3000:])
    (wheel,) = out.glob("teamattack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "teamattack/py.typed" in names
    assert "teamattack/report/html.py" in names and "teamattack/compat/foolbox.py" in names
    weights = {n for n in names if n.startswith("teamattack/zoo/weights/")}
    for model in ("digits-cnn", "digits-mlp", "mnist-table1"):
        assert f"teamattack/zoo/weights/{model}.safetensors" in weights
        assert f"teamattack/zoo/weights/{model}.json" in weights
    assert not [n for n in names if n.startswith(("tests/", "docs/")) or "/tests/" in n]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"plots", "digits", "all", "test", "docs", "peers"} <= extras
    core = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(lib in line for line in core for lib in ("matplotlib", "scikit-learn", "torchattacks"))
