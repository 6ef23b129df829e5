"""The SSH layer: server registry, tunnel manager and remote launcher (to come).

Remote workers reuse the core unchanged: a remote launcher subclasses
:class:`heron_remote.launcher.WorkerLauncher` and maps the worker's loopback ports to
local forwards in :meth:`~heron_remote.launcher.WorkerLauncher.address`.
"""
