"""YAML loading that remembers where every value came from, so config errors can say `FILE:LINE: path: why`.

Also resolves `${NAME}` references (environment, then `$CREDENTIALS_DIRECTORY/NAME` as systemd's
`LoadCredential=` provides) and `profile:` includes of device profiles. This is the only place config I/O happens;
the pydantic models validate plain data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Located", "SourceError", "load_located"]

Loc = tuple[str | int, ...]
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Located:
    """Plain data plus, for every path into it, the file and line it was written at."""

    data: Any
    where: dict[Loc, tuple[Path, int]] = field(default_factory=dict)
    file: Path = Path("<config>")
    secrets: set[str] = field(default_factory=set)  # values substituted from ${...}: redacted from every message

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def locate(self, loc: Loc) -> tuple[Path, int]:
        """The nearest recorded position for `loc` (walking up to the parent when a key is missing)."""
        for end in range(len(loc), -1, -1):
            hit = self.where.get(loc[:end])
            if hit is not None:
                return hit
        return (self.file, 1)


@dataclass
class SourceError:
    file: Path
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


def _convert(
    node: yaml.Node,
    file: Path,
    loc: Loc,
    where: dict[Loc, tuple[Path, int]],
    errors: list[SourceError],
    secrets: set[str],
) -> Any:
    line = node.start_mark.line + 1
    where[loc] = (file, line)
    path = ".".join(map(str, loc)) or "<root>"
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                errors.append(
                    SourceError(file, key_line, path, "YAML merge keys (<<) are not supported: write keys out")
                )
                continue
            key = _scalar(key_node, file, path, errors)
            key = key if isinstance(key, str) else str(key)
            if key in first:
                errors.append(
                    SourceError(
                        file, key_line, ".".join(map(str, (*loc, key))), f"duplicate key (first at line {first[key]})"
                    )
                )
                continue
            first[key] = key_line
            out[key] = _convert(value_node, file, (*loc, key), where, errors, secrets)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, file, (*loc, i), where, errors, secrets) for i, item in enumerate(node.value)]
    value = _scalar(node, file, path, errors)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, file, line, loc, errors, secrets)
    return value


def _scalar(node: yaml.Node, file: Path, path: str, errors: list[SourceError]) -> Any:
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:  # e.g. a custom tag such as `!env X`
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        errors.append(SourceError(file, node.start_mark.line + 1, path, f"cannot read this value: {problem}"))
        return None


def _secret_lookup(name: str) -> str | None:
    if name in os.environ:
        return os.environ[name]
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / name
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\n")
    return None


def _substitute(text: str, file: Path, line: int, loc: Loc, errors: list[SourceError], secrets: set[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        value = _secret_lookup(match.group(1))
        if value is not None:
            secrets.add(value)
        if value is None:
            errors.append(
                SourceError(
                    file,
                    line,
                    ".".join(map(str, loc)),
                    f"${{{match.group(1)}}} is neither an environment variable nor a file in $CREDENTIALS_DIRECTORY",
                )
            )
            return ""
        return value

    return _REF.sub(repl, text)


def _compose(file: Path) -> yaml.Node | None:
    with file.open(encoding="utf-8") as fh:
        return yaml.compose(fh, Loader=yaml.SafeLoader)


def load_located(file: Path, *, profile_dirs: tuple[Path, ...] = ()) -> tuple[Located, list[SourceError]]:
    """Read a deployment file. Device entries with `profile:` get the profile's keys merged under them."""
    errors: list[SourceError] = []
    located = Located(data=None, file=file)
    try:
        node = _compose(file)
    except OSError as exc:
        return located, [SourceError(file, 1, "<file>", f"cannot read: {exc.strerror or exc}")]
    except UnicodeDecodeError:
        return located, [SourceError(file, 1, "<file>", "not UTF-8 text: save the file as UTF-8")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return located, [SourceError(file, (mark.line + 1) if mark else 1, "<yaml>", str(exc.problem))]
    if node is None:
        return located, [SourceError(file, 1, "<file>", "the file is empty")]
    located.data = _convert(node, file, (), located.where, errors, located.secrets)
    devices = located.data.get("devices") if isinstance(located.data, dict) else None
    if isinstance(devices, list):
        for i, entry in enumerate(devices):
            if isinstance(entry, dict) and "profile" in entry:
                _merge_profile(located, i, entry, file, profile_dirs, errors)
    return located, errors


def resolve_profile(name: str, base: Path, profile_dirs: tuple[Path, ...]) -> Path | None:
    for directory in (base, *profile_dirs):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _merge_profile(
    located: Located,
    index: int,
    entry: dict[str, Any],
    file: Path,
    profile_dirs: tuple[Path, ...],
    errors: list[SourceError],
) -> None:
    loc: Loc = ("devices", index, "profile")
    line = located.where[loc][1]
    name = entry.pop("profile")
    path = resolve_profile(str(name), file.parent, profile_dirs) if isinstance(name, str) else None
    if path is None:
        errors.append(SourceError(file, line, f"devices.{index}.profile", f"device profile '{name}' not found"))
        return
    try:
        node = _compose(path)
    except UnicodeDecodeError:
        errors.append(SourceError(path, 1, "<file>", "not UTF-8 text: save the file as UTF-8"))
        return
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        errors.append(SourceError(path, (mark.line + 1) if mark else 1, "<yaml>", str(exc.problem)))
        return
    if node is None or not isinstance(node, yaml.MappingNode):
        errors.append(SourceError(path, 1, "<profile>", "a device profile must be a mapping"))
        return
    prof_where: dict[Loc, tuple[Path, int]] = {}
    profile = _convert(node, path, ("devices", index), prof_where, errors, located.secrets)
    for key, value in profile.items():
        if key not in entry:
            entry[key] = value
            for sub, pos in prof_where.items():
                if sub[:3] == ("devices", index, key):
                    located.where[sub] = pos
