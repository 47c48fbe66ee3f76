"""``python -m gateway``: the command line (see :mod:`gateway.cli`)."""

import sys

from gateway.daemon.signals import install_early, run_requested

if run_requested(sys.argv[1:]):
    install_early()  # before the command line's imports: a SIGTERM now is a clean stop

from gateway.cli import main

raise SystemExit(main())
