"""`python -m tuner_cli`: the `tuner` command."""

import sys

from tuner_cli.main import main

sys.exit(main())
