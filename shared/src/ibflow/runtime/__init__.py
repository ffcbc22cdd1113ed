"""The service runner every ibflow process uses.

:func:`run` turns a :class:`Service` declaration into a process with signal handling,
graceful drain, ``/metrics``, ``/healthz`` and ``/readyz`` (see
:mod:`ibflow.runtime.service`); :mod:`ibflow.runtime.logs` gives JSON logs carrying
the correlation ids bound with :func:`bind_correlation`.
"""

from ibflow.runtime.http import ReadinessReport
from ibflow.runtime.logs import bind_correlation, configure_logging, current_correlation
from ibflow.runtime.service import (
    EXIT_FAILURE,
    EXIT_INVALID_SETTINGS,
    EXIT_OK,
    Check,
    Runtime,
    Service,
    StartupStep,
    Worker,
    load_settings,
    run,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INVALID_SETTINGS",
    "EXIT_OK",
    "Check",
    "ReadinessReport",
    "Runtime",
    "Service",
    "StartupStep",
    "Worker",
    "bind_correlation",
    "configure_logging",
    "current_correlation",
    "load_settings",
    "run",
]
