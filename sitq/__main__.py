"""`python -m sitq ...`: see sitq.cli for the commands."""

from sitq.cli import main

raise SystemExit(main())
