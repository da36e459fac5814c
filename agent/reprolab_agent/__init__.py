"""ReproLab node agent: pulls runs from a ReproLab site and executes them with papermill.

Django-free and small on purpose: it installs on a bare Colab runtime with pip.
"""

__version__ = "0.1.0"
