"""`python -m indexer` runs the indexer CLI."""
import sys

from indexer.cli import main

sys.exit(main())
