"""The two PATCH formats the server accepts: JSON Patch (RFC 6902) and FHIRPath Patch.

Both take a resource as JSON data and return a new, patched copy; the input is never
changed, so a failed patch leaves nothing half-done. A patch document that is malformed
raises ``YilianError(INVALID)``; a well-formed patch that cannot be applied to this
resource (a path that finds nothing, a failed ``test``) raises
``YilianError(UNPROCESSABLE)`` — FHIR answers those with 400 and 422.

FHIRPath Patch (FHIR R4 §3.1.0.7.1 "FHIRPath Patch") locates elements with the FHIRPath
engine, which returns nodes that know their parent, JSON key and array index, and
writes through those.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from yilian.fhir.fhirpath import Node, compile_path
from yilian.fhir.model import ElementSpec, model
from yilian.kernel.errors import Category, Issue, YilianError


def _invalid(message: str, *where: str) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, tuple(where))])


def _unprocessable(message: str, *where: str) -> YilianError:
    return YilianError(
        Category.UNPROCESSABLE, message, issues=[Issue(message, tuple(where), code="processing")]
    )


# ============================================================================================
# JSON Patch (RFC 6902) with JSON Pointer (RFC 6901)
# ============================================================================================

_MISSING = object()


def _pointer(text: Any, field: str) -> list[str]:
    if not isinstance(text, str):
        raise _invalid(f"JSON Patch '{field}' must be a string")
    if text == "":
        return []
    if not text.startswith("/"):
        raise _invalid(f"JSON Pointer {text!r} must start with '/'")
    # ~1 before ~0, so that "~01" reads as "~1" and not "/" (RFC 6901 §4)
    return [token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/")]


def _array_index(token: str, size: int, *, for_add: bool, pointer: str) -> int:
    if for_add and token == "-":
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise _unprocessable(f"{token!r} is not an array index in {pointer}")
    index = int(token)
    if index > size or (index == size and not for_add):
        raise _unprocessable(f"array index {index} is out of range in {pointer}")
    return index


def _container(doc: Any, tokens: list[str], pointer: str) -> Any:
    """The object or array that holds the last token of ``tokens``."""
    node = doc
    for i, token in enumerate(tokens[:-1]):
        if isinstance(node, dict):
            if token not in node:
                path = "/" + "/".join(tokens[: i + 1])
                raise _unprocessable(f"path {path} does not exist (missing objects are not created)")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(token, len(node), for_add=False, pointer=pointer)]
        else:
            raise _unprocessable(f"{pointer} goes through a value that is neither object nor array")
    return node


def _pointer_get(doc: Any, pointer: str) -> Any:
    tokens = _pointer(pointer, "path")
    if not tokens:
        return doc
    parent = _container(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f"{pointer} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_array_index(last, len(parent), for_add=False, pointer=pointer)]
    raise _unprocessable(f"{pointer} does not exist")


def _pointer_add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _pointer(pointer, "path")
    if not tokens:
        return value
    parent = _container(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), for_add=True, pointer=pointer), value)
    else:
        raise _unprocessable(f"cannot add at {pointer}: the target is not an object or array")
    return doc


def _pointer_remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _pointer(pointer, "path")
    if not tokens:
        raise _unprocessable("cannot remove the whole document")
    parent = _container(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f"cannot remove {pointer}: it does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_array_index(last, len(parent), for_add=False, pointer=pointer))
    raise _unprocessable(f"cannot remove {pointer}: it does not exist")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers by value, but never a number equal to a string or
    a boolean (Python's ``True == 1`` must not leak into ``test``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float | Decimal) and isinstance(b, int | float | Decimal):
        return Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _operation_field(op: dict[str, Any], name: str, index: int) -> Any:
    if name not in op:
        raise _invalid(f"JSON Patch operation {index} ({op.get('op')}) needs '{name}'")
    return op[name]


def apply_json_patch(resource: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch to a copy of ``resource`` and return the copy."""
    if not isinstance(operations, list):
        raise _invalid("a JSON Patch document is an array of operations")
    doc: Any = copy.deepcopy(resource)
    for i, op in enumerate(operations):
        if not isinstance(op, dict):
            raise _invalid(f"JSON Patch operation {i} is not an object")
        kind = op.get("op")
        path = _operation_field(op, "path", i)
        if kind == "add":
            doc = _pointer_add(doc, path, copy.deepcopy(_operation_field(op, "value", i)))
        elif kind == "remove":
            doc, _ = _pointer_remove(doc, path)
        elif kind == "replace":
            value = copy.deepcopy(_operation_field(op, "value", i))
            _pointer_get(doc, path)  # must exist
            doc = (
                _pointer_add(_pointer_remove(doc, path)[0], path, value) if _pointer(path, "path") else value
            )
        elif kind == "move":
            source = _operation_field(op, "from", i)
            if path != source and path.startswith(source + "/"):
                raise _unprocessable(f"cannot move {source} into its own child {path}")
            doc, value = _pointer_remove(doc, source)
            doc = _pointer_add(doc, path, value)
        elif kind == "copy":
            value = copy.deepcopy(_pointer_get(doc, _operation_field(op, "from", i)))
            doc = _pointer_add(doc, path, value)
        elif kind == "test":
            expected = _operation_field(op, "value", i)
            actual = _pointer_get(doc, path)
            if not _json_equal(actual, expected):
                raise _unprocessable(f"test failed: {path} is {actual!r}, not {expected!r}")
        else:
            raise _invalid(f"unknown JSON Patch operation {kind!r}")
    if not isinstance(doc, dict):
        raise _unprocessable("the patch did not leave a resource (a JSON object)")
    return doc  # type: ignore[no-any-return]


# ============================================================================================
# FHIRPath Patch
# ============================================================================================

_OPERATION_PARTS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "index", "value"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}


def _value_entry(part: dict[str, Any]) -> tuple[str, Any] | None:
    """The ``value[x]`` of a Parameters part: (type suffix, value), e.g. ("Date", "1930-01-01")."""
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5:
            return key[5:], value
    return None


def _primitive_part(parts: dict[str, dict[str, Any]], name: str, kinds: tuple[str, ...]) -> Any:
    part = parts.get(name)
    if part is None:
        return None
    entry = _value_entry(part)
    if entry is None or entry[0] not in kinds:
        raise _invalid(f"FHIRPath Patch part '{name}' needs a value{' or value'.join(kinds)}")
    return entry[1]


def _fhir_type(suffix: str) -> str:
    """valueDate -> date, valueCodeableConcept -> CodeableConcept."""
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if model().is_primitive(lowered) else suffix


class _Value:
    """A value to write: the JSON value, its type and the ``_x`` sibling of a primitive."""

    def __init__(self, data: Any, type_name: str | None, ext: Any = None) -> None:
        self.data = data
        self.type = type_name
        self.ext = ext


def _element(type_name: str | None, name: str) -> ElementSpec | None:
    if type_name is None:
        return None
    m = model()
    structure = m.structure("Element" if m.is_primitive(type_name) else type_name)
    if structure is None:
        return None
    if name in structure.elements:
        return structure.elements[name]
    prop = structure.properties.get(name)
    return prop[0] if prop else None


def _read_value(part: dict[str, Any], target_type: str | None) -> _Value:
    """The content of a ``value`` part: a value[x], or nested parts making a complex value
    (an "anonymous type" such as a backbone element)."""
    entry = _value_entry(part)
    if entry is not None:
        suffix, data = entry
        return _Value(copy.deepcopy(data), _fhir_type(suffix), copy.deepcopy(part.get("_value" + suffix)))
    nested = part.get("part")
    if not isinstance(nested, list) or not nested:
        raise _invalid("FHIRPath Patch 'value' needs a value[x] or parts")
    obj: dict[str, Any] = {}
    for sub in nested:
        name = sub.get("name") if isinstance(sub, dict) else None
        if not isinstance(name, str):
            raise _invalid("every part of a complex value needs a name")
        spec = _element(target_type, name)
        child_type = spec.types[0] if spec is not None and len(spec.types) == 1 else None
        value = _read_value(sub, child_type)
        key = _json_key(spec, name, value)
        if spec is not None and spec.repeating:
            obj.setdefault(key, []).append(value.data)
        elif key in obj:
            raise _invalid(f"'{name}' given twice in a complex value")
        else:
            obj[key] = value.data
    return _Value(obj, target_type)


def _json_key(spec: ElementSpec | None, name: str, value: _Value) -> str:
    """The JSON property for element ``name``: a choice element takes the value's type."""
    if spec is not None and spec.choice and name == spec.name and value.type:
        return spec.choice_key(value.type)
    return name


def _locate(doc: dict[str, Any], path: str) -> list[Any]:
    return compile_path(path).evaluate_nodes(doc)


def _single_target(doc: dict[str, Any], path: str, kind: str) -> Node:
    found = _locate(doc, path)
    if not found:
        raise _unprocessable(f"No content found at {path} when {kind}", path)
    if len(found) > 1:
        raise _unprocessable(f"{path} found {len(found)} elements; {kind} needs exactly one", path)
    node = found[0]
    if type(node) is not Node:
        raise _unprocessable(f"{path} does not find an element of the resource", path)
    return node


def _list_target(doc: dict[str, Any], path: str, kind: str) -> tuple[Node, str, list[Any]]:
    """The node holding the list ``path`` finds, the list's key and the list."""
    found = _locate(doc, path)
    if not found:
        raise _unprocessable(f"No content found at {path} when {kind}", path)
    first = found[0]
    if type(first) is not Node or first.parent is None or first.key is None:
        raise _unprocessable(f"{path} does not find a list in the resource", path)
    parent, key = first.parent, first.key
    if any(type(n) is not Node or n.parent is not parent or n.key != key for n in found):
        raise _unprocessable(f"{path} finds elements of more than one list", path)
    holder = parent.data if type(parent.data) is dict else parent.ext
    items = holder.get(key) if holder else None
    if not isinstance(items, list):
        raise _unprocessable(f"{path} is not a list", path)
    return parent, key, items


def _holder(node: Node) -> dict[str, Any]:
    """The JSON object a node is stored in (its parent's object, or a primitive's ``_x``)."""
    parent = node.parent
    assert parent is not None
    data = parent.data if type(parent.data) is dict else parent.ext
    assert isinstance(data, dict)
    return data


def _set_ext(holder: dict[str, Any], key: str, index: int | None, ext: Any) -> None:
    ext_key = "_" + key
    if index is None:
        if ext is None:
            holder.pop(ext_key, None)
        else:
            holder[ext_key] = ext
        return
    exts = holder.get(ext_key)
    if ext is None and not isinstance(exts, list):
        return
    if not isinstance(exts, list):
        exts = holder[ext_key] = [None] * len(holder.get(key) or ())
    while len(exts) <= index:
        exts.append(None)
    exts[index] = ext
    if all(e is None for e in exts):
        del holder[ext_key]


def _prune(node: Node | None) -> None:
    """Remove objects a delete left empty, up to (not including) the resource."""
    while node is not None and node.parent is not None:
        if not (type(node.data) is dict and not node.data):
            return
        holder, key = _holder(node), node.key
        assert key is not None
        if node.index is None:
            holder.pop(key, None)
        else:
            items = holder.get(key)
            if isinstance(items, list) and node.index < len(items):
                del items[node.index]
                if not items:
                    del holder[key]
        node = node.parent


def _delete_node(node: Node) -> None:
    holder, key = _holder(node), node.key
    assert key is not None
    if node.index is None:
        holder.pop(key, None)
        holder.pop("_" + key, None)
    else:
        for k in (key, "_" + key):
            items = holder.get(k)
            if isinstance(items, list) and node.index < len(items):
                del items[node.index]
                if not items or all(x is None for x in items):
                    del holder[k]
    parent = node.parent
    if parent is not None and type(parent.data) is not dict and not holder and parent.key is not None:
        # the last extension of a primitive went: drop its empty `_name` object
        _set_ext(_holder(parent), parent.key, parent.index, None)
        return
    _prune(parent)


def _replace_node(node: Node, value: _Value) -> None:
    holder, key = _holder(node), node.key
    assert key is not None and node.parent is not None
    prop = model().property(node.parent.type or "", key) if node.parent.type else None
    if prop is not None and prop[0].choice and value.type and value.type != prop[1]:
        # a choice element changing type moves to another JSON property (valueQuantity -> valueString)
        if node.index is not None:
            raise _unprocessable(f"cannot change the type of one item of {key}")
        holder.pop(key, None)
        holder.pop("_" + key, None)
        key = prop[0].choice_key(value.type)
    if node.index is None:
        holder[key] = value.data
    else:
        holder[key][node.index] = value.data
    _set_ext(holder, key, node.index, value.ext)


def _primitive_extras(node: Node) -> dict[str, Any]:
    """The ``_name`` object of a primitive (its id and extensions), created if missing."""
    if node.ext is None:
        if node.parent is None or node.key is None:
            raise _unprocessable("cannot add to a value that is not in the resource")
        node.ext = {}
        _set_ext(_holder(node), node.key, node.index, node.ext)
    return node.ext


def _add_child(node: Node, name: str, value: _Value, path: str) -> None:
    if type(node.data) is dict:
        obj: dict[str, Any] = node.data
    elif name in ("extension", "id"):  # a primitive's extensions live in its `_name` sibling
        obj = _primitive_extras(node)
    else:
        raise _unprocessable(f"cannot add '{name}' to {path}: it is not a complex element", path)
    spec = _element(node.type, name)
    key = _json_key(spec, name, value)
    repeating = spec.repeating if spec is not None else isinstance(obj.get(key), list)
    if repeating:
        items = obj.setdefault(key, [])
        if not isinstance(items, list):
            raise _unprocessable(f"{path}.{name} is not a list", path)
        items.append(value.data)
        if value.ext is not None:
            _set_ext(obj, key, len(items) - 1, value.ext)
        return
    if key in obj or "_" + key in obj:
        raise _unprocessable(f"{path} already has a {name}; use replace", path)
    obj[key] = value.data
    _set_ext(obj, key, None, value.ext)


def _index_part(parts: dict[str, dict[str, Any]], name: str) -> int:
    value = _primitive_part(parts, name, ("Integer", "UnsignedInt", "PositiveInt"))
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _invalid(f"FHIRPath Patch '{name}' must be a non-negative integer")
    return value


def _apply_operation(doc: dict[str, Any], parts: dict[str, dict[str, Any]]) -> None:
    kind = _primitive_part(parts, "type", ("Code", "String"))
    if kind not in _OPERATION_PARTS:
        raise _invalid(f"unknown FHIRPath Patch operation type {kind!r}")
    for needed in _OPERATION_PARTS[kind]:
        if needed not in parts:
            raise _invalid(f"FHIRPath Patch {kind} needs a '{needed}' part")
    path = _primitive_part(parts, "path", ("String",))
    if not isinstance(path, str) or not path.strip():
        raise _invalid("FHIRPath Patch 'path' must be a FHIRPath expression")

    if kind == "add":
        name = _primitive_part(parts, "name", ("String", "Code"))
        target = _single_target(doc, path, "adding")
        spec = _element(target.type, name)
        child_type = spec.types[0] if spec is not None and len(spec.types) == 1 else None
        _add_child(target, name, _read_value(parts["value"], child_type), path)
    elif kind == "replace":
        target = _single_target(doc, path, "replacing")
        if target.parent is None:
            raise _unprocessable("replace cannot replace the whole resource", path)
        _replace_node(target, _read_value(parts["value"], target.type))
    elif kind == "delete":
        found = _locate(doc, path)
        if len(found) > 1:
            raise _unprocessable(f"{path} found {len(found)} elements; delete removes one", path)
        if found and type(found[0]) is Node and found[0].parent is not None:
            _delete_node(found[0])
    elif kind == "insert":
        parent, key, items = _list_target(doc, path, "inserting")
        index = _index_part(parts, "index")
        if index > len(items):
            raise _unprocessable(f"insert index {index} is past the end of {path} ({len(items)} items)", path)
        value = _read_value(parts["value"], parent.type and _element_type(parent.type, key))
        items.insert(index, value.data)
        holder = parent.data if type(parent.data) is dict else parent.ext
        assert isinstance(holder, dict)
        exts = holder.get("_" + key)
        if isinstance(exts, list):
            exts.insert(index, value.ext)
        elif value.ext is not None:
            _set_ext(holder, key, index, value.ext)
    else:  # move
        parent, key, items = _list_target(doc, path, "moving")
        source, destination = _index_part(parts, "source"), _index_part(parts, "destination")
        if source >= len(items) or destination >= len(items):
            raise _unprocessable(
                f"move {source} -> {destination} is outside {path} ({len(items)} items)", path
            )
        items.insert(destination, items.pop(source))
        holder = parent.data if type(parent.data) is dict else parent.ext
        exts = holder.get("_" + key) if holder else None
        if isinstance(exts, list) and source < len(exts):
            exts.insert(destination, exts.pop(source))


def _element_type(type_name: str, key: str) -> str | None:
    prop = model().property(type_name, key)
    return prop[1] if prop else None


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a ``Parameters`` resource of ``operation`` parameters) to a
    copy of ``resource`` and return the copy."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise _invalid("a FHIRPath Patch is a Parameters resource")
    doc = copy.deepcopy(resource)
    for i, parameter in enumerate(parameters.get("parameter") or ()):
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise _invalid(f"FHIRPath Patch parameter {i} must be named 'operation'")
        parts: dict[str, dict[str, Any]] = {}
        for part in parameter.get("part") or ():
            name = part.get("name") if isinstance(part, dict) else None
            if not isinstance(name, str):
                raise _invalid(f"FHIRPath Patch operation {i} has a part without a name")
            if name in parts:
                raise _invalid(f"FHIRPath Patch operation {i} has two '{name}' parts")
            parts[name] = part
        _apply_operation(doc, parts)
    return doc
