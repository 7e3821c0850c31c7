import sys

from mirrorkeeper.cli import main

sys.exit(main())
