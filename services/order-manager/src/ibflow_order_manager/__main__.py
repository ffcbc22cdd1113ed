"""Entry point for ``python -m ibflow_order_manager``."""

from ibflow_order_manager.app import main

if __name__ == "__main__":
    main()
