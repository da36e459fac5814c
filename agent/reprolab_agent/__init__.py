"""ReproLab node agent: pulls runs from a ReproLab site and executes them with papermill.

Django-free and small on purpose: it installs on a bare Colab runtime with pip.
"""

__version__ = "0.1.0"


def record(name: str, value: object) -> None:
    """Record a named value for reproduction checks (scrapbook `glue` format)."""
    from .record import record as _record

    _record(name, value)
