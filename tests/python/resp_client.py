"""The Python `redis` package (redis-py >= 5) against a ringkv node's RESP
port, with the package's own API as an application would use it.

Run by tests/node_resp/clients.rs against a real `ringkv-node`:

    python3 tests/python/resp_client.py PORT

The node's buckets are those of a fresh cluster, by their names: `db0`
last-writer-wins for strings, `db0.counters` (a PN-counter) for INCR and
friends, `db0.sets` (an OR-set) for SADD and friends. The script checks
strings, counters, sets, a pipeline of a few hundred commands, RESP3
(`protocol=3`), WRONGTYPE and an unsupported command. Exit status 0 and
the last line "all checks passed" mean every check held; the first failed
check prints "FAILED: ..." and exits 1.
"""

import socket
import sys
import threading
import traceback

import redis


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eq(got, want, what):
    check(got == want, f"{what}: got {got!r}, want {want!r}")


def error_of(fn, *args, **kwargs):
    """The ResponseError fn raises (fails if it returns instead)."""
    try:
        got = fn(*args, **kwargs)
    except redis.exceptions.ResponseError as e:
        return str(e)
    raise AssertionError(f"{fn.__name__}{args}: expected a ResponseError, got {got!r}")


def client(port, **kw):
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=30, socket_connect_timeout=10, **kw
    )


def strings(r):
    eq(r.ping(), True, "PING")
    eq(r.get("s:none"), None, "GET of a missing key")
    eq(r.set("s:a", "1"), True, "SET")
    eq(r.get("s:a"), b"1", "GET after SET")
    eq(r.set("s:a", "2"), True, "SET again")
    eq(r.get("s:a"), b"2", "GET sees the second SET")
    eq(r.set("s:a", "3", get=True), b"2", "SET ... GET returns the old value")
    eq(r.get("s:a"), b"3", "GET after SET ... GET")
    eq(r.set("s:new", "x", get=True), None, "SET ... GET of a missing key")
    eq(r.mset({"s:b": "bee", "s:c": "sea-value"}), True, "MSET")
    eq(
        r.mget(["s:a", "s:none", "s:b", "s:c"]),
        [b"3", None, b"bee", b"sea-value"],
        "MGET",
    )
    eq(r.strlen("s:c"), 9, "STRLEN")
    eq(r.strlen("s:none"), 0, "STRLEN of a missing key")
    eq(r.exists("s:a", "s:b", "s:none", "s:a"), 3, "EXISTS counts a key named twice")
    eq(r.delete("s:a", "s:none"), 1, "DEL counts the keys that held something")
    eq(r.get("s:a"), None, "GET after DEL")
    eq(r.exists("s:a"), 0, "EXISTS after DEL")
    eq(r.delete("s:a"), 0, "DEL of a deleted key")
    # Binary-safe values and keys, and text through decode_responses.
    blob = bytes(range(256)) * 4
    eq(r.set(b"s:\x00bin\xff", blob), True, "SET of a binary value")
    eq(r.get(b"s:\x00bin\xff"), blob, "GET of a binary value")
    text = client(r.connection_pool.connection_kwargs["port"], decode_responses=True)
    eq(text.set("s:text", "h\u00e9llo \u2713"), True, "SET of UTF-8 text")
    eq(text.get("s:text"), "h\u00e9llo \u2713", "GET of UTF-8 text")
    eq(text.strlen("s:text"), len("h\u00e9llo \u2713".encode()), "STRLEN counts bytes")
    text.close()
    print("strings ok")


def counters(r):
    eq(r.incr("c:n"), 1, "INCR of a new counter")
    eq(r.incrby("c:n", 41), 42, "INCRBY")
    eq(r.decr("c:n"), 41, "DECR")
    eq(r.decrby("c:n", 50), -9, "DECRBY")
    eq(r.incrby("c:n", 0), -9, "INCRBY 0")
    eq(r.incr("c:other"), 1, "INCR of another counter")
    why = error_of(r.incrby, "c:n", "x")
    check("not an integer" in why, f"INCRBY x: {why!r}")
    # Counters are their own keyspace (bucket db0.counters): the string
    # GET in db0 does not see them.
    eq(r.get("c:n"), None, "GET of a counter key in db0")
    print("counters ok")


def sets(r):
    eq(r.sadd("t:s", "a", "b", "a"), 2, "SADD counts new members once")
    eq(r.sadd("t:s", "b", "c"), 1, "SADD of one old and one new member")
    eq(r.srem("t:s", "a", "zz"), 1, "SREM counts the members it removed")
    eq(r.scard("t:s"), 2, "SCARD")
    check(r.sismember("t:s", "b") in (1, True), "SISMEMBER of a member")
    check(r.sismember("t:s", "a") in (0, False), "SISMEMBER of a removed member")
    eq(r.smembers("t:s"), {b"b", b"c"}, "SMEMBERS")
    eq(r.smembers("t:none"), set(), "SMEMBERS of a missing set")
    eq(r.scard("t:none"), 0, "SCARD of a missing set")
    # Sets are their own keyspace too (bucket db0.sets).
    eq(r.get("t:s"), None, "GET of a set key in db0")
    print("sets ok")


def wrongtype(port):
    """WRONGTYPE through the package: a string command in the counter
    bucket, a counter command in the set bucket, a string GET in the set
    bucket. One connection, since RINGKV.BUCKET is per connection."""
    r = client(port, single_connection_client=True)
    eq(r.execute_command("RINGKV.BUCKET", "db0.counters"), b"OK", "RINGKV.BUCKET")
    eq(r.execute_command("RINGKV.BUCKET"), b"db0.counters", "RINGKV.BUCKET names it")
    # What INCR in db0 wrote is in db0.counters.
    eq(r.get("c:n"), b"-9", "GET in db0.counters sees the total")
    for fn, args in ((r.set, ("c:n", "1")), (r.sadd, ("c:n", "m"))):
        try:
            fn(*args)
        except redis.exceptions.ResponseError as e:
            check(str(e).startswith("WRONGTYPE"), f"{fn.__name__} in db0.counters: {e}")
        else:
            raise AssertionError(f"{fn.__name__} in db0.counters did not raise")
    eq(r.execute_command("RINGKV.BUCKET", "db0.sets"), b"OK", "RINGKV.BUCKET")
    eq(r.smembers("t:s"), {b"b", b"c"}, "SMEMBERS in db0.sets")
    for fn, args in ((r.get, ("t:s",)), (r.incr, ("t:s",))):
        try:
            fn(*args)
        except redis.exceptions.ResponseError as e:
            check(str(e).startswith("WRONGTYPE"), f"{fn.__name__} in db0.sets: {e}")
        else:
            raise AssertionError(f"{fn.__name__} in db0.sets did not raise")
    # The class redis-py gives WRONGTYPE is a ResponseError.
    try:
        r.get("t:s")
    except Exception as e:  # noqa: BLE001 - the class is what is checked
        check(
            isinstance(e, redis.exceptions.ResponseError),
            f"WRONGTYPE raised {type(e)!r}, not a ResponseError",
        )
    eq(r.execute_command("SELECT", "0"), True, "SELECT 0")
    eq(r.set("s:back", "in db0"), True, "SET after SELECT 0")
    r.close()
    print("wrongtype ok")


def unsupported(r):
    why = error_of(r.expire, "s:b", 10)
    check(
        "unsupported command 'expire'" in why and "no TTLs" in why,
        f"EXPIRE's error does not name the reason: {why!r}",
    )
    why = error_of(r.set, "s:b", "v", nx=True)
    check("NX" in why, f"SET NX: {why!r}")
    why = error_of(r.set, "s:b", "v", ex=10)
    check("no TTLs" in why, f"SET EX: {why!r}")
    why = error_of(r.execute_command, "FROBNICATE", "x")
    check("unknown command" in why, f"FROBNICATE: {why!r}")
    # Nothing was written by the refusals.
    eq(r.get("s:b"), b"bee", "the refused SETs wrote nothing")
    # The connection goes on after errors.
    eq(r.ping(), True, "PING after errors")
    print("unsupported ok")


def pipeline(r):
    """A pipeline of a few hundred commands without MULTI; every result
    is checked in order, an error in the middle included."""
    n = 80
    p = r.pipeline(transaction=False)
    want = []
    counts = {}
    for i in range(n):
        key, value = f"p:{i}", f"value-{i}-" + "x" * (i % 13)
        p.set(key, value)
        want.append(True)
        p.get(key)
        want.append(value.encode())
        c = f"pc:{i % 7}"
        counts[c] = counts.get(c, 0) + i
        p.incrby(c, i)
        want.append(counts[c])
        p.sadd("ps", f"m{i % 50}")
        want.append(1 if i < 50 else 0)
        if i == n // 2:
            p.expire(key, 5)
            want.append("error")
    p.scard("ps")
    want.append(50)
    p.mget([f"p:{i}" for i in range(0, n, 10)])
    want.append([f"value-{i}-".encode() + b"x" * (i % 13) for i in range(0, n, 10)])
    got = p.execute(raise_on_error=False)
    eq(len(got), len(want), "pipeline reply count")
    for i, (g, w) in enumerate(zip(got, want)):
        if w == "error":
            check(
                isinstance(g, redis.exceptions.ResponseError) and "no TTLs" in str(g),
                f"pipeline reply {i}: got {g!r}, want the EXPIRE error",
            )
        else:
            eq(g, w, f"pipeline reply {i}")
    print(f"pipeline of {len(want)} commands ok")


def raw(r, *args):
    """A reply as the package's parser reads it off the wire, without the
    command callbacks that turn lists into sets."""
    conn = r.connection
    conn.send_command(*args)
    return conn.read_response()


def wire_reply(port, *args, hello3=False):
    """The bytes of one command's reply on a plain socket of its own,
    after HELLO 3 when asked. Each request is followed by a PING, so a
    reply ends where `+PONG` starts."""

    def frame(*a):
        out = b"*%d\r\n" % len(a)
        for x in a:
            x = x.encode()
            out += b"$%d\r\n%s\r\n" % (len(x), x)
        return out

    def exchange(s, *a):
        s.sendall(frame(*a) + frame("PING"))
        got = b""
        while not got.endswith(b"+PONG\r\n"):
            chunk = s.recv(4096)
            check(chunk, f"the connection closed during {a}")
            got += chunk
        return got[: -len(b"+PONG\r\n")]

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if hello3:
            hello = exchange(s, "HELLO", "3")
            check(hello.startswith(b"%7\r\n"), f"HELLO 3 on the wire: {hello!r}")
        return exchange(s, *args)


def resp3(port):
    r = client(port, protocol=3, single_connection_client=True)
    eq(r.ping(), True, "PING over RESP3")
    hello = raw(r, "HELLO", "3")
    check(isinstance(hello, dict), f"HELLO 3 is not a map: {hello!r}")
    eq(hello.get(b"proto"), 3, "HELLO 3's proto")
    eq(hello.get(b"server"), b"redis", "HELLO 3's server")
    # SMEMBERS of the OR-set: a Python set from the package. Its RESP3
    # parser reads a RESP3 set (`~`) as a list "for predictability", so
    # the wire type is checked on a socket of its own below.
    members = r.smembers("t:s")
    check(isinstance(members, set), f"smembers() over RESP3 is not a set: {members!r}")
    eq(members, {b"b", b"c"}, "smembers() over RESP3")
    eq(sorted(raw(r, "SMEMBERS", "t:s")), [b"b", b"c"], "SMEMBERS over RESP3")
    eq(wire_reply(port, "SMEMBERS", "t:s"), b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n", "RESP2 wire")
    eq(
        wire_reply(port, "SMEMBERS", "t:s", hello3=True),
        b"~2\r\n$1\r\nb\r\n$1\r\nc\r\n",
        "SMEMBERS on the wire after HELLO 3 (a RESP3 set)",
    )
    config = raw(r, "CONFIG", "GET", "databases")
    check(isinstance(config, dict), f"CONFIG GET over RESP3 is not a map: {config!r}")
    eq(config, {b"databases": b"16"}, "CONFIG GET databases over RESP3")
    eq(r.get("s:none"), None, "GET of a missing key over RESP3 (a `_` null)")
    eq(r.set("s:r3", "three"), True, "SET over RESP3")
    eq(r.get("s:r3"), b"three", "GET over RESP3")
    eq(r.incr("c:r3"), 1, "INCR over RESP3")
    p = r.pipeline(transaction=False)
    for i in range(50):
        p.set(f"r3:{i}", str(i))
        p.get(f"r3:{i}")
    got = p.execute()
    eq(got, [x for i in range(50) for x in (True, str(i).encode())], "a RESP3 pipeline")
    # Back to RESP2: the same set is an array again.
    hello2 = raw(r, "HELLO", "2")
    check(isinstance(hello2, list), f"HELLO 2 is not an array: {hello2!r}")
    members = raw(r, "SMEMBERS", "t:s")
    check(isinstance(members, list), f"SMEMBERS over RESP2 is not an array: {members!r}")
    eq(sorted(members), [b"b", b"c"], "SMEMBERS over RESP2")
    r.close()
    print("resp3 ok")


def concurrent(port):
    """Four threads through one connection pool, each on its own keys."""
    r = client(port)
    failures = []

    def worker(t):
        try:
            for i in range(40):
                key = f"th:{t}:{i}"
                eq(r.set(key, f"{t}/{i}"), True, f"SET {key}")
                eq(r.get(key), f"{t}/{i}".encode(), f"GET {key}")
            eq(r.incrby(f"th:{t}:count", 40), 40, "INCRBY from a thread")
        except Exception:  # noqa: BLE001 - reported below
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    check(not any(t.is_alive() for t in threads), "a thread hung")
    check(not failures, "a thread failed:\n" + "\n".join(failures))
    r.close()
    print("threads ok")


def main():
    port = int(sys.argv[1])
    print(f"redis-py {redis.__version__} against 127.0.0.1:{port}")
    major = int(redis.__version__.split(".")[0])
    check(major >= 5, f"redis-py {redis.__version__} is older than 5")
    r = client(port)
    strings(r)
    counters(r)
    sets(r)
    wrongtype(port)
    unsupported(r)
    pipeline(r)
    resp3(port)
    concurrent(port)
    r.close()
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}")
        traceback.print_exc()
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - any other failure is one too
        print(f"FAILED with {type(e).__name__}: {e}")
        traceback.print_exc()
        sys.exit(1)
