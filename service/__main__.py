"""`python -m service`: same as `cir serve`."""

import sys

from service.cli import main

sys.exit(main())
