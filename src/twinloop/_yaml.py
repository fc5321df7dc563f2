"""Reading YAML specs safely: size and alias limits, and errors that never echo the file.

A leaf module like ``_config``. ``load_yaml`` refuses a file over
:data:`MAX_BYTES`, a document with more than :data:`MAX_ALIASES` aliases or one
that would expand to more than :data:`MAX_NODES` nodes (an alias bomb), and any
YAML that is not a mapping at the top. Its errors name the file, the line and the
problem, never the file's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinloop.errors import InputError

MAX_BYTES = 1 << 20
MAX_ALIASES = 64
MAX_NODES = 200_000


def load_yaml(path: str | Path, what: str = "a YAML file") -> dict[str, Any]:
    """The mapping in the YAML file ``path``; :class:`InputError` if it is missing, too
    large, not YAML, an alias bomb or not a mapping."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"'{file}' does not exist; give the path of {what}.")
    if file.stat().st_size > MAX_BYTES:
        raise InputError(
            f"'{file}' is {file.stat().st_size} bytes; {what} may hold at most {MAX_BYTES} bytes. Split or shorten it."
        )
    try:
        text = file.read_bytes()[: MAX_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"'{file}' is not UTF-8 text; give the path of {what}.") from None
    raw = parse_yaml(text, str(file))
    if not isinstance(raw, dict):
        raise InputError(
            f"'{file}' must hold a YAML mapping (key: value lines) at the top; it holds {_kind(raw)}. "
            f"Give the path of {what}."
        )
    return raw


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as plain data, with the limits of :func:`load_yaml`."""
    import yaml

    if len(text) > MAX_BYTES:
        raise InputError(f"{where} is longer than {MAX_BYTES} characters; shorten it.")
    try:
        loader = _loader()(text)  # the reader refuses control characters here
    except yaml.YAMLError:
        raise InputError(
            f"{where} is not valid YAML: it holds a control character YAML does not allow; fix the file."
        ) from None
    loader.where = where
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError, AttributeError, OverflowError):  # e.g. !!float x, a date of month 13
            raise InputError(
                f"{where} holds a value YAML cannot build (a tag such as !!float on text, or a date that does not "
                "exist); quote the value or fix it."
            ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise InputError(f"{where} is not valid YAML ({at}: {err.problem or err.context}); fix the file.") from None
    except yaml.YAMLError:
        raise InputError(f"{where} is not valid YAML; fix the file.") from None
    except RecursionError:
        raise InputError(f"{where} is nested too deeply to read; flatten it.") from None
    finally:
        loader.dispose()


def _loader() -> Any:
    """A ``SafeLoader`` that counts aliases as it composes the document."""
    import yaml

    class CountingLoader(yaml.SafeLoader):
        aliases = 0
        where = ""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise InputError(
                        f"{self.where} uses more than {MAX_ALIASES} YAML aliases (*name); write the values out instead."
                    )
            return super().compose_node(parent, index)

    return CountingLoader


def _check_expansion(root: Any, where: str) -> None:
    """Refuse a document whose aliases would expand it past :data:`MAX_NODES` nodes."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a node reached again while sizing it (a cycle) counts once
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        sizes[id(node)] = total = min(total, MAX_NODES + 1)
        return total

    if size(root) > MAX_NODES:
        raise InputError(
            f"{where} would expand to more than {MAX_NODES} values through its YAML aliases (an alias bomb); "
            "write the values out instead."
        )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {str: "text", list: "a list", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
