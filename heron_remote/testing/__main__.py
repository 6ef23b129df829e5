"""``python -m heron_remote.testing SOCKET``: the control service of a docker-compose acquisition host."""

from .control import main

main()
