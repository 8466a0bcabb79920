"""Toxiproxy's proxies as JSON, sans-IO: request bodies in, checked specs out, and back.

Rule: every body of Toxiproxy's API and every entry of a ``--config`` file is
untrusted JSON and is checked here once; a mistake is a
:class:`~udpkit.core.toxics.ToxicError` with Toxiproxy's status and wording
(``missing required field: name``, 400).  udpkit's one addition is ``protocol``:
``"tcp"`` (the default, so Toxiproxy's clients get Toxiproxy's behaviour),
``"udp"``, or ``"both"`` (UDP and TCP on the same port).  A config-file entry
may also carry ``toxics`` (a list of toxic bodies).

Also here: the Prometheus text exposition of the proxies' counters (pure text
from numbers, so ``/metrics`` needs no package).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

from udpkit.core.addresses import parse_host_port
from udpkit.core.errors import UsageError
from udpkit.core.toxics import BAD_BODY, Toxic, ToxicError, toxic_from_json

ProxyProtocol: TypeAlias = Literal["tcp", "udp", "both"]
PROTOCOLS: tuple[ProxyProtocol, ...] = ("tcp", "udp", "both")

MISSING_FIELD = "missing required field"
PROXY_NOT_FOUND = "proxy not found"
PROXY_EXISTS = "proxy already exists"
MAX_NAME = 200
"""Characters of a proxy or toxic name."""
MAX_PROXIES = 256
"""Proxies one process serves; one more is a 400 (each holds sockets)."""
MAX_TOXICS = 32
"""Toxics per proxy."""


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One named proxy, as created: Toxiproxy's fields plus ``protocol``."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    protocol: ProxyProtocol = "tcp"
    toxics: tuple[Toxic, ...] = field(default=())
    """Toxics to add at creation (config file only)."""

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def upstream_address(self) -> tuple[str, int]:
        return parse_host_port(self.upstream, allow_zero=False)

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("tcp", "udp") if self.protocol == "both" else (self.protocol,)


def _check_address(what: str, text: object, *, allow_zero: bool) -> str:
    if not isinstance(text, str):
        raise ToxicError(f"{BAD_BODY}: {what} must be a string")
    try:
        parse_host_port(text, allow_zero=allow_zero)
    except UsageError as exc:
        raise ToxicError(f"{BAD_BODY}: {what}: {exc}") from None
    return text


def _check_name(name: object, where: str = "") -> str:
    if not isinstance(name, str) or not name:
        raise ToxicError(f"{MISSING_FIELD}: name{where}")
    if len(name) > MAX_NAME or "/" in name or not name.isprintable():
        raise ToxicError(f"{BAD_BODY}: name must be printable, without '/', at most "
                         f"{MAX_NAME} characters")
    return name


def proxy_from_json(obj: object, *, index: int | None = None,
                    allow_toxics: bool = False) -> ProxySpec:
    """A proxy from ``POST /proxies`` (or entry ``index`` of ``/populate``), or with
    ``allow_toxics`` an entry of a config file.

    An empty ``listen`` is ``127.0.0.1:0`` (Toxiproxy: any port on every address).  As
    Toxiproxy's JSON decoding, an API body's other fields are ignored, ``toxics``
    included (Toxiproxy's Go client sends its proxy whole); a config file's are
    checked strictly, and its ``toxics`` are created with the proxy.
    """
    where = f" at proxy {index + 1}" if index is not None else ""
    if not isinstance(obj, dict):
        raise ToxicError(f"{BAD_BODY}: a proxy must be a JSON object{where}")
    unknown = set(obj) - {"name", "listen", "upstream", "enabled", "protocol", "toxics"}
    if unknown and allow_toxics:
        raise ToxicError(f"{BAD_BODY}: unknown field(s) {sorted(unknown)[:5]}{where}")
    name = _check_name(obj.get("name"), where)
    upstream = obj.get("upstream")
    if not isinstance(upstream, str) or not upstream:
        raise ToxicError(f"{MISSING_FIELD}: upstream{where}")
    _check_address("upstream", upstream, allow_zero=False)
    listen = obj.get("listen") or "127.0.0.1:0"
    _check_address("listen", listen, allow_zero=True)
    enabled = obj.get("enabled", True)
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise ToxicError(f"{BAD_BODY}: enabled must be true or false{where}")
    protocol = obj.get("protocol", "tcp")
    if protocol not in PROTOCOLS:
        raise ToxicError(f"{BAD_BODY}: protocol must be one of {', '.join(PROTOCOLS)}{where}")
    spec = ProxySpec(name=name, listen=str(listen), upstream=upstream, enabled=enabled,
                     protocol=protocol)
    if not allow_toxics:
        return spec
    toxics = obj.get("toxics", [])
    if not isinstance(toxics, list) or len(toxics) > MAX_TOXICS:
        raise ToxicError(f"{BAD_BODY}: toxics must be a list of at most {MAX_TOXICS}{where}")
    parsed: list[Toxic] = []
    for entry in toxics:
        toxic = toxic_from_json(entry, protocols=spec.protocols, strict=True)
        if any(t.name == toxic.name for t in parsed):
            raise ToxicError(f"toxic already exists: {toxic.name}{where}", 409)
        parsed.append(toxic)
    return replace(spec, toxics=tuple(parsed))


def proxy_update(spec: ProxySpec, obj: object) -> ProxySpec:
    """``spec`` changed by ``POST/PATCH /proxies/{name}``: fields not given stay, others
    (``name``, ``toxics``: Toxiproxy's Go client sends its proxy whole) are ignored."""
    if not isinstance(obj, dict):
        raise ToxicError(f"{BAD_BODY}: a proxy must be a JSON object")
    listen = obj.get("listen", spec.listen) or spec.listen
    upstream = obj.get("upstream", spec.upstream) or spec.upstream
    enabled = obj.get("enabled", spec.enabled)
    protocol = obj.get("protocol", spec.protocol)
    if enabled is None:
        enabled = spec.enabled
    if not isinstance(enabled, bool):
        raise ToxicError(f"{BAD_BODY}: enabled must be true or false")
    if protocol not in PROTOCOLS:
        raise ToxicError(f"{BAD_BODY}: protocol must be one of {', '.join(PROTOCOLS)}")
    return replace(spec, listen=_check_address("listen", listen, allow_zero=True),
                   upstream=_check_address("upstream", upstream, allow_zero=False),
                   enabled=enabled, protocol=protocol)


def proxies_from_json(obj: object, *, allow_toxics: bool) -> list[ProxySpec]:
    """The list of ``/populate`` or of a config file, all checked before any is used."""
    if not isinstance(obj, list):
        raise ToxicError(f"{BAD_BODY}: expected a list of proxies")
    if len(obj) > MAX_PROXIES:
        raise ToxicError(f"{BAD_BODY}: more than {MAX_PROXIES} proxies")
    specs = [proxy_from_json(entry, index=index, allow_toxics=allow_toxics)
             for index, entry in enumerate(obj)]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ToxicError(f"{BAD_BODY}: a proxy name appears twice")
    return specs


def load_json_untrusted(body: bytes) -> object:
    """A request body as JSON; :class:`ToxicError` (400) for anything ``json`` refuses."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ToxicError(f"{BAD_BODY}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of too many digits
        raise ToxicError(f"{BAD_BODY}: {str(exc)[:200]}") from None


def config_from_text(text: str) -> list[ProxySpec]:
    """A ``--config`` file: Toxiproxy's list of proxies, each optionally with ``protocol``
    and ``toxics``; :class:`UsageError` saying what is wrong."""
    try:
        return proxies_from_json(load_json_untrusted(text.encode()), allow_toxics=True)
    except ToxicError as exc:
        raise UsageError(f"config: {exc.message}") from None


def proxy_json(spec: ProxySpec, listen: str, toxics: Iterable[Toxic]) -> dict[str, object]:
    """Toxiproxy's proxy object (``listen`` as bound), with udpkit's ``protocol``."""
    return {
        "name": spec.name,
        "listen": listen,
        "upstream": spec.upstream,
        "enabled": spec.enabled,
        "protocol": spec.protocol,
        "toxics": [toxic.as_json() for toxic in toxics],
    }


def error_json(error: ToxicError) -> dict[str, object]:
    """Toxiproxy's error body."""
    return {"error": error.message, "status": error.status}


# --------------------------------------------------------------------------- Prometheus

Labels: TypeAlias = Mapping[str, str]
Sample: TypeAlias = tuple[Labels, float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(families: Iterable[tuple[str, str, str, Iterable[Sample]]]) -> str:
    """The text exposition format (version 0.0.4) of ``(name, type, help, samples)``."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
            raise ValueError(f"bad metric name {name!r}")
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            number = repr(float(value)) if not math.isfinite(value) or value != int(value) \
                else str(int(value))
            lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"
