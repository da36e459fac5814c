"""Errors shared by the agent's modules."""


class Unavailable(RuntimeError):
    """An isolation level does not work on this machine (the message says why)."""
