"""``python -m musicfs.cli`` is the ``musicfs`` command."""

import sys

from musicfs.cli.main import main

sys.exit(main())
