import sys

from scallop.app.cli import main

sys.exit(main())
