"""Entry point for ``python -m ibflow_position_monitor``."""

from ibflow_position_monitor.app import main

if __name__ == "__main__":
    main()
