"""Entry point for ``python -m ibflow_gateway_sim``."""

from ibflow_gateway_sim.app import main

if __name__ == "__main__":
    main()
