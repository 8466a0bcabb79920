"""The human-readable ``udpkit audit`` report: plain-text tables, one verdict a line.

Rule: a pure function of the :class:`~udpkit.core.audit_report.AuditReport`;
no colour, no terminal width, so the output can be pasted into an issue.
"""

from __future__ import annotations

from udpkit.core.audit_report import AuditReport, RampStepResult, SizeResult, format_factor


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _size_row(result: SizeResult) -> str:
    sent = f"{result.sent}" if result.send_error is None else f"{result.sent} ({result.send_error})"
    return (
        f"  {result.size:>6}  {sent:>6}  {result.replies:>7}  {result.reply_bytes:>11}  "
        f"{format_factor(result.byte_factor):>8}  {format_factor(result.packet_factor):>8}  "
        f"{format_factor(result.wire_factor):>8}  {_yes_no(result.within_rfc9000):>7}"
    )


def _input_line(label: str, result: SizeResult) -> str:
    if result.sent == 0:
        return f"  {label:<24} not sent ({result.send_error or 'skipped'})"
    line = f"  {label:<24} {result.sent} sent, "
    if not result.replies:
        return line + "no reply (dropped)"
    line += f"{result.replies} replies, {result.reply_bytes} bytes"
    if result.size:
        line += f" ({format_factor(result.byte_factor)})"
    if result.amplifies:
        line += "  AMPLIFIES"
    return line


def _ramp_row(step: RampStepResult) -> str:
    fraction = "-" if step.answered_fraction is None else f"{step.answered_fraction:.1%}"
    mark = "  limited" if step.limited else ""
    return (
        f"  {step.target_rate:>9.0f}  {step.achieved_rate:>10.0f}  {step.sent:>7}  "
        f"{step.replies:>7}  {fraction:>8}{mark}"
    )


def render_text(report: AuditReport) -> str:
    """The report as lines of text (no trailing newline)."""
    lines = [f"udpkit audit of {report.target} (UDP; wire factor counts "
             f"{report.header_bytes} header bytes per datagram)", ""]
    if report.sizes:
        lines += [
            "Request sizes",
            "    size    sent  replies  reply bytes   bytes x  dgrams x    wire x  <=3x ok",
            *(_size_row(result) for result in report.sizes),
            "",
        ]
    if report.empty is not None or report.oversize:
        lines.append("Unusual input")
        if report.empty is not None:
            lines.append(_input_line("empty datagram", report.empty))
        for result in report.oversize:
            lines.append(_input_line(f"oversized, {result.size} bytes", result))
        lines.append("")
    if report.ramp:
        lines += [
            f"Rate ramp (one source, {report.ramp_request_size}-byte requests)",
            "   target/s  achieved/s     sent  replies  answered",
            *(_ramp_row(step) for step in report.ramp),
            "",
        ]
    if report.max_byte_factor is not None:
        worst = "empty" if report.worst_size == 0 else f"{report.worst_size}-byte"
        lines.append(f"Worst bandwidth amplification: {format_factor(report.max_byte_factor)} "
                     f"with {worst} requests")
    lines.append("Verdicts")
    for verdict in report.verdicts:
        lines.append(f"  {verdict.rule}: {verdict.status.upper()}: {verdict.detail}")
    if report.notes:
        lines.append("Notes")
        lines += [f"  {note}" for note in report.notes]
    return "\n".join(lines)
