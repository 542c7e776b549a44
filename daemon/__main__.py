"""``python -m daemon`` is the ``lipsyncd`` command."""

from daemon.cli import main

raise SystemExit(main())
