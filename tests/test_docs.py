"""Docs that run: every ```python block of README.md and docs/*.md is executed, and every
`teamattack ...` line of a ```bash block is parsed by the CLI's own argparse parser.

* The python blocks of one file share a namespace and run in order, in a fresh working folder
  (files they write land there), with one torch thread. Keep them fast: digits data and digits
  zoo models ship with the package.
* A block right after a line `<!-- no-run -->` is only compiled (syntax-checked), not run.
* A block that needs what is optional here -- the peer libraries (`baselines.PeerUnavailable`) or a
  dataset folder (`data.DatasetNotFoundError`, MNIST / CIFAR-10 under $TEAMATTACK_DATA) -- skips
  the rest of its file with the reason.
* bash lines: `teamattack ARGS` (optionally after `$ ` or `./run.sh `), `\\` continuations joined,
  `# comments` dropped; `--help` lines pass when argparse exits 0.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```(\w*)\s*$")

README_PENDING: tuple[str, ...] = ()  # README snippets known to be broken, compiled only (none today)


@dataclass
class Block:
    path: Path
    line: int        # 1-based line of the opening fence
    lang: str
    code: str
    run: bool


def blocks(path: Path) -> list[Block]:
    out, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        out.append(Block(path, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n", prev != NO_RUN))
        i = j + 1
    return out


def _pending(block: Block) -> bool:
    return block.path.name == "README.md" and any(p in block.code for p in README_PENDING)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [p for p in FILES if any(b.lang == "python" for b in blocks(p))], ids=_id)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    from teamattack.baselines import PeerUnavailable
    from teamattack.data.readers import DatasetNotFoundError

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": f"docs:{path.name}"}
    try:
        for b in [b for b in blocks(path) if b.lang == "python"]:
            where = f"{_id(path)}:{b.line}"
            code = compile(b.code, where, "exec")
            if not b.run or _pending(b):
                print(f"{where}: {'pending README fix' if b.run else 'no-run'}: compiled only")
                continue
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(code, namespace)
            except (PeerUnavailable, DatasetNotFoundError) as err:
                pytest.skip(f"{where} needs what is not installed here: {err}")
            except Exception as err:  # noqa: BLE001 -- a broken example: say which block
                raise AssertionError(f"{where}: the documented block fails: {type(err).__name__}: {err}") from err
            print(f"{where}: {time.perf_counter() - t0:.1f} s")
    finally:
        torch.set_num_threads(threads)


def teamattack_lines(block: Block) -> list[str]:
    joined, buf = [], ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    out = []
    for line in joined:
        s = line.strip()
        for prefix in ("$ ", "./run.sh "):
            if s.startswith(prefix):
                s = s[len(prefix):].lstrip()
        if s.startswith("teamattack ") or s == "teamattack":
            out.append(s)
    return out


BASH = [(b, line) for p in FILES for b in blocks(p) if b.lang in ("bash", "sh", "shell", "console")
        for line in teamattack_lines(b)]


@pytest.mark.parametrize("block,line", BASH, ids=[f"{_id(b.path)}:{b.line}:{i}" for i, (b, _) in enumerate(BASH)])
def test_cli_lines_parse(block, line):
    from teamattack.cli import build_parser

    if block.path.name == "README.md" and line in README_PENDING:
        pytest.skip("README fix pending (issue 17 ecosystem report)")
    argv = shlex.split(line, comments=True)[1:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    assert code == 0, f"{_id(block.path)}:{block.line}: `{line}` does not parse:\n{err.getvalue().strip()}"


def test_no_run_marker_and_collector(tmp_path):
    """The collector itself: fences, the no-run marker, continuations."""
    text = ("x\n" + NO_RUN + "\n```python\nboom()\n```\n```bash\nteamattack demo \\\n  --help  # c\n"
            "$ teamattack report a.json --html o.html\nls\n```\n")
    tmp = tmp_path / "check.md"
    tmp.write_text(text)
    bs = blocks(tmp)
    assert [(b.lang, b.run) for b in bs] == [("python", False), ("bash", True)]
    assert teamattack_lines(bs[1]) == ["teamattack demo    --help  # c", "teamattack report a.json --html o.html"]
