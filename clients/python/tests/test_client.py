"""Tests of the ``ringkv`` package against a real node's client port.

    PYTHONPATH=clients/python python3 clients/python/tests/test_client.py HOST:PORT

Run by ``tests/client_python_package.rs``, which starts a node (no client
authentication: the connection is ``admin``) and passes its address.
Standard library only (``unittest``). Every test uses its own bucket, so
they may run in any order against one node.
"""

import os
import sys
import unittest
import uuid

import ringkv
from ringkv import _cbor

ADDR = None


def fresh_bucket(name):
    return "py-%s-%s" % (name, uuid.uuid4().hex[:8])


class CborTest(unittest.TestCase):
    def test_round_trips(self):
        for value in [0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -24, -25, -2**63,
                      b"", b"\x00\xff", "", "héllo", [], [1, [2, b"x"]], {}, {"a": {"b": None}},
                      True, False, None, 1.5]:
            self.assertEqual(_cbor.decode(_cbor.encode(value)), value)

    def test_known_bytes(self):
        # From the golden vectors of docs/protocol.md section 1.
        self.assertEqual(_cbor.encode({"id": 13, "op": "Ring"}).hex(), "a26269640d626f706452696e67")
        # Half and single floats, a tag, indefinite lengths: accepted.
        self.assertEqual(_cbor.decode(bytes.fromhex("f93800")), 0.5)
        self.assertEqual(_cbor.decode(bytes.fromhex("fa3fc00000")), 1.5)
        self.assertEqual(_cbor.decode(bytes.fromhex("c24101")), b"\x01")
        self.assertEqual(_cbor.decode(bytes.fromhex("9f0102ff")), [1, 2])
        self.assertEqual(_cbor.decode(bytes.fromhex("5f41014102ff")), b"\x01\x02")

    def test_malformed_input_is_refused(self):
        for bad in ["", "18", "62 61", "a1 01", "0000", "ff", "1c"]:
            with self.assertRaises(_cbor.CBORError, msg=bad):
                _cbor.decode(bytes.fromhex(bad.replace(" ", "")))
        with self.assertRaises(_cbor.CBORError):
            _cbor.encode(2**64)
        with self.assertRaises(_cbor.CBORError):
            _cbor.encode(object())


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.c = ringkv.connect([ADDR], timeout=10)

    def tearDown(self):
        self.c.close()

    def test_hello_and_status(self):
        hello = self.c.hello()
        self.assertEqual(hello["version"], ringkv.PROTOCOL_VERSION)
        self.assertIsInstance(hello["node"], int)
        self.assertIsInstance(hello["cluster"], str)
        self.assertEqual(hello["role"], "admin")
        status = self.c.status()
        self.assertEqual(status["node"], hello["node"])
        self.assertEqual(status["cluster"], hello["cluster"])
        self.assertTrue(any(m["node"] == hello["node"] for m in status["members"]))

    def test_put_get_round_trip(self):
        b = fresh_bucket("rt")
        value = bytes(range(256)) * 40
        written = self.c.put(b, "k", value, w="quorum", timeout_ms=4000)
        self.assertTrue(written.context)
        self.assertIn(self.c.server["node"], written.receipt.answered)
        got = self.c.get(b, b"k", r="one", repair="before_answer", timeout_ms=4000)
        self.assertEqual(got.value, value)
        self.assertEqual(got.siblings, [])
        self.assertTrue(got.context)
        # Not found: no value, no siblings, an empty context.
        missing = self.c.get(b, "nothing-here")
        self.assertEqual((missing.value, missing.siblings, missing.context), (None, [], b""))
        # UTF-8 keys are their bytes.
        self.c.put(b, "ключ", "значение")
        self.assertEqual(self.c.get(b, "ключ".encode()).value, "значение".encode())

    def test_siblings_resolved_with_the_context(self):
        b = fresh_bucket("sib")
        props = self.c.set_bucket(b, policy="Siblings")
        self.assertEqual(props["policy"], "Siblings")
        # Two blind writes: both kept.
        self.c.put(b, "k", b"one")
        self.c.put(b, "k", b"two")
        got = self.c.get(b, "k")
        self.assertIsNone(got.value)
        self.assertEqual(sorted(s.value for s in got.siblings), [b"one", b"two"])
        for s in got.siblings:
            self.assertIsInstance(s.timestamp_ms, int)
            self.assertEqual(s.node, self.c.server["node"])
        # A write with that read's context replaces both.
        self.c.put(b, "k", b"merged", context=got.context)
        got = self.c.get(b, "k")
        self.assertEqual(got.value, b"merged")
        self.assertEqual(got.siblings, [])

    def test_delete(self):
        b = fresh_bucket("del")
        self.c.put(b, "k", b"v")
        got = self.c.get(b, "k")
        self.c.delete(b, "k", context=got.context)
        got = self.c.get(b, "k")
        self.assertEqual((got.value, got.siblings), (None, []))
        # A blind write after the delete is the only value.
        self.c.put(b, "k", b"again", context=got.context or None)
        self.assertEqual(self.c.get(b, "k").value, b"again")

    def test_scan_lists_every_key_once(self):
        b = fresh_bucket("scan")
        keys = [("key-%03d" % i).encode() for i in range(250)]
        for start in range(0, len(keys), 100):
            results = self.c.multi_put(b, [(k, b"v") for k in keys[start:start + 100]])
            for r in results:
                self.assertIsInstance(r, ringkv.WriteResult, r)
        # Deleted keys are not listed.
        gone = self.c.get(b, keys[0])
        self.c.delete(b, keys[0], context=gone.context)
        for page in (1, 7, 1000):
            listed = list(self.c.scan(b, page=page))
            self.assertEqual(len(listed), len(set(listed)), "a key listed twice (page %d)" % page)
            self.assertEqual(set(listed), set(keys[1:]), "page %d" % page)
        # A page by hand: keys, then a cursor until done.
        keys_1, cursor = self.c.scan_page(b, None, 5)
        self.assertLessEqual(len(keys_1), 5)
        self.assertIsNotNone(cursor)

    def test_multi_ops(self):
        b = fresh_bucket("multi")
        results = self.c.multi_put(b, [("a", b"1"), ("b", b"2"), ("c", b"3")], w=1)
        self.assertEqual(len(results), 3)
        self.assertTrue(all(isinstance(r, ringkv.WriteResult) for r in results), results)
        # "all" is never lowered: a lone node cannot write all 3 copies,
        # and every item says so, certainly not applied.
        results = self.c.multi_put(b, [("e", b"5"), ("f", b"6")], w="all", timeout_ms=2000)
        for r in results:
            self.assertIsInstance(r, ringkv.RingkvError)
            self.assertEqual(r.code, "Unavailable")
            self.assertTrue(r.retryable)
            self.assertIs(r.indefinite, False)
            self.assertEqual((r.needed, r.got), (3, 1))
        got = self.c.multi_get(b, ["c", "missing", "a", "a"])
        self.assertEqual([g.value for g in got], [b"3", None, b"1", b"1"])
        # Write back with a context, beside one refused item: the others
        # are written.
        results = self.c.multi_put(b, [("a", b"10", got[2].context), ("b", b"20", b"\xff\x00"), ("d", b"4")])
        self.assertIsInstance(results[0], ringkv.WriteResult)
        self.assertIsInstance(results[1], ringkv.RingkvError)
        self.assertEqual(results[1].code, "BadRequest")
        self.assertFalse(results[1].retryable)
        self.assertIsInstance(results[2], ringkv.WriteResult)
        got = self.c.multi_get(b, ["a", "b", "d"])
        self.assertEqual([g.value for g in got], [b"10", b"2", b"4"])
        self.assertEqual(got[0].siblings, [])
        # Refused whole: no keys, a key twice in one write batch.
        with self.assertRaises(ringkv.RingkvError) as e:
            self.c.multi_get(b, [])
        self.assertEqual(e.exception.code, "InvalidArgument")
        with self.assertRaises(ringkv.RingkvError) as e:
            self.c.multi_put(b, [("x", b"1"), ("x", b"2")])
        self.assertEqual(e.exception.code, "InvalidArgument")
        self.assertIs(e.exception.indefinite, False)
        self.assertIsNone(self.c.get(b, "x").value)

    def test_invalid_arguments_carry_their_code(self):
        b = fresh_bucket("bad")
        with self.assertRaises(ringkv.RingkvError) as e:
            self.c.get(b, b"k" * 8193)
        self.assertEqual(e.exception.code, "InvalidArgument")
        self.assertFalse(e.exception.retryable)
        with self.assertRaises(ringkv.RingkvError) as e:
            self.c.put(b, "k", b"v", w=17)
        self.assertEqual(e.exception.code, "InvalidArgument")
        self.assertIs(e.exception.indefinite, False)
        with self.assertRaises(ringkv.RingkvError) as e:
            self.c.scan_page(b, None, 0)
        self.assertEqual(e.exception.code, "InvalidArgument")
        # The connection still serves.
        self.c.put(b, "k", b"fine")
        self.assertEqual(self.c.get(b, "k").value, b"fine")

    def test_unreachable_nodes_are_a_connection_error(self):
        with self.assertRaises(ringkv.RingkvError) as e:
            ringkv.connect(["127.0.0.1:1"], timeout=2, retries=1)
        self.assertEqual(e.exception.code, "Connection")
        self.assertTrue(e.exception.retryable)
        # A dead address first, the node second: the client goes on.
        with ringkv.connect(["127.0.0.1:1", ADDR], timeout=5) as c:
            self.assertEqual(c.status()["node"], self.c.server["node"])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_client.py HOST:PORT [unittest args]")
    ADDR = sys.argv.pop(1)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    unittest.main(verbosity=2)
