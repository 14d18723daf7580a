"""Render Sections as one self-contained HTML page (inline CSS, images as data URIs, no scripts)."""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .sections import Section, Table, load

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;
     padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:2px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.src{color:#666;font-size:.85rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:right;vertical-align:top}
th{background:#f0f0f3} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa} table.facts td{text-align:left}
.scroll{overflow-x:auto}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#444}
nav ul{columns:2;font-size:.9rem}
.note{color:#666;font-size:.8rem}
"""


def _table(t: Table, cls: str = "data") -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return (f'<h3>{e(t.caption)}</h3><div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _section(i: int, s: Section) -> str:
    e = html.escape
    parts = [f'<section id="s{i}"><h2>{e(s.title)}</h2><p class="src">{e(s.source)}</p>']
    if s.facts:
        parts.append(_table(Table("run", ["field", "value"], [[k, v] for k, v in s.facts]), "facts"))
    parts += [_table(t) for t in s.tables]
    for img in s.images:
        parts.append(f'<figure><img src="{img.data_uri}" alt="{e(img.caption)}">'
                     f"<figcaption>{e(img.caption)}</figcaption></figure>")
    parts += [f'<p class="note">{e(n)}</p>' for n in s.notes]
    parts.append("</section>")
    return "".join(parts)


def render(sections: Sequence[Section], title: str = "teamattack report") -> str:
    """The page: a contents list, then one section per document."""
    e = html.escape
    toc = "".join(f'<li><a href="#s{i}">{e(s.title)}</a> <span class="src">{e(Path(s.source).name)}</span></li>'
                  for i, s in enumerate(sections))
    body = "".join(_section(i, s) for i, s in enumerate(sections))
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<nav><ul>{toc}</ul></nav>{body}</body></html>\n")


def write_html(paths: Iterable[str | os.PathLike], out: str | os.PathLike,
               title: str = "teamattack report") -> Path:
    """Load every document, render, write `out` atomically; returns its path."""
    from ..atomic import atomic_write_text  # a fresh temporary file beside `out`, then os.replace

    sections = [load(p) for p in paths]
    return atomic_write_text(out, render(sections, title))
