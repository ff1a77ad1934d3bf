import sys

from openmatch_persistence.cli import main

sys.exit(main())
