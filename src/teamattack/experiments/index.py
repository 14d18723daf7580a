"""The index of `teamattack reproduce all`: one Markdown page linking every table and figure."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text


@dataclass
class Entry:
    """One experiment's outcome in the index."""

    name: str
    help: str
    json: str | None = None
    markdown: str | None = None
    pngs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def files_in(result: object, suffix: str) -> Iterator[str]:
    """Every string value ending with `suffix` in a (nested) result dict, in order, once."""
    seen: set[str] = set()

    def walk(v: object) -> Iterator[str]:
        if isinstance(v, str) and v.endswith(suffix) and v not in seen:
            seen.add(v)
            yield v
        elif isinstance(v, dict):
            for w in v.values():
                yield from walk(w)
        elif isinstance(v, (list, tuple)):
            for w in v:
                yield from walk(w)

    yield from walk(result)


def _link(path: str, base: Path) -> str:
    rel = os.path.relpath(Path(path).resolve(), base.resolve())
    return f"[{Path(path).name}]({rel})"


def write_index(path: Path, entries: Sequence[Entry], command: str) -> Path:
    """Markdown index: per experiment its JSON, Markdown table and PNGs (links relative to the index)."""
    base = path.parent
    lines = ["# teamattack reproduce all", "", f"Command: `{command}`", "",
             "The HTML report of these files is `teamattack report` (where installed); this page is its "
             "plain Markdown counterpart.", "",
             "| experiment | what | JSON | table | figures | time |", "|---|---|---|---|---|---|"]
    for e in entries:
        if e.error:
            lines.append(f"| {e.name} | {e.help} | failed: {e.error} | - | - | {e.seconds:.0f} s |")
            continue
        lines.append(f"| {e.name} | {e.help} | {_link(e.json, base) if e.json else '-'} | "
                     f"{_link(e.markdown, base) if e.markdown else '-'} | "
                     f"{' '.join(_link(p, base) for p in e.pngs) or '-'} | {e.seconds:.0f} s |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
