import sys

from cir_cli.main import main

sys.exit(main())
