import sys

from eegsine.commands.main import main

sys.exit(main())
