"""ibflow: the shared library of the ibflow trading backend."""

__version__ = "0.1.0"
