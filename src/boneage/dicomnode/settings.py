"""The DICOM node's settings: one table, read from a YAML file and from the command line.

Every setting is defined once in :data:`SETTINGS` (name, parser, default, help). The command
line options are built from that table and a YAML file uses the same names, so each setting
can be given both ways and is checked by the same parser either way. When a setting is given
both ways the **command line wins**; whatever is given neither way takes its default.
:func:`resolve_settings` applies that rule for every caller (the node itself, ``--status``,
the tests), and :attr:`NodeSettings.sources` says where each value came from.

Paths in a config file are relative to the file's folder; on the command line, to the
working directory.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from boneage.errors import InputError

DEFAULT_AE_TITLE = "BONEAGE"
DEFAULT_PORT = 11112
COMMAND_LINE, CONFIG_FILE, DEFAULT = "command line", "config file", "default"

_DESTINATION_RE = re.compile(r"^(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@\[\]]+):(?P<port>\d+)$")


@dataclass(frozen=True)
class Destination:
    """Where results go: the AE title, host and port of a Storage SCP (usually the PACS)."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_ae_title(value: object) -> str:
    """An Application Entity title: 1-16 printable ASCII characters, no backslash; surrounding
    spaces are not significant (DICOM pads AE titles with spaces)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError("an AE title must not be empty")
    if len(text) > 16:
        raise ValueError(f"AE title {text!r} is longer than 16 characters")
    if "\\" in text or not all(32 <= ord(c) < 127 for c in text):
        raise ValueError(f"AE title {text!r} may hold printable ASCII characters only, no backslash")
    return text


def parse_ae_titles(value: object) -> tuple[str, ...]:
    """AE titles from ``"AE1,AE2"`` or a list; an empty value allows every calling AE."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None:
        raise ValueError(f"expected AE titles separated by commas or a list, got {value!r}")
    return tuple(dict.fromkeys(parse_ae_title(v) for v in items if str(v).strip()))


def parse_port(value: object) -> int:
    """A TCP port, 1-65535."""
    port = _whole(value, "a port number")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return port


def _listen_port(value: object) -> int:
    """A port to listen on: 1-65535, or 0 for any free one (the node logs which)."""
    port = _whole(value, "a port number")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return port


def parse_destination(value: object) -> Destination:
    """``AE@host:port`` (an IPv6 host in brackets: ``PACS@[::1]:104``)."""
    match = _DESTINATION_RE.match(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"destination must be AE@host:port (e.g. PACS@10.0.0.5:104), got {value!r}")
    return Destination(parse_ae_title(match["ae"]), match["host"].strip("[]"), parse_port(match["port"]))


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {value!r}")
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise ValueError(f"expected {what}, got {value!r}") from None
    if not float(number).is_integer():
        raise ValueError(f"expected {what}, got {value!r}")
    return int(number)


def _positive_int(value: object) -> int:
    number = _whole(value, "a whole number")
    if number < 1:
        raise ValueError(f"must be >= 1, got {number}")
    return number


def _number(minimum: float, unit: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number of {unit}, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of {unit}, got {value!r}") from None
        if not math.isfinite(number) or number < minimum:
            raise ValueError(f"must be a number of {unit} >= {minimum:g}, got {value!r}")
        return number
    return parse


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _host(value: object) -> str:
    text = str(value).strip() if value is not None else ""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected a host name or address, got {value!r}")
    return text


def _text(value: object) -> str:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError("must not be empty")
    return text


def _dpi(value: object) -> int:
    dpi = _whole(value, "dots per inch")
    if not 30 <= dpi <= 300:
        raise ValueError(f"must be 30-300 dots per inch, got {dpi}")
    return dpi


@dataclass(frozen=True)
class Setting:
    """One setting: its name (YAML key; ``--name-with-dashes`` on the command line)."""

    name: str
    parse: Callable[[object], object]
    default: object
    help: str
    metavar: str | None = None
    is_path: bool = False
    is_flag: bool = False
    default_text: str | None = None
    """How ``--help`` shows the default, when not as the value itself."""

    @property
    def option(self) -> str:
        """The command line option: ``--ae-title`` for ``ae_title``."""
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("ae_title", parse_ae_title, DEFAULT_AE_TITLE, "the node's own AE title (called AE title)", "AE"),
    Setting("host", _host, "127.0.0.1", "address to listen on (0.0.0.0: every interface)", "ADDRESS"),
    Setting("port", _listen_port, DEFAULT_PORT, "TCP port to listen on (0: any free one)", "PORT"),
    Setting("destination", parse_destination, None,
            "where results are sent by C-STORE, usually the PACS", "AE@HOST:PORT"),
    Setting("allow", parse_ae_titles, (),
            "calling AE titles allowed to associate, comma-separated", "AE,AE",
            default_text="any"),
    Setting("spool", _text, None, "folder where received instances wait until their results "
            "are acknowledged", "DIR", is_path=True),
    Setting("workers", _positive_int, 1, "worker processes assessing instances", "N"),
    Setting("threads", _positive_int, 1, "CPU threads per worker's model", "N"),
    Setting("model", _text, None, "model file", "FILE", is_path=True,
            default_text="the bundled model, as boneage predict uses"),
    Setting("force", _bool, False, "assess images the quality gate refuses, saying so in the SR "
            "(for tests and demonstrations; a non-radiograph SOP class or DICOM header is "
            "refused all the same)", is_flag=True),
    Setting("page_dpi", _dpi, 120, "resolution of the report page sent as Secondary Capture", "DPI"),
    Setting("min_free_mb", _number(0, "MiB"), 100.0,
            "refuse instances (status A700) while the spool's disk has less free space", "MIB"),
    Setting("timeout", _number(0.1, "seconds"), 30.0, "network, association and message timeout",
            "SECONDS"),
    Setting("retry_initial", _number(0.01, "seconds"), 2.0,
            "first wait before sending again to a destination that failed", "SECONDS"),
    Setting("retry_max", _number(0.01, "seconds"), 300.0, "longest wait between sending attempts",
            "SECONDS"),
    Setting("retry_hours", _number(0.0, "hours"), 72.0,
            "results still unsent this long after their first attempt are moved to failed", "HOURS"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class NodeSettings:
    """The resolved settings of one node (see :data:`SETTINGS` for their meaning)."""

    ae_title: str = DEFAULT_AE_TITLE
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    destination: Destination | None = None
    allow: tuple[str, ...] = ()
    spool: Path | None = None
    workers: int = 1
    threads: int = 1
    model: str | None = None
    force: bool = False
    page_dpi: int = 120
    min_free_mb: float = 100.0
    timeout: float = 30.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    retry_hours: float = 72.0
    sources: dict = field(default_factory=dict, compare=False)
    """Where each setting came from: ``"command line"``, ``"config file"`` or ``"default"``."""

    def require(self, *names: str) -> "NodeSettings":
        """Self, or a one-line InputError naming the first of ``names`` that has no value."""
        for name in names:
            if getattr(self, name) is None:
                s = _BY_NAME[name]
                raise InputError(f"no {name.replace('_', ' ')} given: pass {s.option} {s.metavar} "
                                 f"or set '{name}:' in the config file (--config)")
        return self

    def summary(self) -> str:
        """One PHI-free line of the settings that matter for operation, with their sources."""
        shown = ("ae_title", "host", "port", "destination", "allow", "spool", "workers", "force")
        parts = []
        for name in shown:
            value = getattr(self, name)
            if name == "allow":
                value = ",".join(value) or "any"
            parts.append(f"{name}={value} ({self.sources.get(name, DEFAULT)})")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        """Settings as plain values (paths and the destination as strings), e.g. for a worker."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            out[s.name] = list(value) if isinstance(value, tuple) else (
                None if value is None else str(value) if isinstance(value, (Path, Destination)) else value)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "NodeSettings":
        """Inverse of :meth:`to_dict` (values parsed again, so a bad one fails the same way)."""
        return resolve_settings(None, {k: v for k, v in values.items() if v is not None})


def load_config_file(path: str | Path) -> dict:
    """The settings of a YAML config file, keyed by setting name, unparsed.

    Raises:
        InputError: missing or unreadable file, not a YAML mapping, or an unknown key (with the
            closest known name).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read config file: {str(exc).splitlines()[0]}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("config file must be a YAML mapping of setting: value", path)
    for key in data:
        if str(key) not in _BY_NAME:
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown setting {key!r}{hint}; known: {', '.join(_BY_NAME)}", path)
    return {str(k): v for k, v in data.items()}


def resolve_settings(config: str | Path | None, given: dict | None = None) -> NodeSettings:
    """The node's settings: ``given`` (the command line's values, unparsed; None or absent
    means not given) beats the config file, which beats the defaults.

    Raises:
        InputError: a value that does not parse, named with where it came from
            (``--port: ...`` or ``node.yaml: port: ...``), or a bad config file.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(_BY_NAME))
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)}")
    from_file = load_config_file(config) if config is not None else {}
    base = Path(config).resolve().parent if config is not None else None
    values, sources = {}, {}
    for s in SETTINGS:
        if s.name in given:
            raw, where, source = given[s.name], s.option, COMMAND_LINE
        elif s.name in from_file and from_file[s.name] is not None:
            raw, where, source = from_file[s.name], f"{config}: {s.name}", CONFIG_FILE
        else:
            values[s.name], sources[s.name] = s.default, DEFAULT
            continue
        try:
            value = s.parse(raw)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}") from None
        if s.is_path:
            path = Path(str(value)).expanduser()
            value = path if source == COMMAND_LINE or path.is_absolute() else base / path
            value = value if s.name == "spool" else str(value)
        values[s.name], sources[s.name] = value, source
    return NodeSettings(**values, sources=sources)

