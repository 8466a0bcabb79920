"""A UDP flooder for the attack tests: one source, full speed, bounded in time.

Usage: flood.py SOURCE_IP TARGET_IP PORT SECONDS.  Sends 16-byte datagrams
as fast as one blocking socket can, stops after SECONDS, prints the count.
Only ever run against loopback addresses.
"""

import ipaddress
import socket
import sys
import time

source, target, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
assert ipaddress.ip_address(target).is_loopback, "the flooder only targets loopback"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 0))
payload = b"flood-0123456789"[:16]
sent = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(1000):
        try:
            sock.sendto(payload, (target, port))
            sent += 1
        except OSError:
            pass
print(sent, flush=True)
