"""`python -m zeroshot.cli ...`: the `zeroshot` command."""

import sys

from zeroshot.cli import main

sys.exit(main())
