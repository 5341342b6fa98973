import sys

from boneage.cli.main import main

sys.exit(main())
