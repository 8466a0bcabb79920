"""``python -m udpkit``: the same as the ``udpkit`` command."""

from udpkit.cli import main

main()
