"""``python -m sparsesnn demo|info``."""
import sys

from .cli import main

sys.exit(main())
