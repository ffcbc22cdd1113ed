"""``python -m ibflow_cli``."""

from ibflow_cli.main import main

main()
