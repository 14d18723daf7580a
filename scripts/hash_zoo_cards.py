"""Write the sha256 of each shipped weights file into its card (``weights_sha256``).

    python scripts/hash_zoo_cards.py            # update src/teamattack/zoo/weights/*.json
    python scripts/hash_zoo_cards.py --check    # exit 1 if a card's hash is missing or wrong

teamattack.zoo.load checks the hash of a card that has one; rerun this after replacing weights
by hand (teamattack train / zoo.save write the hash themselves).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from teamattack.atomic import atomic_write_text
from teamattack.zoo.registry import HASH_KEY, WEIGHTS_DIR, card_path, sha256_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 on a missing or wrong hash")
    p.add_argument("--dir", type=Path, default=WEIGHTS_DIR, help="folder of weights and cards")
    args = p.parse_args(argv)
    bad = 0
    for weights in sorted(args.dir.glob("*.safetensors")):
        cpath = card_path(weights)
        if not cpath.is_file():
            continue
        card = json.loads(cpath.read_text())
        digest = sha256_file(weights)
        if card.get(HASH_KEY) == digest:
            print(f"ok       {cpath.name}")
            continue
        if args.check:
            print(f"MISMATCH {cpath.name}: card {card.get(HASH_KEY)}, file {digest}")
            bad += 1
            continue
        card[HASH_KEY] = digest
        atomic_write_text(cpath, json.dumps(card, indent=2) + "\n")
        print(f"updated  {cpath.name}: {digest}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
