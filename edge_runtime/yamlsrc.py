"""YAML loading that remembers where every value came from, so config errors can say `FILE:LINE: path: why`.

Also resolves `${NAME}` references (environment, then `$CREDENTIALS_DIRECTORY/NAME` as systemd's
`LoadCredential=` provides) and `profile:` includes of device profiles. This is the only place config I/O happens;
the pydantic models validate plain data.

A config file is input from outside, so loading is bounded: at most `MAX_FILE_BYTES` are read, values nest at most
`MAX_DEPTH` deep, and at most `MAX_VALUES` values are produced, where a value reached through an alias (`*name`)
counts again at every use (so an anchor "bomb" stops after a few milliseconds instead of eating the machine). Events
come from libyaml's C parser when PyYAML has it; nodes are composed here, without recursion, so no input can reach
Python's recursion limit. Every problem becomes a `Problem`, never an exception.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_TOTAL_VALUES", "MAX_VALUES", "Located", "Problem", "load_located"]

MAX_FILE_BYTES = 1024 * 1024
"""Largest deployment file or device profile read (a real one is a few kB; a profile of 5,000 registers ~ 500 kB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists (a deployment needs about 8)."""
MAX_VALUES = 100_000
"""Most values (scalars, mappings, lists) one file may produce, counting a value reached through an alias at every
use (a profile of 5,000 registers has about 30,000)."""
MAX_TOTAL_VALUES = 500_000
"""Most values a deployment and all the device profiles it merges may produce together (a profile used by many
devices counts once per device; 50 devices with 1,000-tag profiles come to about 300,000)."""
MAX_CREDENTIAL_BYTES = 64 * 1024
"""Largest file read from `$CREDENTIALS_DIRECTORY` (a password, token or key)."""

Loc = tuple[str | int, ...]
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# what YAML allows in a stream (YAML 1.1 section 5.1): tab, line breaks, printable ASCII, NEL and the printable
# rest of Unicode; anything else (NUL, BEL, ESC, ...) is refused by the parser, so it is found and located here first
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# control characters are shown escaped in messages, so a key or value cannot forge a line of `validate` output
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\n\t]")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML was built with it
_RESOLVER: Any = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TOKEN_EDGE = "A-Za-z0-9"


@dataclass
class Located:
    """Plain data plus, for every path into it, the file and line it was written at."""

    data: Any
    where: dict[Loc, tuple[Path, int]] = field(default_factory=dict)
    file: Path = Path("<config>")
    secrets: set[str] = field(default_factory=set)  # values substituted from ${...}: redacted from every message
    substituted: dict[Loc, tuple[str, str]] = field(default_factory=dict)  # loc -> (value, value with *** for refs)
    _redactor: _Redactor | None = field(default=None, repr=False, compare=False)

    def redact(self, text: str, loc: Loc | None = None) -> str:
        """`text` without any value that came from `${...}`.

        Whole substituted values (as validators quote them back) become their redacted form, e.g.
        `rtsp://admin:***@cam`; secrets of 3 characters or more are replaced wherever they occur. A shorter secret
        would mangle ordinary words if replaced as a substring, so it is replaced where it stands quoted (`'ab'`,
        as pydantic and `repr` quote input values) anywhere, and as a whole token in the message of an error at
        `loc` when it was substituted at or under `loc` (everywhere when `loc` is None).
        """
        if not self.secrets:
            return text
        key = (len(self.secrets), len(self.substituted))
        if self._redactor is None or self._redactor.key != key:
            self._redactor = _Redactor.build(self, key)
        return self._redactor.apply(text, loc)

    def locate(self, loc: Loc) -> tuple[Path, int]:
        """The nearest recorded position for `loc` (walking up to the parent when a key is missing)."""
        for end in range(len(loc), -1, -1):
            hit = self.where.get(loc[:end])
            if hit is not None:
                return hit
        return (self.file, 1)


@dataclass
class _Redactor:
    """Located.redact's tables, built once per load: an error list can be long (one error per list item) and so
    can the list of substitutions (an alias of a `${...}` value substitutes at every use)."""

    key: tuple[int, int]
    everywhere: list[tuple[str, str]]  # needles of 3+ characters, longest first
    quoted: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]  # shorter needles, where quoted
    tokens: dict[str, re.Pattern[str]]  # short secret -> its whole-token pattern
    under: dict[str, set[Loc]]  # short secret -> every loc at or above a place it was substituted

    @classmethod
    def build(cls, located: Located, key: tuple[int, int]) -> _Redactor:
        pairs: set[tuple[str, str]] = set()
        for value, shown in set(located.substituted.values()):
            pairs |= {(value, shown), (_repr_inner(value), _repr_inner(shown))}
        for secret in located.secrets:
            pairs |= {(secret, "***"), (_repr_inner(secret), "***")}
        ordered = sorted((p for p in pairs if p[0] and p[0] != p[1]), key=lambda p: len(p[0]), reverse=True)
        short = {s for s in located.secrets if 0 < len(s) < 3}
        under: dict[str, set[Loc]] = {s: set() for s in short}
        for where, (value, _) in located.substituted.items():
            for secret in short:
                if secret in value:
                    under[secret].update(where[:end] for end in range(len(where) + 1))
        return cls(
            key=key,
            everywhere=[p for p in ordered if len(p[0]) >= 3],
            quoted=[
                (re.compile(f"(['\"]){re.escape(needle)}\\1"), _quoted(replacement))
                for needle, replacement in ordered
                if len(needle) < 3
            ],
            tokens={
                s: re.compile(
                    "|".join(f"(?<![{_TOKEN_EDGE}]){re.escape(f)}(?![{_TOKEN_EDGE}])" for f in {s, _repr_inner(s)})
                )
                for s in sorted(short, key=len, reverse=True)
            },
            under=under,
        )

    def apply(self, text: str, loc: Loc | None) -> str:
        for needle, replacement in self.everywhere:
            text = text.replace(needle, replacement)
        for pattern, replace in self.quoted:
            text = pattern.sub(replace, text)
        for secret, pattern in self.tokens.items():
            if loc is None or loc in self.under[secret]:
                text = pattern.sub("***", text)
        return text


def _mark(mark: Any) -> Any:
    return mark  # libyaml's Mark and PyYAML's have the same line and column


def _quoted(replacement: str) -> Callable[[re.Match[str]], str]:
    return lambda m: f"{m[1]}{replacement}{m[1]}"


def _repr_inner(text: str) -> str:
    return repr(text)[1:-1]


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


@dataclass
class Problem:
    """One thing wrong with a file, located: printed as `FILE:LINE: path: why` (a value, not an exception;
    `ConfigError` carries a list of them)."""

    file: Path
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {_printable(self.path)}: {_printable(self.message)}"


class _Abort(Exception):
    """The file cannot be read further (too big, too deep, an alias bomb, broken YAML): one error ends it."""

    def __init__(self, error: Problem) -> None:
        super().__init__(str(error))
        self.error = error


def _path(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "<root>"


def _read_text(file: Path) -> str:
    try:
        with file.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Abort(Problem(file, 1, "<file>", f"cannot read: {exc.strerror or exc}")) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise _Abort(Problem(file, 1, "<file>", f"larger than {MAX_FILE_BYTES // 1024**2} MiB: is this a config file?"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _Abort(Problem(file, line, "<file>", "not UTF-8 text: save the file as UTF-8")) from exc
    text = text.removeprefix("\ufeff")
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise _Abort(
            Problem(file, line, "<file>", f"control character U+{ord(bad[0]):04X} at column {column}: remove it")
        )
    return text


def _compose(text: str, file: Path) -> yaml.Node | None:
    """The document's node graph, built from parser events with an explicit stack (no recursion). Aliases point at
    their anchor's node; an alias inside its own anchor (a cycle) and nesting deeper than MAX_DEPTH are refused."""
    anchors: dict[str, yaml.Node] = {}
    open_nodes: list[tuple[yaml.Node, list[yaml.Node]]] = []
    on_stack: set[int] = set()
    root: yaml.Node | None = None
    documents = 0

    def fail(event: Any, why: str) -> _Abort:
        return _Abort(Problem(file, event.start_mark.line + 1, "<yaml>", why))

    def add(node: yaml.Node) -> None:
        nonlocal root
        if open_nodes:
            open_nodes[-1][1].append(node)
        else:
            root = node

    def anchor(event: Any, node: yaml.Node) -> None:
        if event.anchor is not None:
            if event.anchor in anchors:
                first = anchors[event.anchor].start_mark.line + 1
                raise fail(event, f"anchor &{event.anchor} is defined twice (first at line {first})")
            anchors[event.anchor] = node

    try:
        events: Any = yaml.parse(text, Loader=_LOADER)  # libyaml's marks and PyYAML's, alike for our use
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise fail(event, "more than one YAML document (---): a file holds one document")
            elif isinstance(event, yaml.AliasEvent):
                target = anchors.get(event.anchor or "")
                if target is None:
                    raise fail(event, f"alias *{event.anchor} names no anchor defined before it")
                if id(target) in on_stack:
                    raise fail(event, f"alias *{event.anchor} is inside its own anchor (a recursive anchor)")
                add(target)
            elif isinstance(event, yaml.ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
                node: yaml.Node = yaml.ScalarNode(
                    tag, event.value, _mark(event.start_mark), _mark(event.end_mark), event.style
                )
                anchor(event, node)
                add(node)
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise fail(event, f"nested deeper than {MAX_DEPTH} levels")
                kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = _RESOLVER.resolve(kind, None, event.implicit)
                node = kind(tag, [], _mark(event.start_mark), None, event.flow_style)
                anchor(event, node)
                open_nodes.append((node, []))
                on_stack.add(id(node))
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                node, children = open_nodes.pop()
                on_stack.discard(id(node))
                node.end_mark = _mark(event.end_mark)
                node.value = (
                    children
                    if isinstance(node, yaml.SequenceNode)
                    else list(zip(children[0::2], children[1::2], strict=True))
                )
                add(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        why = exc.problem or exc.context or "not valid YAML"
        raise _Abort(Problem(file, (mark.line + 1) if mark else 1, "<yaml>", why)) from exc
    except yaml.YAMLError as exc:  # e.g. a ReaderError the check in _read_text did not foresee
        raise _Abort(Problem(file, 1, "<yaml>", (str(exc).splitlines() or ["unreadable YAML"])[0])) from exc
    return root


@dataclass
class _Load:
    """What one load_located() shares between the deployment and its profiles: each profile file is read and
    parsed once however many devices use it, and all values count against MAX_TOTAL_VALUES."""

    located: Located
    errors: list[Problem]
    values: int = 0
    profiles: dict[Path, yaml.Node | None] = field(default_factory=dict)
    unreadable: set[Path] = field(default_factory=set)  # profiles whose error is already reported


@dataclass
class _Converter:
    """Nodes to plain data, recording each value's line; counts values (aliases at every use) against MAX_VALUES
    for this file and MAX_TOTAL_VALUES for the whole load."""

    file: Path
    where: dict[Loc, tuple[Path, int]]
    load: _Load
    values: int = 0

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        self.values += 1
        self.load.values += 1
        if self.values > MAX_VALUES:
            raise _Abort(
                Problem(
                    self.file,
                    line,
                    _path(loc),
                    f"more than {MAX_VALUES} values (a value reached through an alias counts at each use)",
                )
            )
        if self.load.values > MAX_TOTAL_VALUES:
            raise _Abort(
                Problem(
                    self.file,
                    line,
                    _path(loc),
                    f"more than {MAX_TOTAL_VALUES} values in the deployment and its profiles together "
                    "(a profile counts once per device that uses it)",
                )
            )
        if len(loc) > MAX_DEPTH:
            raise _Abort(Problem(self.file, line, _path(loc), f"nested deeper than {MAX_DEPTH} levels"))
        self.where[loc] = (self.file, line)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                return self._unsupported(node, loc)
            out: dict[str, Any] = {}
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    self.load.errors.append(
                        Problem(
                            self.file, key_line, _path(loc), "YAML merge keys (<<) are not supported: write keys out"
                        )
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.load.errors.append(
                        Problem(self.file, key_line, _path(loc), "a key must be a plain value, not a list or mapping")
                    )
                    continue
                key = self._scalar(key_node, loc)
                key = key if isinstance(key, str) else str(key)
                if key in first:
                    self.load.errors.append(
                        Problem(self.file, key_line, _path((*loc, key)), f"duplicate key (first at line {first[key]})")
                    )
                    continue
                first[key] = key_line
                out[key] = self.convert(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                return self._unsupported(node, loc)
            return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self._scalar(node, loc)
        if isinstance(value, str) and "${" in value:
            value = self._substitute(value, line, loc)
        return value

    def _unsupported(self, node: yaml.Node, loc: Loc) -> None:
        self.load.errors.append(
            Problem(
                self.file,
                node.start_mark.line + 1,
                _path(loc),
                f"cannot read this value: could not determine a constructor for the tag {node.tag!r}",
            )
        )
        return None

    def _scalar(self, node: yaml.Node, loc: Loc) -> Any:
        if node.tag not in _SCALAR_TAGS:
            return self._unsupported(node, loc)
        try:
            return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        except Exception as exc:  # PyYAML's constructors fail in many ways on values they do not expect:
            # `2024-13-45` (implicitly a date), `!!int x`, `!!int` with no value, 5,000 digits, bad `!!binary`
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            short = node.tag.rsplit(":", 1)[-1]
            self.load.errors.append(
                Problem(
                    self.file, node.start_mark.line + 1, _path(loc), f"cannot read this value as {short}: {problem}"
                )
            )
            return None

    def _substitute(self, text: str, line: int, loc: Loc) -> str:
        def value_of(match: re.Match[str]) -> str:
            value, why = _secret_lookup(match.group(1))
            if value is None:
                self.load.errors.append(Problem(self.file, line, _path(loc), why))
                return ""
            self.load.located.secrets.add(value)
            return value

        value = _REF.sub(value_of, text)
        if value != text:
            self.load.located.substituted[loc] = (value, _REF.sub("***", text))
        return value


def _secret_lookup(name: str) -> tuple[str | None, str]:
    """The value of `${name}`, or None and why not (never the content of a file that could not be used)."""
    if name in os.environ:
        return os.environ[name], ""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / name
        if path.is_file():
            where = f"${{{name}}}: $CREDENTIALS_DIRECTORY/{name}"
            try:
                with path.open("rb") as fh:
                    raw = fh.read(MAX_CREDENTIAL_BYTES + 1)
            except OSError as exc:
                return None, f"{where} cannot be read: {exc.strerror or exc}"
            if len(raw) > MAX_CREDENTIAL_BYTES:
                return None, f"{where} is larger than {MAX_CREDENTIAL_BYTES // 1024} KiB"
            try:
                return raw.decode("utf-8").rstrip("\n"), ""
            except UnicodeDecodeError:
                return None, f"{where} is not UTF-8 text"
    return None, f"${{{name}}} is neither an environment variable nor a file in $CREDENTIALS_DIRECTORY"


def _load(file: Path, prefix: Loc, where: dict[Loc, tuple[Path, int]], load: _Load, *, cached: bool = False) -> Any:
    """Read, parse and convert one file (raises _Abort for a problem that ends it). `cached`: parse a profile once
    per load, however many devices name it."""
    # the node graph has no cycles, and the cyclic collector, run again and again over a growing heap of nodes,
    # would take two thirds of the time of a large file
    collecting = gc.isenabled()
    gc.disable()
    try:
        if cached and file in load.profiles:
            node = load.profiles[file]
        else:
            node = _compose(_read_text(file), file)
            if cached:
                load.profiles[file] = node
        return None if node is None else _Converter(file, where, load).convert(node, prefix)
    finally:
        if collecting:
            gc.enable()


def load_located(file: Path, *, profile_dirs: tuple[Path, ...] = ()) -> tuple[Located, list[Problem]]:
    """Read a deployment file. Device entries with `profile:` get the profile's keys merged under them."""
    located = Located(data=None, file=file)
    load = _Load(located, [])
    try:
        located.data = _load(file, (), located.where, load)
    except _Abort as exc:
        located.data = None
        return located, [exc.error]
    if located.data is None and not load.errors and not located.where:
        return located, [Problem(file, 1, "<file>", "the file is empty")]
    devices = located.data.get("devices") if isinstance(located.data, dict) else None
    if isinstance(devices, list):
        for i, entry in enumerate(devices):
            if isinstance(entry, dict) and "profile" in entry:
                try:
                    _merge_profile(load, i, entry, file, profile_dirs)
                except _Abort as exc:  # the whole load is over budget: one error, not one per device
                    return located, [*load.errors, exc.error]
    return located, load.errors


def resolve_profile(name: str, base: Path, profile_dirs: tuple[Path, ...]) -> Path | None:
    for directory in (base, *profile_dirs):
        try:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a name with a NUL byte, or too long for the file system
            continue
    return None


def _merge_profile(load: _Load, index: int, entry: dict[str, Any], file: Path, profile_dirs: tuple[Path, ...]) -> None:
    located, errors = load.located, load.errors
    loc: Loc = ("devices", index, "profile")
    line = located.where[loc][1]
    name = entry.pop("profile")
    path = resolve_profile(name, file.parent, profile_dirs) if isinstance(name, str) else None
    if path is None:
        # the name may come from ${...}: a secret never shows, even in this message
        why = located.redact(f"device profile '{name}' not found", loc)
        errors.append(Problem(file, line, f"devices.{index}.profile", why))
        return
    if path in load.unreadable:
        return  # reported at the first device that uses it
    prof_where: dict[Loc, tuple[Path, int]] = {}
    try:
        profile = _load(path, ("devices", index), prof_where, load, cached=True)
    except _Abort as exc:
        if load.values > MAX_TOTAL_VALUES:
            raise
        load.unreadable.add(path)
        errors.append(exc.error)
        return
    if not isinstance(profile, dict):
        load.unreadable.add(path)
        errors.append(Problem(path, 1, "<profile>", "a device profile must be a mapping"))
        return
    for key, value in profile.items():
        if key not in entry:
            entry[key] = value
            for sub, pos in prof_where.items():
                if sub[:3] == ("devices", index, key):
                    located.where[sub] = pos
