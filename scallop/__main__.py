import sys

from scallop.cli import main

sys.exit(main())
