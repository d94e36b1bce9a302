import sys

from vla_runtime.cli.main import main

sys.exit(main())
