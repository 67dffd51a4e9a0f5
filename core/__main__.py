import sys

from eegsine.cli import main

sys.exit(main())
