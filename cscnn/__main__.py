import sys

from cscnn.cli import main

sys.exit(main())
