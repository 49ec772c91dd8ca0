import sys

from inventiv.cli import main

sys.exit(main())
