import sys

from minik8s.cli import main

sys.exit(main())
