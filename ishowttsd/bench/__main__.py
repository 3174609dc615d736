import sys

from ishowttsd.bench import main

sys.exit(main())
