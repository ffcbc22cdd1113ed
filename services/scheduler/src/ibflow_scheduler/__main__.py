"""Entry point for ``python -m ibflow_scheduler``."""

from ibflow_scheduler.app import main

if __name__ == "__main__":
    main()
