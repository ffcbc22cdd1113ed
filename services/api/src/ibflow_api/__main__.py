"""Entry point for ``python -m ibflow_api``."""

from ibflow_api.app import main

if __name__ == "__main__":
    main()
