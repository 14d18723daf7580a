"""`python -m teamattack ...`: the `teamattack` command line."""
from .cli import main

raise SystemExit(main())
