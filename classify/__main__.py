"""``python -m classify``: see `classify.cli`."""
from classify.cli import main

raise SystemExit(main())
