"""`python -m worker.cli`: the `ct` command, for a process started with this interpreter."""

import sys

from worker.cli.main import main

sys.exit(main())
