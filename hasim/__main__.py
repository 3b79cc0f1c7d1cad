"""``python -m hasim``: the same as the ``hasim`` command."""

import sys

from hasim.cli import main

if __name__ == "__main__":
    sys.exit(main())
