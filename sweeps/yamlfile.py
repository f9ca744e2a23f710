"""YAML files a user hands us (table specs, a contender's optimizer config), read with bounds.

YAML's aliases let a few hundred bytes stand for billions of nodes (an "alias bomb": each level
repeats the one below nine times), and OmegaConf copies every one of them: a 419-byte file hangs
the process. Tags such as `!!python/object` ask for objects no config holds. So a file is first
composed into YAML's node graph (aliases stay shared there: linear in the file's size), checked,
and only then loaded through OmegaConf:

- its size is at most MAX_BYTES,
- the tree it expands to (every alias counted as a copy) has at most MAX_NODES nodes,
- every tag is one of plain YAML's (strings, numbers, booleans, null, lists, maps).

PyYAML has no such limits of its own (yaml/pyyaml#375), hence this module.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary",
               "merge")}


class YamlError(ValueError):
    """A YAML file that cannot be read as a config; the message names the file."""


def load(path: Path, what: str) -> dict:
    """The file as a plain, resolved container; YamlError naming `what` and the file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise YamlError(f"{what}: cannot read {path} ({e.strerror})") from None
    if len(text) > MAX_BYTES:
        raise YamlError(f"{what}: {path} is {len(text)} bytes; a config is at most {MAX_BYTES}")
    try:
        root = yaml.compose(text.decode("utf-8"), Loader=yaml.SafeLoader)
        if root is not None:
            _check(root, path, what)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise YamlError(f"{what}: {path} is not valid YAML ({e})") from None
    except RecursionError:
        raise YamlError(f"{what}: {path} nests too deeply to be a config") from None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # OmegaConf's own errors (an interpolation to nothing, ...)
        raise YamlError(f"{what}: {path}: {type(e).__name__}: {e}") from None


def _check(root: yaml.Node, path: Path, what: str) -> None:
    """Tags plain, no node inside itself, and the expanded tree within MAX_NODES (each distinct
    node sized once, so the check is linear in the file)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise YamlError(f"{what}: {path} line {node.start_mark.line + 1}: a node that "
                            f"contains itself (a recursive alias)")
        if node.tag not in PLAIN_TAGS:
            raise YamlError(f"{what}: {path} line {node.start_mark.line + 1}: tag {node.tag!r} "
                            f"is not plain YAML; a config holds strings, numbers, booleans, "
                            f"null, lists and maps only")
        open_nodes.add(id(node))
        total = 1
        for child in _children(node):
            total = min(MAX_NODES + 1, total + size(child))
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    if size(root) > MAX_NODES:
        raise YamlError(f"{what}: {path} expands to more than {MAX_NODES} values (its aliases "
                        f"repeat nodes: an alias bomb?); a config is far smaller")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
