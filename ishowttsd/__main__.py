import sys

from ishowttsd.daemon import main

sys.exit(main())
