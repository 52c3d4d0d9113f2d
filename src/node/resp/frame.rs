//! RESP framing: the request decoder (with its limits) and the reply
//! encoder, for RESP2 and RESP3.
//!
//! Written here rather than taken from `redis-protocol` (6.0): requests
//! are a small subset of RESP (an array of bulk strings, or an inline
//! line), and that crate decodes every frame type, re-parses a partial
//! frame from its first byte on every read, recurses into nested arrays
//! without a depth bound, and cannot refuse a bulk length or an array
//! count before it buffers what they announce. The decoder below is
//! incremental (each byte is examined once), takes only arrays of bulk
//! strings or inline lines, and checks every length header against
//! [`Limits`] before it waits for the bytes the header announces.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::node::shares::{ByteBudget, Held};

/// What one request may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Arguments of one command at most (the array count).
    pub max_args: usize,
    /// Bytes of one argument at most (a bulk string's length).
    pub max_arg_bytes: usize,
    /// Bytes of all the arguments of one command at most.
    pub max_command_bytes: usize,
}

/// Longest inline command line, as in redis (64 KiB).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// Longest `*<count>` or `$<len>` header line looked at.
const MAX_HEADER_BYTES: usize = 32;

/// Arguments over this size are charged to the port's request budget when
/// their length header arrives.
pub const LARGE_ARG_BYTES: usize = 64 * 1024;

/// Why a request stream cannot be read on: answered with
/// `-ERR Protocol error: <text>`, and the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// The port-wide budget of bytes of large arguments being received or
/// run: the client port's kind ([`ByteBudget`]).
pub type Budget = ByteBudget;

/// A decoded command: its arguments, and its share of the budget (held
/// until the command has run).
#[derive(Debug, Default)]
pub struct Command {
    /// The arguments, the command's name first.
    pub args: Vec<Bytes>,
    /// The budget held for its large arguments.
    pub held: Vec<Held>,
}

/// An array being received.
struct Partial {
    left: usize,
    bytes: usize,
    command: Command,
}

/// The incremental request decoder.
pub struct Decoder {
    limits: Limits,
    budget: Arc<Budget>,
    partial: Option<Partial>,
    /// The budget taken for the bulk string whose header was seen and whose
    /// body is still arriving.
    pending: Option<(usize, Held)>,
}

fn header_line(src: &[u8], what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &src[..src.len().min(MAX_HEADER_BYTES)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if src.len() >= MAX_HEADER_BYTES {
            return Err(ProtocolError(format!("too big {what} string")));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&src[1..end])
        .ok()
        .and_then(|t| t.parse::<i64>().ok());
    match text {
        Some(n) => Ok(Some((n, end + 2))),
        None => Err(ProtocolError(format!("invalid {what} length"))),
    }
}

impl Decoder {
    /// A decoder held to `limits`, charging large arguments to `budget`.
    pub fn new(limits: Limits, budget: Arc<Budget>) -> Decoder {
        Decoder {
            limits,
            budget,
            partial: None,
            pending: None,
        }
    }

    /// Changes the limits (after authentication).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether part of a command has been consumed from the stream.
    pub fn in_command(&self) -> bool {
        self.partial.is_some()
    }

    /// The next complete command in `src`, consuming it; `None` until one
    /// is complete. An empty command (`*0`, a blank inline line) has no
    /// arguments; redis ignores it, and so should the caller.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        if self.partial.is_none() {
            let Some(&first) = src.first() else {
                return Ok(None);
            };
            if first != b'*' {
                return self.inline(src);
            }
            let Some((count, used)) = header_line(src, "mbulk count")? else {
                return Ok(None);
            };
            if count > self.limits.max_args as i64 {
                return Err(ProtocolError("invalid multibulk length".into()));
            }
            let _ = src.split_to(used);
            if count <= 0 {
                return Ok(Some(Command::default()));
            }
            let count = count as usize;
            self.partial = Some(Partial {
                left: count,
                bytes: 0,
                command: Command {
                    args: Vec::with_capacity(count.min(1024)),
                    held: Vec::new(),
                },
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return Ok(None);
        };
        while partial.left > 0 {
            let Some(&first) = src.first() else {
                return Ok(None);
            };
            if first != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(first).escape_default()
                )));
            }
            let Some((len, used)) = header_line(src, "bulk")? else {
                return Ok(None);
            };
            if len < 0 || len as u64 > self.limits.max_arg_bytes as u64 {
                return Err(ProtocolError(format!(
                    "invalid bulk length (an argument may hold at most {} bytes)",
                    self.limits.max_arg_bytes
                )));
            }
            let len = len as usize;
            if partial.bytes + len > self.limits.max_command_bytes {
                return Err(ProtocolError(format!(
                    "command too large (at most {} bytes of arguments)",
                    self.limits.max_command_bytes
                )));
            }
            if len > LARGE_ARG_BYTES && self.pending.is_none() {
                match self.budget.take(len) {
                    Some(held) => self.pending = Some((len, held)),
                    None => {
                        return Err(ProtocolError(format!(
                            "the node is receiving {} MiB of large arguments already; a {len} \
                             byte argument would go past that (retry later)",
                            self.budget.limit() >> 20
                        )))
                    }
                }
            }
            if src.len() < used + len + 2 {
                src.reserve(used + len + 2 - src.len());
                return Ok(None);
            }
            if &src[used + len..used + len + 2] != b"\r\n" {
                return Err(ProtocolError("expected CRLF after a bulk string".into()));
            }
            let _ = src.split_to(used);
            let arg = src.split_to(len).freeze();
            let _ = src.split_to(2);
            if let Some((_, held)) = self.pending.take() {
                partial.command.held.push(held);
            }
            partial.bytes += len;
            partial.left -= 1;
            partial.command.args.push(arg);
        }
        Ok(self.partial.take().map(|p| p.command))
    }

    /// An inline command: one line, arguments split at blanks.
    fn inline(&mut self, src: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        let window = &src[..src.len().min(MAX_INLINE_BYTES)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            if src.len() >= MAX_INLINE_BYTES {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(None);
        };
        let line = src.split_to(end + 1);
        let mut line = &line[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let args: Vec<Bytes> = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(Bytes::copy_from_slice)
            .collect();
        if args.len() > self.limits.max_args {
            return Err(ProtocolError("invalid multibulk length".into()));
        }
        Ok(Some(Command {
            args,
            held: Vec::new(),
        }))
    }
}

/// A reply, encoded for the connection's protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the text after the `-`, its first word the error's kind.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$3 abc`.
    Bulk(Bytes),
    /// No value: `$-1` (RESP2), `_` (RESP3).
    Null,
    /// `*n`.
    Array(Vec<Value>),
    /// A set: `~n` (RESP3), an array in RESP2.
    Set(Vec<Value>),
    /// A map: `%n` (RESP3), a flat array of keys and values in RESP2.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error with the `ERR` kind.
    pub fn err(text: impl std::fmt::Display) -> Value {
        Value::Error(format!("ERR {text}"))
    }

    /// A bulk string of text.
    pub fn text(text: impl Into<String>) -> Value {
        Value::Bulk(Bytes::from(text.into()))
    }

    /// Appends the encoding to `out` (`resp3`: the RESP3 types).
    pub fn encode(&self, resp3: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend(s.bytes().map(no_newline));
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend(s.bytes().map(no_newline));
                out.extend_from_slice(b"\r\n");
            }
            Value::Int(n) => {
                let _ = write!(out, ":{n}\r\n");
            }
            Value::Bulk(b) => {
                let _ = write!(out, "${}\r\n", b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Value::Null => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                items.iter().for_each(|v| v.encode(resp3, out));
            }
            Value::Set(items) => {
                let _ = write!(out, "{}{}\r\n", if resp3 { '~' } else { '*' }, items.len());
                items.iter().for_each(|v| v.encode(resp3, out));
            }
            Value::Map(pairs) => {
                if resp3 {
                    let _ = write!(out, "%{}\r\n", pairs.len());
                } else {
                    let _ = write!(out, "*{}\r\n", pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(resp3, out);
                    v.encode(resp3, out);
                }
            }
        }
    }

    /// Bytes of bulk strings in the value (what a reply budget counts).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Value::Bulk(b) => b.len(),
            Value::Array(v) | Value::Set(v) => v.iter().map(Value::payload_bytes).sum(),
            Value::Map(p) => p
                .iter()
                .map(|(k, v)| k.payload_bytes() + v.payload_bytes())
                .sum(),
            _ => 0,
        }
    }
}

/// Simple strings and errors cannot hold CR or LF.
fn no_newline(b: u8) -> u8 {
    if b == b'\r' || b == b'\n' {
        b' '
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_args: 8,
            max_arg_bytes: 200 << 10,
            max_command_bytes: 300 << 10,
        }
    }

    fn decoder(budget: usize) -> (Decoder, Arc<Budget>) {
        let b = Budget::new(budget);
        (Decoder::new(limits(), b.clone()), b)
    }

    fn args(c: &Command) -> Vec<&[u8]> {
        c.args.iter().map(|a| a.as_ref()).collect()
    }

    #[test]
    fn commands_arrive_whole_or_in_pieces_and_in_order() {
        let (mut d, _) = decoder(1 << 20);
        let wire =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n";
        // Whole: three commands, in order.
        let mut buf = BytesMut::from(&wire[..]);
        let a = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args(&a), vec![&b"GET"[..], b"k"]);
        let b = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args(&b), vec![&b"SET"[..], b"k", b""]);
        let c = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args(&c), vec![&b"PING"[..]]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
        // One byte at a time: the same commands.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in wire.iter() {
            buf.extend_from_slice(&[byte]);
            while let Some(c) = d.decode(&mut buf).unwrap() {
                got.push(c.args.len());
            }
        }
        assert_eq!(got, vec![2, 3, 1]);
    }

    #[test]
    fn lengths_past_the_limits_are_refused_before_their_bytes_arrive() {
        let (mut d, _) = decoder(1 << 20);
        let err = d.decode(&mut BytesMut::from(&b"*9\r\n"[..])).unwrap_err();
        assert!(err.0.contains("multibulk length"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d
            .decode(&mut BytesMut::from(&b"*1\r\n$204801\r\n"[..]))
            .unwrap_err();
        assert!(err.0.contains("bulk length"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d
            .decode(&mut BytesMut::from(&b"*1\r\n$-5\r\n"[..]))
            .unwrap_err();
        assert!(err.0.contains("bulk length"), "{err:?}");
        // A command's arguments together past the limit.
        let (mut d, _) = decoder(1 << 20);
        let mut buf = BytesMut::from(&b"*2\r\n$204800\r\n"[..]);
        buf.extend_from_slice(&vec![b'x'; 204800]);
        buf.extend_from_slice(b"\r\n$204800\r\n");
        let err = d.decode(&mut buf).unwrap_err();
        assert!(err.0.contains("command too large"), "{err:?}");
        // Garbage where a header should be.
        let (mut d, _) = decoder(1 << 20);
        let err = d
            .decode(&mut BytesMut::from(&b"*1\r\n:5\r\n"[..]))
            .unwrap_err();
        assert!(err.0.contains("expected '$'"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d.decode(&mut BytesMut::from(&b"*x\r\n"[..])).unwrap_err();
        assert!(err.0.contains("invalid mbulk count length"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d.decode(&mut BytesMut::from(&[b'*'; 40][..])).unwrap_err();
        assert!(err.0.contains("too big"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d
            .decode(&mut BytesMut::from(&b"*1\r\n$1\r\nab\r\n"[..]))
            .unwrap_err();
        assert!(err.0.contains("CRLF"), "{err:?}");
        let (mut d, _) = decoder(1 << 20);
        let err = d
            .decode(&mut BytesMut::from(&vec![b'a'; MAX_INLINE_BYTES][..]))
            .unwrap_err();
        assert!(err.0.contains("inline"), "{err:?}");
    }

    #[test]
    fn large_arguments_are_charged_on_their_header_and_given_back() {
        let (mut d, budget) = decoder(250 << 10);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$153600\r\nabc"[..]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert_eq!(budget.used(), 150 << 10);
        // A second connection's large argument would pass the budget.
        let mut other = Decoder::new(limits(), budget.clone());
        let err = other
            .decode(&mut BytesMut::from(&b"*1\r\n$153600\r\n"[..]))
            .unwrap_err();
        assert!(err.0.contains("retry later"), "{err:?}");
        buf.extend_from_slice(&vec![b'x'; (150 << 10) - 3]);
        buf.extend_from_slice(b"\r\n");
        let c = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(c.args[1].len(), 150 << 10);
        assert_eq!(budget.used(), 150 << 10);
        drop(c);
        assert_eq!(budget.used(), 0);
        // Dropped mid-argument: given back too.
        let mut d = Decoder::new(limits(), budget.clone());
        assert!(d
            .decode(&mut BytesMut::from(&b"*1\r\n$153600\r\n"[..]))
            .unwrap()
            .is_none());
        assert_eq!(budget.used(), 150 << 10);
        drop(d);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn inline_and_empty_commands() {
        let (mut d, _) = decoder(1 << 20);
        let mut buf = BytesMut::from(&b"  set  k v\r\n\r\n*0\r\n"[..]);
        let c = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args(&c), vec![&b"set"[..], b"k", b"v"]);
        assert!(d.decode(&mut buf).unwrap().unwrap().args.is_empty());
        assert!(d.decode(&mut buf).unwrap().unwrap().args.is_empty());
    }

    #[test]
    fn replies_encode_for_each_protocol() {
        let enc = |v: &Value, resp3| {
            let mut out = Vec::new();
            v.encode(resp3, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(enc(&Value::Null, false), "$-1\r\n");
        assert_eq!(enc(&Value::Null, true), "_\r\n");
        let map = Value::Map(vec![(Value::text("a"), Value::Int(1))]);
        assert_eq!(enc(&map, false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, true), "%1\r\n$1\r\na\r\n:1\r\n");
        let set = Value::Set(vec![Value::text("x")]);
        assert_eq!(enc(&set, false), "*1\r\n$1\r\nx\r\n");
        assert_eq!(enc(&set, true), "~1\r\n$1\r\nx\r\n");
        assert_eq!(enc(&Value::err("a\r\nb"), false), "-ERR a  b\r\n");
    }
}
