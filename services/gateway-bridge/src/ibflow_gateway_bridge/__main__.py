"""Entry point for ``python -m ibflow_gateway_bridge``."""

from ibflow_gateway_bridge.app import main

if __name__ == "__main__":
    main()
