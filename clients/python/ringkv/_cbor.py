"""CBOR (RFC 8949), the part the ringkv client protocol uses.

Encodes: None, bool, int (64-bit, either sign), float (as a double),
bytes, str, list/tuple and dict. Decodes every definite-length item a node
may send: unsigned and negative integers, byte and text strings, arrays,
maps, tags (the tag is dropped, the content kept), false/true/null/
undefined, and half, single and double floats. Indefinite-length strings,
arrays and maps are decoded too, though a node never sends them.

Byte strings decode as ``bytes``; text as ``str``. A map decodes as a
``dict``; a map key that is itself a map or an array (never sent by a
node) decodes as a tuple so that it can be a dict key.
"""

import struct

__all__ = ["encode", "decode", "CBORError"]

_MAX_DEPTH = 256


class CBORError(ValueError):
    """Bytes that are not one well-formed CBOR item (or a value that
    cannot be encoded)."""


def _head(major, n):
    if n < 0:
        raise CBORError("negative length or value in a head")
    if n < 24:
        return bytes((major << 5 | n,))
    if n <= 0xFF:
        return bytes((major << 5 | 24, n))
    if n <= 0xFFFF:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    if n <= 0xFFFFFFFFFFFFFFFF:
        return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")
    raise CBORError("integer %d does not fit in 64 bits" % n)


def _encode_into(value, out, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("value nested too deeply")
    if value is None:
        out.append(b"\xf6")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif isinstance(value, int):
        if value >= 0:
            out.append(_head(0, value))
        else:
            out.append(_head(1, -1 - value))
    elif isinstance(value, float):
        out.append(b"\xfb" + struct.pack(">d", value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(_head(2, len(data)))
        out.append(data)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(_head(3, len(data)))
        out.append(data)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for item in value:
            _encode_into(item, out, depth + 1)
    elif isinstance(value, dict):
        out.append(_head(5, len(value)))
        for k, v in value.items():
            _encode_into(k, out, depth + 1)
            _encode_into(v, out, depth + 1)
    else:
        raise CBORError("cannot encode a %s" % type(value).__name__)


def encode(value):
    """The CBOR encoding of ``value``, as bytes."""
    out = []
    _encode_into(value, out, 0)
    return b"".join(out)


_BREAK = object()


class _Reader:
    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n):
        end = self.pos + n
        if end > len(self.data):
            raise CBORError("truncated CBOR item")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def argument(self, ai):
        if ai < 24:
            return ai
        if ai == 24:
            return self.take(1)[0]
        if ai == 25:
            return int.from_bytes(self.take(2), "big")
        if ai == 26:
            return int.from_bytes(self.take(4), "big")
        if ai == 27:
            return int.from_bytes(self.take(8), "big")
        raise CBORError("reserved additional information %d" % ai)

    def chunks(self, major, depth):
        """The pieces of an indefinite-length string."""
        parts = []
        while True:
            piece = self.item(depth + 1, allow_break=True)
            if piece is _BREAK:
                return parts
            if major == 2 and not isinstance(piece, bytes):
                raise CBORError("a byte string chunk is not a byte string")
            if major == 3 and not isinstance(piece, str):
                raise CBORError("a text string chunk is not a text string")
            parts.append(piece)

    def item(self, depth=0, allow_break=False):
        if depth > _MAX_DEPTH:
            raise CBORError("CBOR nested too deeply")
        initial = self.take(1)[0]
        major, ai = initial >> 5, initial & 31
        if major == 7:
            return self.simple(ai, allow_break)
        if ai == 31:
            if major == 2:
                return b"".join(self.chunks(2, depth))
            if major == 3:
                return "".join(self.chunks(3, depth))
            if major == 4:
                items = []
                while True:
                    x = self.item(depth + 1, allow_break=True)
                    if x is _BREAK:
                        return items
                    items.append(x)
            if major == 5:
                result = {}
                while True:
                    k = self.item(depth + 1, allow_break=True)
                    if k is _BREAK:
                        return result
                    result[_hashable(k)] = self.item(depth + 1)
            raise CBORError("indefinite length for major type %d" % major)
        n = self.argument(ai)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return bytes(self.take(n))
        if major == 3:
            try:
                return str(self.take(n), "utf-8")
            except UnicodeDecodeError as e:
                raise CBORError("text string is not UTF-8: %s" % e) from None
        if major == 4:
            if n > len(self.data) - self.pos:
                raise CBORError("array longer than the input")
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            if n > len(self.data) - self.pos:
                raise CBORError("map longer than the input")
            result = {}
            for _ in range(n):
                k = _hashable(self.item(depth + 1))
                result[k] = self.item(depth + 1)
            return result
        # major 6: a tag; keep what it tags.
        return self.item(depth + 1)

    def simple(self, ai, allow_break):
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai in (22, 23):
            return None
        if ai == 25:
            return struct.unpack(">e", self.take(2))[0]
        if ai == 26:
            return struct.unpack(">f", self.take(4))[0]
        if ai == 27:
            return struct.unpack(">d", self.take(8))[0]
        if ai == 31 and allow_break:
            return _BREAK
        if ai < 24:
            return ai  # an unassigned simple value: its number
        if ai == 24:
            return self.take(1)[0]
        raise CBORError("unexpected simple value or break (%d)" % ai)


def _hashable(k):
    if isinstance(k, list):
        return tuple(_hashable(x) for x in k)
    if isinstance(k, dict):
        return tuple(sorted((_hashable(a), _hashable(b)) for a, b in k.items()))
    return k


def decode(data):
    """The one CBOR item ``data`` holds; trailing bytes are an error."""
    reader = _Reader(data)
    value = reader.item()
    if reader.pos != len(reader.data):
        raise CBORError("%d bytes after the CBOR item" % (len(reader.data) - reader.pos))
    return value
