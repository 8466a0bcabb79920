"""The sans-IO core of udpkit.

Nothing below this package imports ``socket``, ``asyncio`` or ``time``: bytes
and the current time go in, decisions, bytes to send and the next deadline come
out.  The asyncio glue in :mod:`udpkit.server` and :mod:`udpkit.client` feeds
these modules and does the I/O, so every rule here is testable with a clock
driven by hand.
"""
