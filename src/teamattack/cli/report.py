"""`teamattack report RUN.json [...] --html out.html`: one self-contained HTML page of runs."""
from __future__ import annotations

from pathlib import Path

from .common import CLIError, UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="bundle bench / evaluate / reproduce JSON outputs into one HTML page",
        description="One self-contained HTML page (inline CSS, images as data URIs, no scripts): "
                    "for each JSON document its facts, its tables (bench runs, experiment panels, "
                    "any list of records), a bar chart of a bench's median distances, and every PNG "
                    "it names. PNG files may be given directly. Unknown documents are rendered "
                    "generically.")
    p.add_argument("inputs", nargs="+", metavar="RUN.json", help="JSON outputs (or .png images)")
    p.add_argument("--html", required=True, metavar="OUT.html", help="the page to write")
    p.add_argument("--title", default="teamattack report", help="page title (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import write_html

    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    try:
        out = write_html(args.inputs, args.html, title=args.title)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(args.inputs)} documents)")
    return 0
