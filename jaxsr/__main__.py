import sys

from jaxsr.cli import main

sys.exit(main())
