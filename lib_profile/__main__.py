import sys

from lib_profile.cli import main

sys.exit(main())
