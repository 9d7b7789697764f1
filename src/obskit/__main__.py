"""``python -m obskit``: the obskit command line."""

from obskit.cli import main

raise SystemExit(main())
