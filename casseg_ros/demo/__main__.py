"""`python -m casseg_ros.demo` (what `make demo` runs): the demo's command line."""
import sys

from casseg_ros.demo.cli import main

sys.exit(main())
