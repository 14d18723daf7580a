"""`teamattack bench` (placeholder until its issue lands)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="(not yet available)")
    p.set_defaults(func=lambda args: print("teamattack bench: not yet implemented") or 2)
