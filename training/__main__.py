"""`python -m training ...` runs the TAT job (same as `cir train`)."""

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
