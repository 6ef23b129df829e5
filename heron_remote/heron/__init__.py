"""Heron's module paths, for Heron nodes run by heron_remote.

A Heron node ports by one rule: **in import statements only, the package ``Heron`` becomes
``heron_remote.heron``**::

    from Heron import general_utils as gu                 # before
    from heron_remote.heron import general_utils as gu    # after

Heron's editor imports every node's ``*_com.py`` into its own process to list the
operations, so these modules import quickly and do nothing at import: no sockets, threads,
logging handlers or signal handlers. The com the editor starts is a heron_remote com (its
heartbeat, start records, stop, tunnels and status) and the worker runs on heron_remote's
worker runtime.
"""
