"""A Python client of ringkv's client protocol (``docs/protocol.md``).

Standard library only. One :class:`Client` holds one TCP connection to one
node of the addresses it was given and sends one request at a time over it
(share a client between threads: a lock serialises them; for parallel
requests, open several clients). Any node serves any key.

    import ringkv
    with ringkv.connect(["127.0.0.1:7000"]) as c:
        c.put("b", "k", b"v")
        got = c.get("b", "k")          # got.value, got.siblings, got.context
        c.put("b", "k", b"v2", context=got.context)
        for key in c.scan("b"):
            ...

Buckets, keys and values are bytes; a ``str`` is sent as its UTF-8 bytes.
Values come back as ``bytes``.

Errors: a node's refusal raises :class:`RingkvError` with the protocol's
``code`` (``"InvalidArgument"``, ``"Timeout"``, ...), ``retryable`` and,
for a write, ``indefinite``. A write sent on a connection that broke before
its answer raises :class:`OutcomeUnknown`. A batch (``multi_get``,
``multi_put``) answers one item per key, each a result or a
:class:`RingkvError` in its place.

Retries follow section 6 of ``docs/protocol.md``: only a retryable error,
and for a write only one that surely was not applied (``indefinite`` is
false, or the request never left); with backoff, on a fresh connection
(to the next address) after a broken one.
"""

import socket
import struct
import threading
import time
from collections import namedtuple

from . import _cbor

__all__ = [
    "PROTOCOL_VERSION",
    "Client",
    "connect",
    "RingkvError",
    "ConnectionFailed",
    "OutcomeUnknown",
    "GetResult",
    "WriteResult",
    "Sibling",
    "Receipt",
]

__version__ = "0.1.0"

#: The client protocol version this package speaks.
PROTOCOL_VERSION = 1

#: The node's default frame limit (16 MiB); frames past it are refused.
MAX_FRAME_BYTES = 16 * 1024 * 1024

#: The most keys a scan page or a batch may hold.
MAX_PAGE = 1000


class RingkvError(Exception):
    """A request that failed.

    Attributes:
        code: the protocol's error code (``"InvalidArgument"``,
            ``"Unavailable"``, ``"Timeout"``, ``"TooManySiblings"``,
            ``"PermissionDenied"``, ...; ``"Connection"`` when no node could
            be reached or the connection broke, ``"Protocol"`` for an answer
            this client cannot read).
        message: text for people.
        retryable: whether the same request may succeed if sent again.
        indefinite: for a write, ``True`` if it may have been applied,
            ``False`` if it surely was not; ``None`` for reads.
        needed, got: replicas needed and replicas that answered, for
            ``Unavailable`` and ``Timeout``.
    """

    def __init__(self, code, message, retryable=False, indefinite=None, needed=None, got=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.retryable = retryable
        self.indefinite = indefinite
        self.needed = needed
        self.got = got

    @classmethod
    def _from_reply(cls, err):
        if not isinstance(err, dict):
            return RingkvError("Protocol", "an error that is not a map: %r" % (err,))
        return cls(
            str(err.get("code", "Internal")),
            str(err.get("message", "")),
            bool(err.get("retryable", False)),
            err.get("indefinite"),
            err.get("needed"),
            err.get("got"),
        )


class ConnectionFailed(RingkvError):
    """No node could be reached, or the connection broke. ``retryable``."""

    def __init__(self, message, indefinite=None):
        super().__init__("Connection", message, True, indefinite)


class OutcomeUnknown(RingkvError):
    """A write was sent and its answer never came (the connection broke
    or the timeout passed): it may or may not have been applied. Read the
    key to find out; it is never retried."""

    def __init__(self, message):
        super().__init__("OutcomeUnknown", message, False, True)


#: What a request did: node ids asked and answering, ``[fallback, owner]``
#: pairs, nodes sent a read repair.
Receipt = namedtuple("Receipt", "asked answered fallbacks repaired")

#: One of several concurrent values: ``value`` is ``None`` for a delete.
Sibling = namedtuple("Sibling", "value timestamp_ms node")

#: A read: ``value`` when there is exactly one; ``siblings`` when there
#: are several; neither when the key is not found. Send ``context`` back
#: with the next write of the key.
GetResult = namedtuple("GetResult", "value siblings context receipt")

#: A write: the context of the object as stored.
WriteResult = namedtuple("WriteResult", "context receipt")


def _bytes(x, what):
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("%s must be bytes or str, not %s" % (what, type(x).__name__))


_LEVELS = {"one": "One", "two": "Two", "quorum": "Quorum", "all": "All"}


def _consistency(level):
    if level is None:
        return None
    if isinstance(level, bool):
        raise TypeError("a consistency level is not a bool")
    if isinstance(level, int):
        return {"Count": level}
    name = _LEVELS.get(str(level).lower())
    if name is None:
        raise ValueError("consistency must be one, two, quorum, all or a count, not %r" % (level,))
    return name


def _level_from(value):
    if isinstance(value, dict) and "Count" in value:
        return value["Count"]
    return str(value).lower()


_REPAIRS = {"async": "Async", "beforeanswer": "BeforeAnswer", "before_answer": "BeforeAnswer", "off": "Off"}


def _read_options(r=None, repair=None, sloppy_quorum=None, timeout_ms=None):
    if repair is not None:
        name = _REPAIRS.get(str(repair).lower())
        if name is None:
            raise ValueError("repair must be async, before_answer or off, not %r" % (repair,))
        repair = name
    return {"r": _consistency(r), "repair": repair, "sloppy_quorum": sloppy_quorum, "timeout_ms": timeout_ms}


def _write_options(w=None, sloppy_quorum=None, timeout_ms=None):
    return {"w": _consistency(w), "sloppy_quorum": sloppy_quorum, "timeout_ms": timeout_ms}


def _receipt(r):
    r = r or {}
    return Receipt(
        list(r.get("asked", [])),
        list(r.get("answered", [])),
        [tuple(p) for p in r.get("fallbacks", [])],
        list(r.get("repaired", [])),
    )


def _object(o):
    return GetResult(
        o.get("value"),
        [Sibling(s.get("value"), s.get("timestamp_ms"), s.get("node")) for s in o.get("siblings") or []],
        o.get("context") or b"",
        _receipt(o.get("receipt")),
    )


def _written(o):
    return WriteResult(o.get("context") or b"", _receipt(o.get("receipt")))


def _reply(reply, kind):
    """The fields of a reply of ``kind`` (``{"Object": {...}}``)."""
    if isinstance(reply, dict) and kind in reply:
        return reply[kind]
    raise RingkvError("Protocol", "expected a %s reply, got %r" % (kind, reply))


def _items(items, convert):
    out = []
    for item in items:
        if isinstance(item, dict) and "Ok" in item:
            out.append(convert(item["Ok"]))
        elif isinstance(item, dict) and "Err" in item:
            out.append(RingkvError._from_reply(item["Err"]))
        else:
            out.append(RingkvError("Protocol", "a batch item that is neither Ok nor Err: %r" % (item,)))
    return out


def _split_addr(addr):
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("an address is HOST:PORT, not %r" % (addr,))
    return host.strip("[]"), int(port)


class Client:
    """A connection to a ringkv cluster through one of ``addrs``.

    Args:
        addrs: ``"HOST:PORT"`` strings (a single string is one address):
            the nodes' client ports, tried in order, wrapping around.
        user, password: credentials for ``Hello`` (both or neither).
        timeout: seconds to wait for a connection and for each answer.
        retries: attempts in all for a request whose failure may be
            retried (see the module's docs); 1 never retries.
        client_name: sent in ``Hello``, for the node's logs.
    """

    def __init__(self, addrs, user=None, password=None, timeout=5.0, retries=4, client_name="ringkv-python"):
        if isinstance(addrs, str):
            addrs = [addrs]
        self.addrs = [_split_addr(a) for a in addrs]
        if not self.addrs:
            raise ValueError("no address")
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self.user = user
        self.password = password
        self.timeout = timeout
        self.retries = max(1, int(retries))
        self.client_name = client_name
        self._sock = None
        self._next_addr = 0
        self._next_id = 1
        self._lock = threading.RLock()
        #: The answer to the last Hello: version, node, cluster, role.
        self.server = None

    # ---- connection ----

    def _connect(self):
        errors = []
        for _ in range(len(self.addrs)):
            host, port = self.addrs[self._next_addr]
            self._next_addr = (self._next_addr + 1) % len(self.addrs)
            try:
                sock = socket.create_connection((host, port), timeout=self.timeout)
            except OSError as e:
                errors.append("%s:%d: %s" % (host, port, e))
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            try:
                self.server = self._hello()
            except ConnectionFailed as e:
                self._drop()
                errors.append("%s:%d: %s" % (host, port, e.message))
                continue
            except RingkvError:
                self._drop()
                raise
            return
        raise ConnectionFailed("no node could be reached: " + "; ".join(errors))

    def _drop(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def close(self):
        """Closes the connection (the next request opens another)."""
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, n):
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionFailed("the node closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _roundtrip(self, op):
        """Sends one request on the open connection and returns its
        result map; raises ``_Lost`` when it was sent and the answer never
        came, ``ConnectionFailed`` when it was not (completely) sent."""
        rid = self._next_id
        self._next_id += 1
        body = _cbor.encode({"id": rid, "op": op})
        if len(body) > MAX_FRAME_BYTES:
            raise RingkvError("InvalidArgument", "the request is %d bytes, over the 16 MiB frame limit" % len(body), indefinite=False)
        try:
            self._sock.sendall(struct.pack(">I", len(body)) + body)
        except OSError as e:
            self._drop()
            raise ConnectionFailed("sending: %s" % e, indefinite=False)
        try:
            while True:
                (length,) = struct.unpack(">I", self._recv_exact(4))
                if length > MAX_FRAME_BYTES:
                    raise RingkvError("Protocol", "a %d-byte frame from the node" % length)
                response = _cbor.decode(self._recv_exact(length))
                if not isinstance(response, dict) or "result" not in response:
                    raise RingkvError("Protocol", "not a response: %r" % (response,))
                if response.get("id") == rid:
                    return response["result"]
                if response.get("id") == 0:
                    # The node is telling why it closes the connection.
                    self._drop()
                    err = RingkvError._from_reply(response["result"].get("Err"))
                    raise _Lost("%s: %s" % (err.code, err.message))
                # An answer to an abandoned request: skip it.
        except (OSError, ConnectionFailed, _cbor.CBORError) as e:
            self._drop()
            raise _Lost(str(e))
        except RingkvError:
            self._drop()
            raise

    def _hello(self):
        op = {"Hello": {"version": PROTOCOL_VERSION, "client": self.client_name}}
        if self.user is not None:
            op["Hello"]["user"] = self.user
            op["Hello"]["password"] = self.password
        try:
            result = self._roundtrip(op)
        except _Lost as e:
            raise ConnectionFailed("hello: %s" % e)
        if "Err" in result:
            raise RingkvError._from_reply(result["Err"])
        hello = _reply(result.get("Ok"), "Hello")
        return {
            "version": hello.get("version"),
            "node": hello.get("node"),
            "cluster": hello.get("cluster"),
            "role": hello.get("role"),
        }

    def execute(self, op, is_write):
        """Sends a raw op (``{"Get": {...}}`` or ``"Status"``) and returns
        the reply map (``{"Object": {...}}``), retrying as the module's
        docs say. Raises :class:`RingkvError`."""
        backoff = 0.02
        attempt = 1
        with self._lock:
            while True:
                try:
                    if self._sock is None:
                        self._connect()
                    result = self._roundtrip(op)
                    if "Ok" in result:
                        return result["Ok"]
                    error = RingkvError._from_reply(result.get("Err"))
                    retry = error.retryable and (not is_write or error.indefinite is False)
                    if error.code == "ShuttingDown":
                        self._drop()  # the next attempt goes to another node
                except _Lost as lost:
                    if is_write:
                        raise OutcomeUnknown("the connection broke before the answer: %s" % lost) from None
                    error = ConnectionFailed(str(lost))
                    retry = True
                except ConnectionFailed as e:
                    error, retry = e, True
                if not retry or attempt >= self.retries:
                    raise error
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                attempt += 1

    # ---- operations ----

    def hello(self):
        """Says hello again on the current connection (opening one if
        needed); returns the node's answer: ``version``, ``node``,
        ``cluster``, ``role``."""
        with self._lock:
            if self._sock is None:
                self._connect()
            else:
                self.server = self._hello()
            return dict(self.server)

    def get(self, bucket, key, r=None, repair=None, sloppy_quorum=None, timeout_ms=None):
        """Reads a key: a :class:`GetResult`."""
        op = {"Get": {"bucket": _bytes(bucket, "bucket"), "key": _bytes(key, "key"),
                      "options": _read_options(r, repair, sloppy_quorum, timeout_ms)}}
        return _object(_reply(self.execute(op, False), "Object"))

    def put(self, bucket, key, value, context=None, w=None, sloppy_quorum=None, timeout_ms=None):
        """Writes a value; with the ``context`` of an earlier read it
        replaces what that read saw, without it it is a blind write (a new
        sibling in a ``Siblings`` bucket). A :class:`WriteResult`."""
        op = {"Put": {"bucket": _bytes(bucket, "bucket"), "key": _bytes(key, "key"),
                      "value": _bytes(value, "value"),
                      "context": None if context is None else _bytes(context, "context"),
                      "options": _write_options(w, sloppy_quorum, timeout_ms)}}
        return _written(_reply(self.execute(op, True), "Written"))

    def delete(self, bucket, key, context=None, w=None, sloppy_quorum=None, timeout_ms=None):
        """Deletes a key (a tombstone); pass the context of a read to
        remove what it saw. A :class:`WriteResult`."""
        op = {"Delete": {"bucket": _bytes(bucket, "bucket"), "key": _bytes(key, "key"),
                         "context": None if context is None else _bytes(context, "context"),
                         "options": _write_options(w, sloppy_quorum, timeout_ms)}}
        return _written(_reply(self.execute(op, True), "Written"))

    def scan_page(self, bucket, cursor=None, limit=100, r=None, sloppy_quorum=None, timeout_ms=None):
        """One page of a bucket's keys in token order: ``(keys, cursor)``;
        the scan is done when ``cursor`` is ``None`` (a page may be empty
        before that)."""
        op = {"Scan": {"bucket": _bytes(bucket, "bucket"),
                       "cursor": None if cursor is None else _bytes(cursor, "cursor"),
                       "limit": limit,
                       "options": _read_options(r, None, sloppy_quorum, timeout_ms)}}
        keys = _reply(self.execute(op, False), "Keys")
        return list(keys.get("keys") or []), keys.get("cursor")

    def scan(self, bucket, page=100, r=None, sloppy_quorum=None, timeout_ms=None):
        """Every key of ``bucket``, page by page: an iterator of bytes.
        Not a snapshot: a key present for the whole scan comes exactly
        once; one written or deleted meanwhile may or may not."""
        cursor = None
        while True:
            keys, cursor = self.scan_page(bucket, cursor, page, r, sloppy_quorum, timeout_ms)
            for key in keys:
                yield key
            if cursor is None:
                return

    def multi_get(self, bucket, keys, r=None, repair=None, sloppy_quorum=None, timeout_ms=None):
        """Reads up to 1,000 keys in one request: a list with one item per
        key, in order, each a :class:`GetResult` or the
        :class:`RingkvError` that key got. Not a snapshot."""
        keys = [_bytes(k, "key") for k in keys]
        op = {"MultiGet": {"bucket": _bytes(bucket, "bucket"), "keys": keys,
                           "options": _read_options(r, repair, sloppy_quorum, timeout_ms)}}
        items = _reply(self.execute(op, False), "Objects").get("items") or []
        if len(items) != len(keys):
            raise RingkvError("Protocol", "%d items for %d keys" % (len(items), len(keys)))
        return _items(items, _object)

    def multi_put(self, bucket, items, w=None, sloppy_quorum=None, timeout_ms=None):
        """Writes up to 1,000 keys in one request (each key once). ``items``
        are ``(key, value)`` or ``(key, value, context)`` tuples. A list
        with one item per write, in order, each a :class:`WriteResult` or
        the :class:`RingkvError` that write got. No atomicity across keys:
        some may be stored and others not."""
        puts = []
        for item in items:
            if len(item) == 2:
                (key, value), context = item, None
            else:
                key, value, context = item
            puts.append({"key": _bytes(key, "key"), "value": _bytes(value, "value"),
                         "context": None if context is None else _bytes(context, "context")})
        op = {"MultiPut": {"bucket": _bytes(bucket, "bucket"), "items": puts,
                           "options": _write_options(w, sloppy_quorum, timeout_ms)}}
        got = _reply(self.execute(op, True), "WrittenMany").get("items") or []
        if len(got) != len(puts):
            raise RingkvError("Protocol", "%d items for %d writes" % (len(got), len(puts)))
        return _items(got, _written)

    def status(self):
        """The connected node's view of the cluster, as the node sends it
        (a dict: ``node``, ``cluster``, ``members``, ``keys``, ...)."""
        return _reply(self.execute("Status", False), "Status")

    def get_bucket(self, bucket):
        """A bucket's properties: a dict with ``n``, ``r``, ``w`` (``"one"``,
        ``"quorum"``, ... or a count), ``policy`` (``"Siblings"``,
        ``"Lww"``, ``{"Crdt": kind}``, ``{"Script": name}``),
        ``sloppy_quorum``, ``timeout_ms``."""
        op = {"GetBucket": {"bucket": _bytes(bucket, "bucket")}}
        return self._props(_reply(self.execute(op, False), "Bucket"))

    def set_bucket(self, bucket, **props):
        """Sets a bucket's properties cluster-wide (needs the ``admin``
        role); properties not given keep their current values. Returns them
        as stored."""
        unknown = set(props) - {"n", "r", "w", "policy", "sloppy_quorum", "timeout_ms"}
        if unknown:
            raise TypeError("unknown bucket properties: %s" % ", ".join(sorted(unknown)))
        current = self.get_bucket(bucket)
        current.update(props)
        wire = {
            "n": current["n"],
            "r": _consistency(current["r"]),
            "w": _consistency(current["w"]),
            "policy": current["policy"],
            "sloppy_quorum": bool(current["sloppy_quorum"]),
            "timeout_ms": current["timeout_ms"],
        }
        op = {"SetBucket": {"bucket": _bytes(bucket, "bucket"), "props": wire}}
        return self._props(_reply(self.execute(op, True), "Bucket"))

    @staticmethod
    def _props(reply):
        p = reply.get("props") or {}
        return {
            "n": p.get("n"),
            "r": _level_from(p.get("r")),
            "w": _level_from(p.get("w")),
            "policy": p.get("policy"),
            "sloppy_quorum": p.get("sloppy_quorum"),
            "timeout_ms": p.get("timeout_ms"),
        }


class _Lost(Exception):
    """A request sent whose answer never came."""


def connect(addrs, user=None, password=None, timeout=5.0, retries=4, client_name="ringkv-python"):
    """Opens a :class:`Client` and says hello to the first node that
    answers; raises :class:`RingkvError` if none does or the credentials
    are refused."""
    client = Client(addrs, user, password, timeout, retries, client_name)
    client.hello()
    return client
