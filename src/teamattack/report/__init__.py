"""One self-contained HTML page from the JSON outputs of bench / evaluate / reproduce runs.

    from teamattack import report
    report.write_html(["docs/results/untargeted-l2-digits-cnn.json"], "report.html")

Each JSON document becomes a section (`sections.load`): its scalar fields as a table of facts,
every list of records (bench `runs`, ...) and every mapping of records as a table, a bar chart of
the bench runs' median distances, and every PNG the document names (`png`, `plots`, any string
ending in .png that resolves to a file beside the JSON or under the working directory) embedded
as a data URI. PNG files can be given directly too. Unknown documents are rendered generically.
The page has inline CSS, no scripts and no external links (`html.render`).
"""
from .html import render, write_html
from .sections import Image, Section, Table, load

__all__ = ["Image", "Section", "Table", "load", "render", "write_html"]
