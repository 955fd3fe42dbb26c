import sys

from robustmm.cli import main

sys.exit(main())
