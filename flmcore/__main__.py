"""``python -m flmcore`` is the ``flmcore`` console script."""
import sys

from flmcore.cli import main

sys.exit(main())
