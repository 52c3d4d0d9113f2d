"""A ringkv client written from docs/protocol.md alone, standard library only.

Run by tests/protocol_python.rs against a real client port:

    python3 tests/python/protocol_client.py HOST:PORT

It says hello, puts, gets, pipelines, sends a bad request and garbage, and
checks every answer. Exit status 0 and the last line "all checks passed"
mean the doc was enough; any failed check raises and exits non-zero.
"""

import socket
import struct
import sys


# ---- CBOR (RFC 8949): the subset the protocol uses ----

def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError("integer too large")


def encode(v):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, (bytes, bytearray)):
        return _head(2, len(v)) + bytes(v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        return _head(3, len(b)) + b
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(encode(k) + encode(x) for k, x in v.items())
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    raise TypeError(type(v))


class Decoder:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated CBOR")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def item(self):
        ib = self.take(1)[0]
        major, ai = ib >> 5, ib & 31
        if major == 7:
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
            raise ValueError("unsupported simple value %d" % ai)
        if ai < 24:
            n = ai
        elif ai <= 27:
            n = int.from_bytes(self.take(1 << (ai - 24)), "big")
        else:
            raise ValueError("indefinite lengths are not used by the protocol")
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self.take(n)
        if major == 3:
            return self.take(n).decode("utf-8")
        if major == 4:
            return [self.item() for _ in range(n)]
        if major == 5:
            out = {}
            for _ in range(n):
                k = self.item()
                out[k] = self.item()
            return out
        if major == 6:
            return self.item()  # a tag: the protocol sends none; ignore it
        raise ValueError("bad major type")


def decode(data):
    d = Decoder(data)
    v = d.item()
    if d.pos != len(data):
        raise ValueError("trailing bytes")
    return v


# ---- framing and requests ----

class Connection:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.next_id = 1

    def send_frame(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed")
            out += chunk
        return out

    def recv(self):
        (length,) = struct.unpack(">I", self.recv_exact(4))
        return decode(self.recv_exact(length))

    def send(self, op):
        rid = self.next_id
        self.next_id += 1
        self.send_frame(encode({"id": rid, "op": op}))
        return rid

    def call(self, op):
        rid = self.send(op)
        resp = self.recv()
        check(resp["id"] == rid, "response id %r for request %r" % (resp["id"], rid))
        return resp["result"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(result, variant):
    check("Ok" in result, "expected Ok, got %r" % (result,))
    reply = result["Ok"]
    check(isinstance(reply, dict) and variant in reply, "expected %s, got %r" % (variant, reply))
    return reply[variant]


def err(result):
    check("Err" in result, "expected Err, got %r" % (result,))
    e = result["Err"]
    for field in ("code", "message", "retryable", "indefinite", "needed", "got"):
        check(field in e, "error without %s: %r" % (field, e))
    return e


def main(addr):
    c = Connection(addr)

    hello = ok(c.call({"Hello": {"version": 1, "client": "python"}}), "Hello")
    check(hello["version"] == 1, "hello version %r" % hello)
    check(isinstance(hello["node"], int) and isinstance(hello["cluster"], str), repr(hello))
    print("hello: node %d cluster %s" % (hello["node"], hello["cluster"]))

    # A get of a key never written: not found.
    obj = ok(c.call({"Get": {"bucket": b"py", "key": b"k"}}), "Object")
    check(obj["value"] is None and obj["siblings"] == [], "not found: %r" % obj)

    # A blind put, with options left out entirely.
    w = ok(c.call({"Put": {"bucket": b"py", "key": b"k", "value": b"from python"}}), "Written")
    check(isinstance(w["context"], bytes), "context is bytes: %r" % w)
    for field in ("asked", "answered", "fallbacks", "repaired"):
        check(isinstance(w["receipt"][field], list), "receipt.%s: %r" % (field, w))
    print("put: ok")

    obj = ok(c.call({"Get": {"bucket": b"py", "key": b"k",
                             "options": {"r": "One", "timeout_ms": 1000}}}), "Object")
    check(obj["value"] == b"from python", "get after put: %r" % obj)
    print("get: %s" % obj["value"].decode())

    # A put with the context it read, and a consistency given as {"Count": k}.
    ok(c.call({"Put": {"bucket": b"py", "key": b"k", "value": b"second",
                       "context": obj["context"], "options": {"w": {"Count": 1}}}}), "Written")

    # Pipelining: three requests sent before reading any answer.
    ids = [c.send({"Get": {"bucket": b"py", "key": b"k"}}) for _ in range(3)]
    seen = {}
    for _ in ids:
        resp = c.recv()
        seen[resp["id"]] = ok(resp["result"], "Object")["value"]
    check(sorted(seen) == sorted(ids), "pipelined ids %r vs %r" % (seen, ids))
    check(all(v == b"second" for v in seen.values()), repr(seen))
    print("pipelined: %d answers" % len(seen))

    # A bad request with a readable id: an op this node does not know.
    c.send_frame(encode({"id": 500, "op": {"Teleport": {"where": "mars"}}}))
    resp = c.recv()
    check(resp["id"] == 500, "bad request id %r" % resp)
    e = err(resp["result"])
    check(e["code"] == "BadRequest" and e["retryable"] is False, repr(e))
    # A Put missing its value: also a bad request, id kept.
    c.send_frame(encode({"id": 501, "op": {"Put": {"bucket": b"py", "key": b"k"}}}))
    resp = c.recv()
    check(resp["id"] == 501 and err(resp["result"])["code"] == "BadRequest", repr(resp))
    # Garbage: not CBOR at all, so id 0.
    c.send_frame(b"\xff\xfe\xfd")
    resp = c.recv()
    check(resp["id"] == 0 and err(resp["result"])["code"] == "BadRequest", repr(resp))
    print("bad requests: answered BadRequest")

    # An op the test node refuses: an error with a code and retryable set.
    e = err(c.call("Ring"))
    check(e["code"] == "InvalidArgument" and e["retryable"] is False, repr(e))

    # The connection still works after all of that.
    obj = ok(c.call({"Get": {"bucket": b"py", "key": b"k"}}), "Object")
    check(obj["value"] == b"second", repr(obj))

    # A hello with a version from the future.
    e = err(c.call({"Hello": {"version": 99, "client": "python"}}))
    check(e["code"] == "UnsupportedVersion", repr(e))

    # An oversized frame: one error with id 0, then the node closes.
    c.sock.sendall(struct.pack(">I", 0x7FFFFFFF))
    resp = c.recv()
    check(resp["id"] == 0 and err(resp["result"])["code"] == "BadRequest", repr(resp))
    try:
        c.recv()
        raise AssertionError("the connection should be closed")
    except (EOFError, ConnectionResetError):
        pass
    print("oversized: closed")

    # Encoder and decoder agree with the golden vectors of the doc.
    check(encode({"id": 13, "op": "Ring"}).hex() == "a26269640d626f706452696e67", "golden Ring")
    check(decode(bytes.fromhex("f93800")) == 0.5, "half float")
    print("all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
