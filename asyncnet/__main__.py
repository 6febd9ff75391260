"""``python -m asyncnet``."""

from asyncnet.cli import main

raise SystemExit(main())
