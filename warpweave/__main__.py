"""`python -m warpweave`: the command line (see warpweave.cli)."""
from .cli import main

raise SystemExit(main())
