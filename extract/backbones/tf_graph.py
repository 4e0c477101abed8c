"""The nodes and constants of a frozen TensorFlow graph (a serialised ``GraphDef``, ``*.pb``), read without
TensorFlow or a protobuf library: a reader of the wire format that decodes only the fields a weight converter
needs (field numbers from TensorFlow's ``graph.proto``, ``node_def.proto``, ``attr_value.proto``,
``tensor.proto``, ``tensor_shape.proto``):

    GraphDef     1 node (repeated NodeDef)
    NodeDef      1 name, 2 op, 3 input (repeated), 5 attr (map<string, AttrValue>: entry 1 key, 2 value)
    AttrValue    4 f (float), 8 tensor (TensorProto); other kinds are kept as raw bytes
    TensorProto  1 dtype, 2 tensor_shape, 4 tensor_content (raw little-endian), 5 float_val,
                 7 int_val, 10 int64_val (repeated, packed or not; one value fills the whole shape)
    TensorShape  2 dim (repeated: 1 size)

A file that is not such a graph raises `GraphError` naming what failed, before any large allocation.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

# TensorFlow DataType enum values -> numpy dtypes (the ones weight constants use)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
_VALUE_FIELDS = {5: "<f", 6: "<d", 7: "varint", 10: "varint"}  # float_val, double_val, int_val, int64_val
# Values one constant may declare: far above any weight here (FaceNet's largest, the bottleneck, holds 917,504);
# a shape is otherwise only a claim, and one value broadcast over a crafted shape would fill the memory.
MAX_CONSTANT_VALUES = 1 << 27
MAX_GRAPH_BYTES = (1 << 31) - 1  # protobuf's limit on one message: a larger file is no GraphDef


class GraphError(ValueError):
    """The bytes are not a TensorFlow GraphDef this reader understands."""


@dataclass(frozen=True)
class Node:
    """One NodeDef: name, op, input names, and its attributes as raw AttrValue bytes."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def float_attr(self, key: str, default: float) -> float:
        """A float attribute (``epsilon`` of a batch norm), ``default`` when absent."""
        raw = self.attrs.get(key)
        value = _field(raw, 4) if raw is not None else None
        return default if value is None else struct.unpack("<f", value)[0]


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise GraphError("truncated or malformed varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, position


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message: varints as int, the rest as bytes views."""
    data = memoryview(data)
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = data[position:position + size], position + size
        elif wire == 2:
            size, position = _varint(data, position)
            value, position = data[position:position + size], position + size
        else:
            raise GraphError(f"unsupported protobuf wire type {wire} (field {number})")
        if position > len(data) or number == 0:
            raise GraphError("truncated message")
        yield number, wire, value


def _field(data: bytes | memoryview, number: int):
    """The last value of field ``number`` in a message (protobuf's rule for singular fields)."""
    found = None
    for got, _, value in fields(data):
        if got == number:
            found = value
    return found


def _repeated(wire: int, value, fmt: str) -> list:
    """Values of one occurrence of a repeated numeric field, packed (wire 2) or not."""
    if fmt == "varint":
        if wire == 0:
            return [value]
        view, position, out = memoryview(value), 0, []
        while position < len(view):
            item, position = _varint(view, position)
            out.append(item)
        return out
    return list(np.frombuffer(bytes(value), dtype=fmt))


def decode_tensor(data: bytes | memoryview, *, name: str = "") -> np.ndarray:
    """A TensorProto as a numpy array of its dtype and shape."""
    dtype_code, shape, content, values = 0, None, None, []
    for number, wire, value in fields(data):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = value
        elif number == 4:
            content = value
        elif number in _VALUE_FIELDS:
            values += _repeated(wire, value, _VALUE_FIELDS[number])
    if dtype_code not in DTYPES:
        raise GraphError(f"constant {name!r} has TensorFlow dtype {dtype_code}, not one of float/int")
    dtype = np.dtype(DTYPES[dtype_code]).newbyteorder("<")
    dims = tuple(_field(dim, 1) or 0 for number, _, dim in fields(shape or b"") if number == 2)
    count = math.prod(dims)  # Python ints: no overflow
    if count > MAX_CONSTANT_VALUES:
        raise GraphError(f"constant {name!r} declares shape {dims}: over {MAX_CONSTANT_VALUES} values")
    if content is not None:
        array = np.frombuffer(bytes(content), dtype=dtype)
    else:
        # varints of negative int32/int64 come as 64-bit two's complement: read unsigned, view signed
        array = np.asarray(values, dtype=np.uint64).view(np.int64) if dtype.kind == "i" else np.asarray(values)
        array = np.full(count, array[0]) if array.size == 1 and count > 1 else array
    if array.size != count:
        raise GraphError(f"constant {name!r} holds {array.size} values for shape {dims}")
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _node(data: memoryview) -> Node:
    name = op = ""
    inputs, attrs = [], {}
    for number, _, value in fields(data):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2:
            op = bytes(value).decode()
        elif number == 3:
            inputs.append(bytes(value).decode())
        elif number == 5:
            key, attr = _field(value, 1), _field(value, 2)
            attrs[bytes(key or b"").decode()] = bytes(attr or b"")
    return Node(name, op, tuple(inputs), attrs)


def read_graph(path: str | os.PathLike) -> dict[str, Node]:
    """The nodes of the GraphDef in file ``path``, by name."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_GRAPH_BYTES:
            raise GraphError(f"not a TensorFlow GraphDef (over protobuf's {MAX_GRAPH_BYTES:,}-byte limit)")
        data = memoryview(handle.read())
    try:
        nodes = [_node(value) for number, wire, value in fields(data) if number == 1 and wire == 2]
    except (GraphError, UnicodeDecodeError) as error:
        reason = str(error) if isinstance(error, GraphError) else "a node name is not UTF-8"
        raise GraphError(f"not a TensorFlow GraphDef ({reason})") from None
    if not nodes or any(not node.name or not node.op for node in nodes):
        raise GraphError("not a TensorFlow GraphDef (no named nodes)")
    return {node.name: node for node in nodes}


def constant(graph: dict[str, Node], name: str) -> np.ndarray:
    """The value of the ``Const`` node ``name``; a missing or non-constant node raises `GraphError`."""
    node = graph.get(name)
    if node is None or node.op != "Const":
        raise GraphError(f"the graph has no constant {name!r}")
    raw = _field(node.attrs.get("value", b""), 8)
    if raw is None:
        raise GraphError(f"node {node.name!r} ({node.op}) has no tensor value")
    return decode_tensor(raw, name=node.name)
