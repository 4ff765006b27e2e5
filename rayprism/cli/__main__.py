import sys

from rayprism.cli import main

sys.exit(main())
