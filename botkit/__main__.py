import sys

from botkit.app.cli import main

sys.exit(main())
