"""Read a policy YAML file into a `PolicyFile`, reporting every problem with its line.

The YAML is composed into nodes first (PyYAML keeps each node's position), turned into
plain data while recording `path -> line`, then validated by pydantic; each pydantic error
`loc` is mapped back through the recorded paths to `file:line: dotted.path: message`.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from consentry.errors import BadInput, Problem
from consentry.policy.model import PathError, PolicyDocument, PolicyFile
from consentry.settings import DEFAULT_POLICY_FILE

__all__ = ["default_policy_path", "load_policy", "parse_policy"]

YamlPath = tuple[str | int, ...]


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars.

    YAML 1.1 reads `NO` (Norway), `yes`, `on` and `off` as booleans and bare dates as
    timestamps; in a policy file those must stay text (region codes, instants that are
    checked for an offset), so only `true`/`false`, `null`, decimal ints and floats resolve.
    """

    # PyYAML keeps resolvers in this class-level table; an own empty one drops YAML 1.1's.
    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012


_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def default_policy_path() -> Path:
    """The shipped policy file (`consentry/policies/x-2024.yaml`, settings' default)."""
    return DEFAULT_POLICY_FILE


def load_policy(path: Path | str) -> PolicyFile:
    """Read and validate a policy file; BadInput lists every problem with its line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            Problem(location=str(path), row=None, field=None, message=f"cannot read: {exc}")
        ) from None
    return _parse_bytes(data, source=str(path))


def parse_policy(text: str, *, source: str) -> PolicyFile:
    """Validate policy YAML text; `source` names it in messages."""
    return _parse_bytes(text.encode("utf-8"), source=source)


def _parse_bytes(data: bytes, *, source: str) -> PolicyFile:
    """Turn file bytes into a PolicyFile.

    1. Decode UTF-8 and compose the YAML; a syntax error is a problem at its line.
    2. Build plain data, recording the line of every path; duplicate keys are problems.
    3. Validate with pydantic; each error becomes `source:line: path: message`.
    4. Sort versions by `effective_from` and hash the bytes.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            Problem(location=source, row=None, field=None, message=f"not UTF-8 text: {exc}")
        ) from None
    document, lines = _read_yaml(text, source)
    try:
        model = PolicyDocument.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(err, document, lines, source) for err in exc.errors()]
        raise BadInput(sorted(set(problems), key=lambda p: (p.row or 0, p.field or ""))) from None
    return PolicyFile(
        source=source,
        content_sha256=hashlib.sha256(data).hexdigest(),
        versions=sorted(model.versions, key=lambda v: v.effective_from),
        platform=model.platform,
    )


def _read_yaml(text: str, source: str) -> tuple[Any, dict[YamlPath, int]]:
    loader = _PolicyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise BadInput(
                Problem(source, None, None, "the file is empty; expected a mapping with 'versions'")
            )
        problems: list[Problem] = []
        lines: dict[YamlPath, int] = {(): node.start_mark.line + 1}
        data = _Builder(loader, source, lines, problems).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise BadInput(
            Problem(source, mark.line + 1 if mark else None, None, f"YAML: {message}")
        ) from None
    except yaml.YAMLError as exc:
        raise BadInput(Problem(source, None, None, f"YAML: {exc}")) from None
    finally:
        loader.dispose()
    if problems:
        raise BadInput(problems)
    return data, lines


class _Builder:
    """Turns composed YAML nodes into dicts, lists and scalars, recording each path's line."""

    def __init__(
        self,
        loader: _PolicyLoader,
        source: str,
        lines: dict[YamlPath, int],
        problems: list[Problem],
    ) -> None:
        self.loader = loader
        self.source = source
        self.lines = lines
        self.problems = problems
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        if id(node) in self.active:
            self._problem(node, path, "a YAML alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self._item(n, (*path, i)) for i, n in enumerate(node.value)]
            return self._scalar(node)
        finally:
            self.active.discard(id(node))

    def _item(self, node: yaml.Node, path: YamlPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        return self.build(node, path)

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or isinstance(key, list | dict):
                self._problem(key_node, path, "mapping keys must be plain text")
                continue
            if key in result:
                self._problem(key_node, (*path, key), "duplicate key")
                continue
            # The key's line, so `retention:` (not its first rule) is named for the block.
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == "tag:yaml.org,2002:float" and isinstance(node, yaml.ScalarNode):
            text = str(node.value).replace("_", "")
            # Decimal keeps money exact: 15000.10 stays 15000.10, not a binary float.
            return Decimal(text)
        return self.loader.construct_object(node)

    def _problem(self, node: yaml.Node, path: YamlPath, message: str) -> None:
        self.problems.append(
            Problem(self.source, node.start_mark.line + 1, _dotted(path) or None, message)
        )


def _dotted(path: YamlPath) -> str:
    """`("versions", 1, "purposes", 0, "default")` -> `versions[1].purposes[0].default`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_path(loc: tuple[int | str, ...], data: Any) -> YamlPath:
    """Keep the `loc` parts that name places in the data; drop pydantic's own tags.

    1. A key present in the current mapping or an index into the current list descends.
    2. A plain name absent from a mapping is a missing field: kept, and the walk stops.
    3. Anything else (`[key]`, `function-after[...]`) is pydantic's, not the file's.
    """
    path: list[str | int] = []
    current = data
    for part in loc:
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_mapping or in_list:
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and part.isidentifier():
            path.append(part)
            break
    return tuple(path)


def _line(path: YamlPath, lines: dict[YamlPath, int]) -> int | None:
    """The line of the deepest recorded prefix of `path`."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _problem(err: Any, data: Any, lines: dict[YamlPath, int], source: str) -> Problem:
    path = _data_path(tuple(err["loc"]), data)
    message = str(err["msg"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, PathError):
        path += cause.path
        message = str(cause)
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_fields(path[:-1])
        message = f"unknown field {path[-1]!r}" + (
            f"; expected one of: {', '.join(allowed)}" if allowed else ""
        )
    elif err["type"] == "missing":
        message = "required field is missing"
    return Problem(
        location=source, row=_line(path, lines), field=_dotted(path) or None, message=message
    )


def _allowed_fields(path: YamlPath) -> list[str]:
    """Field names of the model found at `path` in the schema (empty when not a model)."""
    current: Any = PolicyDocument
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return []
            current = _unwrap(info.annotation)
        else:
            current = _unwrap(current, container=True)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any, *, container: bool = False) -> Any:
    """Strip Optional; with `container`, step into a list item or a dict value."""
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if container and origin is list:
        return args[0]
    if container and origin is dict:
        return args[1]
    if origin is not None and origin not in (list, dict) and len(args) == 1:
        return args[0]
    return annotation
