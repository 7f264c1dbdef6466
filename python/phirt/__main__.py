"""python -m phirt"""

import sys

from phirt.cli import main

sys.exit(main())
