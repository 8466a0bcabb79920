"""``udpkit audit`` as a library: how much does a UDP service amplify, how does
it take empty and oversized datagrams, and from what rate does it stop
answering one source?

Rule: :mod:`udpkit.audit.prober` only counts datagrams and bytes; the figures
and the RFC 8085 / RFC 9000 section 8.1 verdicts are the sans-IO
:mod:`udpkit.core.audit_report`.

``report = udpkit.audit.audit("127.0.0.1", 9999, quick=True)``
"""

from udpkit.audit.config import AuditConfig
from udpkit.audit.prober import audit, audit_async
from udpkit.audit.text import render_text
from udpkit.core.audit_report import AuditReport

__all__ = ["AuditConfig", "AuditReport", "audit", "audit_async", "render_text"]
