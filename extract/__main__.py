"""`python -m extract ...` (see `extract.cli`)."""
import sys

from extract.cli import main

# Guarded: DataLoader workers start by forkserver, which imports this module again as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())
