"""`python -m consumer` is `usage-consumer`."""

from consumer.cli import main

raise SystemExit(main())
