"""Defaults the command line shows in its help, in a module that imports nothing (`gangeo -h` stays cheap).

Example::

    from cluster.defaults import DEFAULT_STORE   # "./gangeo-results"
"""

__all__ = ["DEFAULT_STORE"]

DEFAULT_STORE = "./gangeo-results"  # the store a command opens without --store
