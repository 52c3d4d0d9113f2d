//! The commands of the RESP port: each turned into ringkv [`Op`]s run by
//! the same [`Handler`] as the client port, with the connection's state
//! (protocol version, bucket, consistency, user) in a [`Session`].
//! `docs/resp.md` gives every command's meaning.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use serde_bytes::ByteBuf;
use tokio::sync::Semaphore;

use super::frame::Value;
use crate::replication::Receipt;

#[path = "ringkv.rs"]
mod ringkv;
use crate::crdt::{CrdtKind, CrdtValue};
use crate::error::Error;
use crate::node::client_port::{error_reply_for, ClientAuth};
use crate::protocol::{
    Handler, Op, ReadOptions, Reply, ReplyHold, Role, SiblingView, WriteOptions,
    CLIENT_PROTOCOL_VERSION,
};
use crate::replication::Consistency;
use crate::version::ConflictPolicy;

/// The `redis_version` INFO and HELLO report: the oldest version whose
/// commands clients may assume (HELLO, RESP3).
pub const REDIS_VERSION: &str = "7.0.0";

/// Databases `SELECT` accepts (`0` to `DATABASES - 1`), each a bucket
/// `db<n>`; `CONFIG GET databases` reports it.
pub const DATABASES: u32 = 16;

/// How long a bucket's policy, read with `GetBucket`, is used before it
/// is read again. The node checks every op against the bucket's policy
/// itself; the port only needs it to choose the op and the error kind.
const POLICY_TTL: Duration = Duration::from_secs(1);

/// Buckets whose policy one connection remembers.
const POLICY_CACHE: usize = 64;

/// What every connection of a port shares.
pub struct Ctx {
    /// What runs the ops.
    pub handler: Arc<dyn Handler>,
    /// Who may connect.
    pub auth: ClientAuth,
    /// Password checks at once.
    pub auth_slots: Arc<Semaphore>,
    /// Failed AUTHs before the connection is closed.
    pub max_auth_failures: u32,
    /// Bytes of values one reply may carry.
    pub max_reply_bytes: usize,
    /// The next `CLIENT ID`.
    pub next_id: AtomicU64,
}

/// One connection's state.
pub struct Session {
    /// Whether `HELLO 3` switched it to RESP3.
    pub resp3: bool,
    /// The bucket its keys are in.
    pub bucket: Vec<u8>,
    /// The database `SELECT` chose (`None` after `RINGKV.BUCKET`).
    pub db: Option<u32>,
    /// `CLIENT SETNAME`'s name.
    pub name: Option<Bytes>,
    /// `CLIENT ID`.
    pub id: u64,
    /// Read quorum (`None`: the bucket's).
    pub r: Option<Consistency>,
    /// Write quorum (`None`: the bucket's).
    pub w: Option<Consistency>,
    /// What it may do; `None` until it authenticates.
    pub role: Option<Role>,
    /// The user it authenticated as.
    pub user: Option<String>,
    /// Wrong AUTHs so far.
    pub auth_failures: u32,
    /// The peer's address, for CLIENT INFO.
    pub peer: String,
    policies: HashMap<Vec<u8>, (ConflictPolicy, Instant)>,
    /// The receipts of the ops the previous command ran (at most
    /// `ringkv::MAX_RECEIPTS`), for `RINGKV.RECEIPT`.
    receipts: std::sync::Mutex<Vec<Receipt>>,
    /// Whether the client sent `MULTI`, which was refused, and no `EXEC`
    /// or `DISCARD` since: the commands in between are not run.
    refused_multi: bool,
    /// The read budget held by the answers of the pipeline being run,
    /// until the connection has encoded its replies
    /// ([`Session::release_holds`]).
    holds: std::sync::Mutex<ReplyHold>,
}

impl Session {
    /// A new connection's state.
    pub fn new(ctx: &Ctx, peer: String) -> Session {
        Session {
            resp3: false,
            bucket: b"db0".to_vec(),
            db: Some(0),
            name: None,
            id: ctx.next_id.fetch_add(1, Ordering::Relaxed),
            r: None,
            w: None,
            role: match ctx.auth {
                ClientAuth::Open => Some(Role::Admin),
                ClientAuth::Users(_) => None,
            },
            user: None,
            auth_failures: 0,
            peer,
            policies: HashMap::new(),
            receipts: std::sync::Mutex::new(Vec::new()),
            refused_multi: false,
            holds: std::sync::Mutex::new(ReplyHold::default()),
        }
    }

    /// The receipts of the ops the previous command ran.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.receipts.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn keep_receipt(&self, receipt: Receipt) {
        if let Ok(mut r) = self.receipts.lock() {
            if r.len() < ringkv::MAX_RECEIPTS {
                r.push(receipt);
            }
        }
    }

    /// Gives back the read budget held by the answers of the commands run
    /// so far: called once their replies are encoded.
    pub fn release_holds(&mut self) {
        if let Ok(h) = self.holds.get_mut() {
            *h = ReplyHold::default();
        }
    }

    fn keep_hold(&self, hold: ReplyHold) {
        if hold.is_empty() {
            return;
        }
        if let Ok(mut h) = self.holds.lock() {
            h.append(hold);
        }
    }

    fn forget_receipts(&mut self) {
        if let Ok(r) = self.receipts.get_mut() {
            r.clear();
        }
    }
}

/// What the connection does after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Reads the next command.
    Continue,
    /// Writes the reply and closes.
    Close,
}

/// One command of the table: its name, redis's arity (n: exactly n
/// arguments with the name; -n: at least n), flags, and key positions,
/// as `COMMAND` reports them.
struct Spec {
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    first: i64,
    last: i64,
    step: i64,
}

const fn spec(name: &'static str, arity: i64, flags: &'static [&'static str]) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first: 0,
        last: 0,
        step: 0,
    }
}

const fn keyed(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    last: i64,
    step: i64,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first: 1,
        last,
        step,
    }
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const C: &[&str] = &["fast", "loading", "stale"];

/// The commands served.
const COMMANDS: &[Spec] = &[
    spec("ping", -1, C),
    spec("echo", 2, C),
    spec("hello", -1, C),
    spec("auth", -2, C),
    spec("quit", -1, C),
    spec("select", 2, C),
    spec("client", -2, C),
    spec("command", -1, C),
    spec("info", -1, C),
    spec("config", -2, C),
    spec("ringkv.bucket", -1, C),
    spec("ringkv.consistency", -1, C),
    spec("scan", -2, &["readonly"]),
    keyed("ringkv.get", 2, R, 1, 1),
    keyed("ringkv.put", 4, W, 1, 1),
    keyed("ringkv.del", 3, W, 1, 1),
    spec("ringkv.receipt", 1, C),
    spec("ringkv.props", -1, C),
    spec("ringkv.ring", 1, C),
    spec("ringkv.status", 1, C),
    keyed("get", 2, R, 1, 1),
    keyed("set", -3, W, 1, 1),
    keyed("del", -2, W, -1, 1),
    keyed("exists", -2, R, -1, 1),
    keyed("mget", -2, R, -1, 1),
    keyed("mset", -3, W, -1, 2),
    keyed("strlen", 2, R, 1, 1),
    keyed("incr", 2, W, 1, 1),
    keyed("decr", 2, W, 1, 1),
    keyed("incrby", 3, W, 1, 1),
    keyed("decrby", 3, W, 1, 1),
    keyed("sadd", -3, W, 1, 1),
    keyed("srem", -3, W, 1, 1),
    keyed("smembers", 2, R, 1, 1),
    keyed("sismember", 3, R, 1, 1),
    keyed("scard", 2, R, 1, 1),
];

/// Commands redis has and ringkv does not serve, with the reason.
fn unsupported(name: &str) -> Option<&'static str> {
    Some(match name {
        "expire" | "pexpire" | "expireat" | "pexpireat" | "ttl" | "pttl" | "persist" | "setex"
        | "psetex" | "getex" | "expiretime" | "pexpiretime" => {
            "ringkv has no TTLs: a key lives until it is deleted"
        }
        "multi" | "exec" | "discard" | "watch" | "unwatch" => {
            "ringkv has no transactions: each key is its own quorum write, with no atomicity \
             across keys"
        }
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "script" | "function" | "fcall"
        | "fcall_ro" => "ringkv runs no Lua or functions",
        "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "publish" | "ssubscribe"
        | "sunsubscribe" | "spublish" | "pubsub" => "ringkv has no pub/sub",
        "keys" | "dbsize" | "randomkey" => {
            "it needs every key of the cluster at once; iterate with SCAN"
        }
        "flushdb" | "flushall" | "swapdb" | "move" | "copy" | "rename" | "renamenx" => {
            "ringkv has no whole-database or cross-key operations"
        }
        "setnx" | "msetnx" | "getset" | "getdel" | "append" | "setrange" | "incrbyfloat" => {
            "it needs a conditional or read-modify-write step that a quorum cannot make atomic"
        }
        "wait" | "waitaof" => "durability is chosen per write with RINGKV.CONSISTENCY",
        _ => return None,
    })
}

/// An `ERR wrong number of arguments` reply.
pub(super) fn arity_error(name: &str) -> Value {
    Value::err(format!("wrong number of arguments for '{name}' command"))
}

fn wrongtype() -> Value {
    Value::Error(
        "WRONGTYPE Operation against a key holding the wrong kind of value (the bucket's \
         conflict policy does not fit this command)"
            .into(),
    )
}

pub(super) fn not_integer() -> Value {
    Value::err("value is not an integer or out of range")
}

pub(super) fn syntax() -> Value {
    Value::err("syntax error")
}

/// Parses an integer argument as redis does (no blanks, no `+`).
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.starts_with('+') || text.is_empty() || text.len() > 20 {
        return None;
    }
    text.parse().ok()
}

/// Parses a consistency level: `default`, `one`, `two`, `quorum`, `all`
/// or a count from 1.
pub fn parse_consistency(arg: &[u8]) -> Option<Option<Consistency>> {
    let text = String::from_utf8_lossy(arg).to_ascii_lowercase();
    Some(Some(match text.as_str() {
        "default" => return Some(None),
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        n => match n.parse::<u32>() {
            Ok(n) if (1..=16).contains(&n) => Consistency::Count(n),
            _ => return None,
        },
    }))
}

fn consistency_name(c: Option<Consistency>) -> String {
    match c {
        None => "default".into(),
        Some(Consistency::One) => "one".into(),
        Some(Consistency::Two) => "two".into(),
        Some(Consistency::Quorum) => "quorum".into(),
        Some(Consistency::All) => "all".into(),
        Some(Consistency::Count(n)) => n.to_string(),
    }
}

/// A failed op as a RESP error: its code, its message, and for a write
/// whether it may have been applied.
fn error_value(is_write: bool, e: &Error) -> Value {
    let reply = error_reply_for(is_write, e);
    // Said once: some errors (a write's timeout) already say it.
    let outcome = match reply.indefinite {
        _ if reply.message.contains("applied") || reply.message.contains("written") => "",
        Some(true) => " (the write may have been applied)",
        Some(false) => " (nothing was written)",
        None => "",
    };
    Value::err(format!("{:?}: {}{outcome}", reply.code, reply.message))
}

/// Runs one op, after the role check the client port makes: refused with
/// `NOAUTH` or `NOPERM` before it reaches the handler.
pub(super) async fn exec(ctx: &Ctx, s: &Session, command: &str, op: Op) -> Result<Reply, Value> {
    if let Some(needed) = op.required_role() {
        match s.role {
            None => return Err(noauth()),
            Some(role) if role < needed => {
                return Err(Value::Error(format!(
                    "NOPERM User {} has no permissions to run the '{command}' command (role \
                     {role}; it needs {needed})",
                    s.user.as_deref().unwrap_or("default")
                )))
            }
            Some(_) => {}
        }
    }
    let is_write = op.is_write();
    let (mut reply, hold) = ctx
        .handler
        .execute_held(op)
        .await
        .map_err(|e| error_value(is_write, &e))?;
    s.keep_hold(hold);
    match &mut reply {
        Reply::Object { receipt, .. }
        | Reply::Written { receipt, .. }
        | Reply::Counter { receipt, .. }
        | Reply::Set { receipt, .. } => s.keep_receipt(std::mem::take(receipt)),
        _ => {}
    }
    Ok(reply)
}

pub(super) fn noauth() -> Value {
    Value::Error("NOAUTH Authentication required.".into())
}

pub(super) fn buf(b: &[u8]) -> ByteBuf {
    ByteBuf::from(b.to_vec())
}

/// The policy of `bucket` (cached for [`POLICY_TTL`]).
async fn policy(
    ctx: &Ctx,
    s: &mut Session,
    command: &str,
    bucket: &[u8],
) -> Result<ConflictPolicy, Value> {
    if let Some((p, at)) = s.policies.get(bucket) {
        if at.elapsed() < POLICY_TTL {
            return Ok(p.clone());
        }
    }
    let op = Op::GetBucket {
        bucket: buf(bucket),
    };
    match exec(ctx, s, command, op).await? {
        Reply::Bucket { props } => {
            if s.policies.len() >= POLICY_CACHE {
                s.policies.clear();
            }
            s.policies
                .insert(bucket.to_vec(), (props.policy.clone(), Instant::now()));
            Ok(props.policy)
        }
        other => Err(unexpected(&other)),
    }
}

pub(super) fn unexpected(reply: &Reply) -> Value {
    Value::err(format!("unexpected reply from the node: {reply:?}"))
}

fn is_counter(p: &ConflictPolicy) -> bool {
    matches!(
        p,
        ConflictPolicy::Crdt(CrdtKind::PnCounter | CrdtKind::GCounter)
    )
}

fn is_set(p: &ConflictPolicy) -> bool {
    matches!(
        p,
        ConflictPolicy::Crdt(CrdtKind::OrSet | CrdtKind::GSet | CrdtKind::TwoPSet)
    )
}

/// What a quorum read of a key found.
enum Found {
    /// Nothing (never written, or deleted).
    Nothing,
    /// One value (for a counter bucket, its total as text).
    Value(Bytes),
    /// Concurrent writes, as many as this.
    Siblings(usize),
    /// A value of a kind GET cannot show (a set).
    WrongType,
}

/// A quorum read of `key` in the session's bucket at its read quorum: the
/// value, or the siblings, and the context.
pub(super) async fn get(
    ctx: &Ctx,
    s: &Session,
    command: &str,
    key: &[u8],
) -> Result<(Option<ByteBuf>, Vec<SiblingView>, ByteBuf), Value> {
    let op = Op::Get {
        bucket: buf(&s.bucket),
        key: buf(key),
        options: ReadOptions {
            r: s.r,
            ..ReadOptions::default()
        },
    };
    match exec(ctx, s, command, op).await? {
        Reply::Object {
            value,
            siblings,
            context,
            ..
        } => Ok((value, siblings, context)),
        other => Err(unexpected(&other)),
    }
}

/// Reads a key: what it holds and the context to write it back with.
async fn read(
    ctx: &Ctx,
    s: &Session,
    command: &str,
    policy: &ConflictPolicy,
    key: &[u8],
) -> Result<(Found, ByteBuf), Value> {
    let (value, siblings, context) = get(ctx, s, command, key).await?;
    let found = match (value, siblings.len()) {
        (Some(v), _) => match policy {
            ConflictPolicy::Crdt(kind) if is_counter(policy) => {
                match kind.value(&v, crate::config::MAX_VALUE_BYTES) {
                    Ok(CrdtValue::Counter(n)) => Found::Value(Bytes::from(n.to_string())),
                    _ => Found::WrongType,
                }
            }
            ConflictPolicy::Crdt(_) => Found::WrongType,
            _ => Found::Value(Bytes::from(v.into_vec())),
        },
        (None, 0) => Found::Nothing,
        (None, n) => Found::Siblings(n),
    };
    Ok((found, context))
}

fn siblings_error(key: &[u8], n: usize) -> Value {
    Value::err(format!(
        "key '{}' has {n} siblings (concurrent writes); SET it to replace them all, or read \
         them with a ringkv client",
        String::from_utf8_lossy(key)
    ))
}

fn found_value(key: &[u8], found: Found) -> Result<Value, Value> {
    match found {
        Found::Nothing => Ok(Value::Null),
        Found::Value(v) => Ok(Value::Bulk(v)),
        Found::Siblings(n) => Err(siblings_error(key, n)),
        Found::WrongType => Err(wrongtype()),
    }
}

/// Writes `value` to `key`, replacing what a read just before found (a
/// blind write under `Lww`, where no context is needed); returns what that
/// read found when `want_old`.
async fn write(
    ctx: &Ctx,
    s: &Session,
    policy: &ConflictPolicy,
    key: &[u8],
    value: Bytes,
    want_old: bool,
) -> Result<Option<Found>, Value> {
    let (old, context) = if *policy == ConflictPolicy::Lww && !want_old {
        (None, None)
    } else {
        let (found, context) = read(ctx, s, "set", policy, key).await?;
        (Some(found), (!context.is_empty()).then_some(context))
    };
    if want_old {
        if let Some(Found::Siblings(n)) = old {
            return Err(siblings_error(key, n));
        }
    }
    let op = Op::Put {
        bucket: buf(&s.bucket),
        key: buf(key),
        value: ByteBuf::from(value.to_vec()),
        context,
        options: WriteOptions {
            w: s.w,
            ..WriteOptions::default()
        },
    };
    match exec(ctx, s, "set", op).await? {
        Reply::Written { .. } => Ok(old),
        other => Err(unexpected(&other)),
    }
}

/// Deletes `key` with the context of a read; whether it held something.
async fn delete(
    ctx: &Ctx,
    s: &Session,
    policy: &ConflictPolicy,
    key: &[u8],
) -> Result<bool, Value> {
    let (found, context) = read(ctx, s, "del", policy, key).await?;
    if matches!(found, Found::Nothing) {
        return Ok(false);
    }
    let op = Op::Delete {
        bucket: buf(&s.bucket),
        key: buf(key),
        context: Some(context),
        options: WriteOptions {
            w: s.w,
            ..WriteOptions::default()
        },
    };
    exec(ctx, s, "del", op).await?;
    Ok(true)
}

async fn members(
    ctx: &Ctx,
    s: &Session,
    command: &str,
    bucket: &[u8],
    key: &[u8],
) -> Result<Vec<ByteBuf>, Value> {
    let op = Op::SetMembers {
        bucket: buf(bucket),
        key: buf(key),
        options: ReadOptions {
            r: s.r,
            ..ReadOptions::default()
        },
    };
    match exec(ctx, s, command, op).await? {
        Reply::Set { members, .. } => Ok(members),
        other => Err(unexpected(&other)),
    }
}

/// The keys of a command that may run beside the other commands of its
/// pipeline: a data command (strings, counters, sets, `RINGKV.GET`/`PUT`/
/// `DEL`), well formed, on an authenticated connection. `None` for every
/// other command: it runs alone, after what came before it, as it may
/// change the session (`SELECT`, `AUTH`, `HELLO`, ...) or read what the
/// previous command left (`RINGKV.RECEIPT`).
fn parallel_keys<'a>(s: &Session, args: &'a [Bytes]) -> Option<Vec<&'a [u8]>> {
    s.role?;
    if s.refused_multi {
        return None;
    }
    let name = args.first()?;
    let spec = COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))?;
    let data = matches!(
        spec.name,
        "get"
            | "set"
            | "del"
            | "exists"
            | "mget"
            | "mset"
            | "strlen"
            | "incr"
            | "decr"
            | "incrby"
            | "decrby"
            | "sadd"
            | "srem"
            | "smembers"
            | "sismember"
            | "scard"
            | "ringkv.get"
            | "ringkv.put"
            | "ringkv.del"
    );
    let n = args.len() as i64;
    let fits = (spec.arity > 0 && n == spec.arity) || (spec.arity < 0 && n >= -spec.arity);
    if !data || !fits || spec.first < 1 || spec.step < 1 {
        return None;
    }
    let last = if spec.last < 0 {
        n + spec.last
    } else {
        spec.last
    };
    Some(
        (spec.first..=last.min(n - 1))
            .step_by(spec.step as usize)
            .map(|i| args[i as usize].as_ref())
            .collect(),
    )
}

/// Runs the commands of a pipeline, at most `max_parallel` at once, and
/// answers each in order: as if one ran after another, as redis runs
/// them. Consecutive data commands on different keys run at once; a
/// command on a key an earlier one of the same group touches starts a
/// new group, and so does every command that is not a data command
/// ([`parallel_keys`]), which runs alone. A reply that closes the
/// connection ends the pipeline: the commands after it do not run.
pub async fn run_pipeline(
    ctx: &Ctx,
    s: &mut Session,
    commands: &[&[Bytes]],
    max_parallel: usize,
) -> Vec<(Value, After)> {
    let mut replies = Vec::with_capacity(commands.len());
    let mut i = 0;
    while i < commands.len() {
        let mut group: Vec<&[Bytes]> = Vec::new();
        let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
        for (j, args) in commands.iter().enumerate().skip(i) {
            if group.len() >= max_parallel.max(1) {
                break;
            }
            let Some(these) = parallel_keys(s, args) else {
                break;
            };
            if these.iter().any(|k| keys.contains(k)) {
                break;
            }
            // RINGKV.RECEIPT shows the receipts of the one command before it.
            let next_is_receipt = commands
                .get(j + 1)
                .and_then(|a| a.first())
                .is_some_and(|n| n.eq_ignore_ascii_case(b"ringkv.receipt"));
            if next_is_receipt && !group.is_empty() {
                break;
            }
            keys.extend(these);
            group.push(args);
        }
        if group.len() <= 1 {
            let reply = run(ctx, s, commands[i]).await;
            let close = reply.1 == After::Close;
            replies.push(reply);
            i += 1;
            if close {
                break;
            }
            continue;
        }
        i += group.len();
        s.forget_receipts();
        // The buckets first, one after another (the session caches their
        // policies); then every command of the group at once.
        let mut targets = Vec::with_capacity(group.len());
        for args in &group {
            let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
            let target = if name.starts_with("ringkv.") {
                Ok(None)
            } else {
                target(ctx, s, &name).await.map(Some)
            };
            targets.push((name, target));
        }
        let s = &*s;
        let runs = group
            .iter()
            .zip(targets)
            .map(|(args, (name, target))| async move {
                let result = match target {
                    Err(e) => Err(e),
                    Ok(None) => ringkv::run(ctx, s, &name, args).await,
                    Ok(Some((bucket, policy))) => {
                        data_in(ctx, s, &name, args, &bucket, policy).await
                    }
                };
                (result.unwrap_or_else(|e| e), After::Continue)
            });
        replies.extend(join_all(runs).await);
    }
    replies
}

/// `MULTI` and what follows it. ringkv has no transactions, so `MULTI` is
/// refused; a client that sends a transaction without waiting for that
/// answer (redis-py's default pipeline, any pipelined `MULTI` ... `EXEC`)
/// would otherwise have every command in it run, then see `EXEC` fail.
/// So after a refused `MULTI`, nothing runs until `EXEC` (refused with
/// `EXECABORT`, as redis refuses a transaction with a bad command) or
/// `DISCARD`; `QUIT` still closes. `None`: run the command as usual.
fn transaction(s: &mut Session, name: &str) -> Option<Value> {
    if name == "multi" {
        s.refused_multi = true;
        return Some(Value::err(format!(
            "unsupported command 'multi': {}; the commands up to EXEC or DISCARD will not run",
            unsupported("multi").unwrap_or_default()
        )));
    }
    if !s.refused_multi {
        return None;
    }
    match name {
        "exec" => {
            s.refused_multi = false;
            Some(Value::Error(
                "EXECABORT Transaction discarded: ringkv has no transactions, and MULTI was \
                 refused; none of its commands ran"
                    .into(),
            ))
        }
        "discard" => {
            s.refused_multi = false;
            Some(Value::ok())
        }
        "quit" => None,
        _ => Some(Value::err(format!(
            "not run: '{name}' follows a MULTI, which ringkv refuses (no transactions); send \
             DISCARD, or EXEC, to leave it"
        ))),
    }
}

/// Runs one command.
pub async fn run(ctx: &Ctx, s: &mut Session, args: &[Bytes]) -> (Value, After) {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    if let Some(reply) = transaction(s, &name) {
        return (reply, After::Continue);
    }
    let spec = COMMANDS.iter().find(|c| c.name == name);
    let Some(spec) = spec else {
        if let Some(why) = unsupported(&name) {
            return (
                Value::err(format!("unsupported command '{name}': {why}")),
                After::Continue,
            );
        }
        let shown: Vec<String> = args[1..]
            .iter()
            .take(8)
            .map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(64)])))
            .collect();
        return (
            Value::err(format!(
                "unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(&args[0][..args[0].len().min(64)]),
                shown.join(" ")
            )),
            After::Continue,
        );
    };
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return (arity_error(&name), After::Continue);
    }
    if s.role.is_none() && !matches!(name.as_str(), "auth" | "hello" | "quit") {
        return (noauth(), After::Continue);
    }
    if name != "ringkv.receipt" {
        s.forget_receipts();
    }
    match run_known(ctx, s, &name, args).await {
        Ok(v) => v,
        Err(e) => (e, After::Continue),
    }
}

async fn run_known(
    ctx: &Ctx,
    s: &mut Session,
    name: &str,
    args: &[Bytes],
) -> Result<(Value, After), Value> {
    let done = |v: Value| Ok((v, After::Continue));
    match name {
        "ping" => match args.len() {
            1 => done(Value::Simple("PONG".into())),
            2 => done(Value::Bulk(args[1].clone())),
            _ => Err(arity_error(name)),
        },
        "echo" => done(Value::Bulk(args[1].clone())),
        "quit" => Ok((Value::ok(), After::Close)),
        "select" => {
            let db = parse_i64(&args[1]).ok_or_else(not_integer)?;
            if !(0..DATABASES as i64).contains(&db) {
                return Err(Value::err("DB index is out of range"));
            }
            s.db = Some(db as u32);
            s.bucket = format!("db{db}").into_bytes();
            done(Value::ok())
        }
        "ringkv.bucket" => match args.len() {
            1 => done(Value::Bulk(Bytes::from(s.bucket.clone()))),
            2 => {
                let b = &args[1];
                if b.is_empty() || b.len() > crate::config::MAX_BUCKET_BYTES {
                    return Err(Value::err(format!(
                        "a bucket name has 1 to {} bytes",
                        crate::config::MAX_BUCKET_BYTES
                    )));
                }
                s.bucket = b.to_vec();
                s.db = None;
                done(Value::ok())
            }
            _ => Err(arity_error(name)),
        },
        "ringkv.consistency" => match args.len() {
            1 => done(Value::Map(vec![
                (Value::text("r"), Value::text(consistency_name(s.r))),
                (Value::text("w"), Value::text(consistency_name(s.w))),
            ])),
            3 => {
                let bad = || {
                    Value::err(
                        "a consistency level is default, one, two, quorum, all or a count from \
                         1 to 16",
                    )
                };
                let r = parse_consistency(&args[1]).ok_or_else(bad)?;
                let w = parse_consistency(&args[2]).ok_or_else(bad)?;
                s.r = r;
                s.w = w;
                done(Value::ok())
            }
            _ => Err(arity_error(name)),
        },
        "auth" => {
            let (user, pass) = match args.len() {
                2 => ("default".to_string(), &args[1]),
                3 => (String::from_utf8_lossy(&args[1]).into_owned(), &args[2]),
                _ => return Err(arity_error(name)),
            };
            let pass = String::from_utf8_lossy(pass).into_owned();
            authenticate(ctx, s, user, pass).await?;
            done(Value::ok())
        }
        "hello" => hello(ctx, s, args).await,
        "client" => client(s, args),
        "command" => command(args),
        "info" => info(ctx, s).await,
        "config" => config(args),
        "ringkv.get" | "ringkv.put" | "ringkv.del" | "ringkv.receipt" | "ringkv.props"
        | "ringkv.ring" | "ringkv.status" => ringkv::run(ctx, s, name, args)
            .await
            .map(|v| (v, After::Continue)),
        "scan" => super::scan::scan(ctx, s, args)
            .await
            .map(|v| (v, After::Continue)),
        _ => data(ctx, s, name, args).await.map(|v| (v, After::Continue)),
    }
}

/// Checks a user and password; sets the session's role, or counts a
/// failure (`WRONGPASS`; the connection closes after too many).
async fn authenticate(ctx: &Ctx, s: &mut Session, user: String, pass: String) -> Result<(), Value> {
    let ClientAuth::Users(users) = &ctx.auth else {
        return Err(Value::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    };
    let Ok(_slot) = ctx.auth_slots.clone().acquire_owned().await else {
        return Err(Value::err("shutting down"));
    };
    let users = users.clone();
    let name = user.clone();
    let checked = tokio::task::spawn_blocking(move || users.verify(&name, &pass)).await;
    match checked {
        Ok(Some(role)) => {
            s.role = Some(role);
            s.user = Some(user);
            Ok(())
        }
        Ok(None) => {
            s.auth_failures += 1;
            Err(Value::Error(
                "WRONGPASS invalid username-password pair or user is disabled.".into(),
            ))
        }
        Err(e) => Err(Value::err(format!("checking the password failed: {e}"))),
    }
}

async fn hello(ctx: &Ctx, s: &mut Session, args: &[Bytes]) -> Result<(Value, After), Value> {
    let mut resp3 = s.resp3;
    let mut i = 1;
    if args.len() > 1 {
        match parse_i64(&args[1]) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => return Err(Value::Error("NOPROTO unsupported protocol version".into())),
            None => {
                return Err(Value::err(
                    "Protocol version is not an integer or out of range",
                ))
            }
        }
        i = 2;
    }
    let mut name = None;
    let mut credentials = None;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
        match opt.as_str() {
            "auth" if i + 2 < args.len() => {
                credentials = Some((
                    String::from_utf8_lossy(&args[i + 1]).into_owned(),
                    String::from_utf8_lossy(&args[i + 2]).into_owned(),
                ));
                i += 3;
            }
            "setname" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                return Err(Value::err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                )))
            }
        }
    }
    if let Some((user, pass)) = credentials {
        authenticate(ctx, s, user, pass).await?;
    } else if s.role.is_none() {
        return Err(Value::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time"
                .into(),
        ));
    }
    if let Some(n) = name {
        check_client_name(&n)?;
        s.name = Some(n);
    }
    s.resp3 = resp3;
    let map = vec![
        (Value::text("server"), Value::text("redis")),
        (Value::text("version"), Value::text(REDIS_VERSION)),
        (Value::text("proto"), Value::Int(if resp3 { 3 } else { 2 })),
        (Value::text("id"), Value::Int(s.id as i64)),
        (Value::text("mode"), Value::text("standalone")),
        (Value::text("role"), Value::text("master")),
        (Value::text("modules"), Value::Array(Vec::new())),
    ];
    Ok((Value::Map(map), After::Continue))
}

fn check_client_name(n: &[u8]) -> Result<(), Value> {
    if n.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Value::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client(s: &mut Session, args: &[Bytes]) -> Result<(Value, After), Value> {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let v = match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            check_client_name(&args[2])?;
            s.name = (!args[2].is_empty()).then(|| args[2].clone());
            Value::ok()
        }
        ("getname", 2) => s.name.clone().map_or(Value::Null, Value::Bulk),
        ("id", 2) => Value::Int(s.id as i64),
        ("info", 2) => Value::text(format!(
            "id={} addr={} name={} db={} resp={} user={} bucket={}\n",
            s.id,
            s.peer,
            String::from_utf8_lossy(s.name.as_deref().unwrap_or_default()),
            s.db.map_or(-1, i64::from),
            if s.resp3 { 3 } else { 2 },
            s.user.as_deref().unwrap_or("default"),
            String::from_utf8_lossy(&s.bucket),
        )),
        // Client libraries announce themselves; nothing to keep.
        ("setinfo", 4) => Value::ok(),
        ("setname" | "getname" | "id" | "info" | "setinfo", _) => {
            return Err(Value::err(format!(
                "wrong number of arguments for 'client|{sub}' command"
            )))
        }
        _ => {
            return Err(Value::err(format!(
                "unsupported command 'client {sub}': ringkv serves CLIENT SETNAME, GETNAME, ID, \
                 INFO and SETINFO"
            )))
        }
    };
    Ok((v, After::Continue))
}

/// A command's entry as redis 7 gives it: name, arity, flags, first key,
/// last key, step, ACL categories, tips, key specifications and
/// subcommands (the last three empty; clients that read them, as redis-py
/// does under RESP3, find the ten fields they expect).
fn command_info(c: &Spec) -> Value {
    let mut categories = Vec::new();
    if c.flags.contains(&"readonly") {
        categories.push("@read");
    }
    if c.flags.contains(&"write") {
        categories.push("@write");
    }
    if c.first == 0 {
        categories.push("@connection");
    }
    Value::Array(vec![
        Value::text(c.name),
        Value::Int(c.arity),
        Value::Set(c.flags.iter().map(|f| Value::Simple((*f).into())).collect()),
        Value::Int(c.first),
        Value::Int(c.last),
        Value::Int(c.step),
        Value::Set(
            categories
                .into_iter()
                .map(|f| Value::Simple(f.into()))
                .collect(),
        ),
        Value::Array(Vec::new()),
        Value::Array(Vec::new()),
        Value::Array(Vec::new()),
    ])
}

fn command(args: &[Bytes]) -> Result<(Value, After), Value> {
    let sub = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    let v = match sub.as_deref() {
        None => Value::Array(COMMANDS.iter().map(command_info).collect()),
        Some("count") => Value::Int(COMMANDS.len() as i64),
        Some("info") => Value::Array(
            args[2..]
                .iter()
                .map(|a| {
                    let n = String::from_utf8_lossy(a).to_ascii_lowercase();
                    COMMANDS
                        .iter()
                        .find(|c| c.name == n)
                        .map_or(Value::Null, command_info)
                })
                .collect(),
        ),
        // No documentation beyond docs/resp.md: an empty map, which
        // redis-cli takes as "no hints".
        Some("docs") => Value::Map(Vec::new()),
        Some(other) => {
            return Err(Value::err(format!(
                "unsupported command 'command {other}': ringkv serves COMMAND, COMMAND COUNT, \
                 COMMAND INFO and COMMAND DOCS"
            )))
        }
    };
    Ok((v, After::Continue))
}

async fn info(ctx: &Ctx, s: &Session) -> Result<(Value, After), Value> {
    let hello = Op::Hello {
        version: CLIENT_PROTOCOL_VERSION,
        client: "resp".into(),
        user: None,
        password: None,
    };
    let (node, cluster) = match exec(ctx, s, "info", hello).await? {
        Reply::Hello { node, cluster, .. } => (node.0, cluster),
        other => return Err(unexpected(&other)),
    };
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
         ringkv_version:{}\r\nringkv_node:{node}\r\nringkv_cluster:{cluster}\r\n\r\n\
         # Keyspace\r\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok((Value::text(text), After::Continue))
}

/// `*` and `?` globs, as CONFIG GET takes.
pub(super) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn config(args: &[Bytes]) -> Result<(Value, After), Value> {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    if sub != "get" {
        return Err(Value::err(format!(
            "unsupported command 'config {sub}': ringkv is configured by ringkv-node's flags \
             and file; CONFIG GET answers what clients ask"
        )));
    }
    if args.len() < 3 {
        return Err(Value::err(
            "wrong number of arguments for 'config|get' command",
        ));
    }
    let databases = DATABASES.to_string();
    let known: [(&str, &str); 4] = [
        ("save", ""),
        ("appendonly", "no"),
        ("databases", &databases),
        ("maxmemory", "0"),
    ];
    let mut pairs = Vec::new();
    for (k, v) in known {
        // Patterns are short: a glob of at most 128 bytes.
        if args[2..]
            .iter()
            .any(|p| p.len() <= 128 && glob(p, k.as_bytes()))
        {
            pairs.push((Value::text(k), Value::text(v)));
        }
    }
    Ok((Value::Map(pairs), After::Continue))
}

/// The data commands.
/// The kind of value a command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Counter,
    Set,
}

fn kind_of(command: &str) -> Kind {
    match command {
        "incr" | "decr" | "incrby" | "decrby" => Kind::Counter,
        "sadd" | "srem" | "smembers" | "sismember" | "scard" => Kind::Set,
        _ => Kind::Str,
    }
}

/// The bucket a command of `kind` works in, and its policy: the session's
/// bucket, unless that holds strings and the command works on counters or
/// sets, which then go to its companion `<bucket>.counters` or
/// `<bucket>.sets` (a PN-counter and an OR-set by their names, see
/// `replication::buckets::named_policy`). So in a database, as in redis,
/// `SET`, `INCR` and `SADD` all work, each kind in a keyspace of its own.
async fn target(
    ctx: &Ctx,
    s: &mut Session,
    command: &str,
) -> Result<(Vec<u8>, ConflictPolicy), Value> {
    let bucket = s.bucket.clone();
    let own = policy(ctx, s, command, &bucket).await?;
    let suffix: &[u8] = match kind_of(command) {
        Kind::Counter if !matches!(own, ConflictPolicy::Crdt(_)) => b".counters",
        Kind::Set if !matches!(own, ConflictPolicy::Crdt(_)) => b".sets",
        _ => return Ok((bucket, own)),
    };
    let companion = [&bucket[..], suffix].concat();
    if companion.len() > crate::config::MAX_BUCKET_BYTES {
        return Err(Value::err(format!(
            "the bucket '{}' for this command's {} would pass the {}-byte limit of a bucket              name; use a shorter bucket",
            String::from_utf8_lossy(&companion),
            if suffix == b".sets" { "sets" } else { "counters" },
            crate::config::MAX_BUCKET_BYTES
        )));
    }
    let theirs = policy(ctx, s, command, &companion).await?;
    Ok((companion, theirs))
}

async fn data(ctx: &Ctx, s: &mut Session, name: &str, args: &[Bytes]) -> Result<Value, Value> {
    let (bucket, policy) = target(ctx, s, name).await?;
    data_in(ctx, s, name, args, &bucket, policy).await
}

/// Runs a data command in `bucket`, whose policy is `policy`.
async fn data_in(
    ctx: &Ctx,
    s: &Session,
    name: &str,
    args: &[Bytes],
    bucket: &[u8],
    policy: ConflictPolicy,
) -> Result<Value, Value> {
    match name {
        "get" => {
            let (found, _) = read(ctx, s, name, &policy, &args[1]).await?;
            found_value(&args[1], found)
        }
        "strlen" => {
            let (found, _) = read(ctx, s, name, &policy, &args[1]).await?;
            match found_value(&args[1], found)? {
                Value::Bulk(b) => Ok(Value::Int(b.len() as i64)),
                _ => Ok(Value::Int(0)),
            }
        }
        "set" => {
            let mut want_old = false;
            for opt in &args[3..] {
                let o = String::from_utf8_lossy(opt).to_ascii_uppercase();
                match o.as_str() {
                    "GET" => want_old = true,
                    "NX" | "XX" => {
                        return Err(Value::err(format!(
                            "unsupported option '{o}' of SET: a quorum write cannot be made \
                             conditional on what another quorum read saw (two clients could \
                             both pass the check)"
                        )))
                    }
                    "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                        return Err(Value::err(format!(
                            "unsupported option '{o}' of SET: ringkv has no TTLs"
                        )))
                    }
                    _ => return Err(syntax()),
                }
            }
            if matches!(policy, ConflictPolicy::Crdt(_)) {
                return Err(wrongtype());
            }
            let old = write(ctx, s, &policy, &args[1], args[2].clone(), want_old).await?;
            match (want_old, old) {
                (true, Some(found)) => found_value(&args[1], found),
                _ => Ok(Value::ok()),
            }
        }
        "mset" => {
            if args.len() % 2 != 1 {
                return Err(arity_error(name));
            }
            if matches!(policy, ConflictPolicy::Crdt(_)) {
                return Err(wrongtype());
            }
            let writes = args[1..]
                .chunks(2)
                .map(|kv| write(ctx, s, &policy, &kv[0], kv[1].clone(), false));
            let results = join_all(writes).await;
            let failed: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            match failed.first() {
                None => Ok(Value::ok()),
                Some(Value::Error(first)) => Err(Value::err(format!(
                    "MSET is not atomic: {} of {} keys were not written; the first failure: {first}",
                    failed.len(),
                    results.len()
                ))),
                Some(_) => Err(Value::err("MSET failed")),
            }
        }
        "del" => {
            let done = join_all(args[1..].iter().map(|k| delete(ctx, s, &policy, k))).await;
            let mut n = 0;
            for d in done {
                n += i64::from(d?);
            }
            Ok(Value::Int(n))
        }
        "exists" | "mget" => {
            let reads = join_all(args[1..].iter().map(|k| read(ctx, s, name, &policy, k))).await;
            if name == "exists" {
                let mut n = 0;
                for r in reads {
                    n += i64::from(!matches!(r?.0, Found::Nothing));
                }
                return Ok(Value::Int(n));
            }
            let mut values = Vec::with_capacity(reads.len());
            let mut bytes = 0usize;
            for (key, r) in args[1..].iter().zip(reads) {
                let v = match r?.0 {
                    Found::Nothing | Found::WrongType => Value::Null,
                    Found::Value(v) => Value::Bulk(v),
                    Found::Siblings(n) => return Err(siblings_error(key, n)),
                };
                bytes += v.payload_bytes();
                if bytes > ctx.max_reply_bytes {
                    return Err(Value::err(format!(
                        "the values asked for pass the reply limit of {} bytes; ask for fewer keys",
                        ctx.max_reply_bytes
                    )));
                }
                values.push(v);
            }
            Ok(Value::Array(values))
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            if !is_counter(&policy) {
                return Err(wrongtype());
            }
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => {
                    let n = parse_i64(&args[2]).ok_or_else(not_integer)?;
                    if name == "decrby" {
                        n.checked_neg()
                            .ok_or_else(|| Value::err("decrement would overflow"))?
                    } else {
                        n
                    }
                }
            };
            let op = Op::CounterAdd {
                bucket: buf(bucket),
                key: buf(&args[1]),
                by,
                options: WriteOptions {
                    w: s.w,
                    ..WriteOptions::default()
                },
            };
            match exec(ctx, s, name, op).await? {
                Reply::Counter { value, .. } => Ok(Value::Int(value)),
                other => Err(unexpected(&other)),
            }
        }
        "sadd" | "srem" => {
            if !is_set(&policy) {
                return Err(wrongtype());
            }
            let given: BTreeSet<&[u8]> = args[2..].iter().map(|a| a.as_ref()).collect();
            let list: Vec<ByteBuf> = given.iter().map(|m| buf(m)).collect();
            let (bucket, key) = (buf(bucket), buf(&args[1]));
            let options = WriteOptions {
                w: s.w,
                ..WriteOptions::default()
            };
            let op = if name == "sadd" {
                Op::SetAdd {
                    bucket,
                    key,
                    members: list,
                    options,
                    count_only: true,
                }
            } else {
                Op::SetRemove {
                    bucket,
                    key,
                    members: list,
                    options,
                    count_only: true,
                }
            };
            // The coordinating replica counts the members the op changed,
            // against the set it applied the op to, under the key's lock
            // (no read round first: that was a quorum read of the whole
            // set per SADD, and raced with other writers anyway).
            match exec(ctx, s, name, op).await? {
                Reply::Set {
                    changed: Some(n), ..
                } => Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX))),
                // A coordinating replica of a version that did not count:
                // the write is done, but its count is unknown.
                Reply::Set { changed: None, .. } => Err(Value::err(format!(
                    "{} was applied, but the coordinating replica did not count the members it \
                     changed (a node of an older version)",
                    name.to_uppercase()
                ))),
                other => Err(unexpected(&other)),
            }
        }
        "smembers" | "scard" | "sismember" => {
            if !is_set(&policy) {
                return Err(wrongtype());
            }
            let members = members(ctx, s, name, bucket, &args[1]).await?;
            match name {
                "scard" => Ok(Value::Int(members.len() as i64)),
                "sismember" => Ok(Value::Int(i64::from(
                    members.iter().any(|m| m.as_slice() == args[2].as_ref()),
                ))),
                _ => {
                    let total: usize = members.iter().map(|m| m.len()).sum();
                    if total > ctx.max_reply_bytes {
                        return Err(Value::err(format!(
                            "the set's members pass the reply limit of {} bytes",
                            ctx.max_reply_bytes
                        )));
                    }
                    Ok(Value::Set(
                        members
                            .into_iter()
                            .map(|m| Value::Bulk(Bytes::from(m.into_vec())))
                            .collect(),
                    ))
                }
            }
        }
        other => Err(Value::err(format!("unknown command '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// An in-memory handler for the pipeline's scheduling: buckets are
    /// `Lww`, each op takes a few milliseconds, and the most ops in flight
    /// at once is recorded.
    /// Values by bucket and key.
    type Data = HashMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

    #[derive(Default)]
    struct Recorder {
        data: Mutex<Data>,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        /// What each `SetAdd` and `SetRemove` is answered with as its
        /// `changed`, in turn (buckets named `*.sets` are OR-Sets).
        set_counts: Mutex<std::collections::VecDeque<Option<u64>>>,
        /// The set ops received, as (name, members, `count_only`).
        set_ops: Mutex<Vec<(&'static str, usize, bool)>>,
    }

    struct Shared(Arc<Recorder>);

    impl Handler for Shared {
        fn execute(
            &self,
            op: Op,
        ) -> futures_util::future::BoxFuture<'static, crate::error::Result<Reply>> {
            let r = Arc::clone(&self.0);
            Box::pin(async move {
                let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                r.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                r.in_flight.fetch_sub(1, Ordering::SeqCst);
                let set_op = |name, members: &[ByteBuf], count_only| {
                    r.set_ops
                        .lock()
                        .unwrap()
                        .push((name, members.len(), count_only));
                    Reply::Set {
                        members: Vec::new(),
                        receipt: Receipt::default(),
                        changed: r.set_counts.lock().unwrap().pop_front().flatten(),
                    }
                };
                let reply = match op {
                    Op::GetBucket { bucket } => Reply::Bucket {
                        props: (&crate::replication::BucketProps {
                            policy: if bucket.ends_with(b".sets") {
                                ConflictPolicy::Crdt(crate::crdt::CrdtKind::OrSet)
                            } else {
                                ConflictPolicy::Lww
                            },
                            ..Default::default()
                        })
                            .into(),
                    },
                    Op::SetAdd {
                        members,
                        count_only,
                        ..
                    } => set_op("add", &members, count_only),
                    Op::SetRemove {
                        members,
                        count_only,
                        ..
                    } => set_op("remove", &members, count_only),
                    Op::Put {
                        bucket, key, value, ..
                    } => {
                        r.data
                            .lock()
                            .unwrap()
                            .insert((bucket.into_vec(), key.into_vec()), value.into_vec());
                        Reply::Written {
                            context: ByteBuf::new(),
                            receipt: Receipt::default(),
                        }
                    }
                    Op::Get { bucket, key, .. } => Reply::Object {
                        value: r
                            .data
                            .lock()
                            .unwrap()
                            .get(&(bucket.into_vec(), key.into_vec()))
                            .cloned()
                            .map(ByteBuf::from),
                        siblings: Vec::new(),
                        context: ByteBuf::new(),
                        receipt: Receipt::default(),
                    },
                    other => panic!("not expected here: {other:?}"),
                };
                Ok(reply)
            })
        }
    }

    fn ctx(r: &Arc<Recorder>) -> Ctx {
        Ctx {
            handler: Arc::new(Shared(Arc::clone(r))),
            auth: ClientAuth::Open,
            auth_slots: Arc::new(Semaphore::new(1)),
            max_auth_failures: 3,
            max_reply_bytes: 1 << 20,
            next_id: AtomicU64::new(1),
        }
    }

    fn commands(text: &str) -> Vec<Vec<Bytes>> {
        text.split(';')
            .map(|c| {
                c.split_whitespace()
                    .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                    .collect()
            })
            .collect()
    }

    async fn pipeline(r: &Arc<Recorder>, text: &str, max: usize) -> Vec<Value> {
        let ctx = ctx(r);
        let mut s = Session::new(&ctx, "test".into());
        let cmds = commands(text);
        let refs: Vec<&[Bytes]> = cmds.iter().map(|c| &c[..]).collect();
        run_pipeline(&ctx, &mut s, &refs, max)
            .await
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn pipelined_commands_name_their_keys_only_when_they_may_run_at_once() {
        let ctx = ctx(&Arc::new(Recorder::default()));
        let mut s = Session::new(&ctx, "test".into());
        let keys = |s: &Session, text: &str| {
            let c = &commands(text)[0];
            parallel_keys(s, c).map(|k| {
                k.iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(keys(&s, "MSET a 1 b 2"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            keys(&s, "del a b c"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(keys(&s, "SADD s x y"), Some(vec!["s".into()]));
        assert_eq!(keys(&s, "RINGKV.PUT k v 00"), Some(vec!["k".into()]));
        for alone in [
            "SELECT 1",
            "PING",
            "RINGKV.RECEIPT",
            "GET",
            "GET a b",
            "SCAN 0",
            "nope",
        ] {
            assert_eq!(keys(&s, alone), None, "{alone}");
        }
        s.role = None;
        assert_eq!(keys(&s, "GET a"), None, "unauthenticated");
    }

    /// SADD and SREM send one op asking for the count alone (no read of
    /// the set first: the handler refuses `SetMembers`), with the given
    /// members once each, and answer the count the node gives; a node that
    /// did not count (an older version) gets an error saying the write was
    /// applied, not a made-up count.
    #[tokio::test]
    async fn sadd_and_srem_answer_the_node_s_count_without_reading_the_set() {
        let r = Arc::new(Recorder::default());
        r.set_counts
            .lock()
            .unwrap()
            .extend([Some(2), Some(0), None]);
        let got = pipeline(&r, "SADD s a b a; SREM s zz; SADD s c", 1).await;
        assert_eq!(got[..2], [Value::Int(2), Value::Int(0)]);
        match &got[2] {
            Value::Error(e) => assert!(e.contains("SADD was applied"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            *r.set_ops.lock().unwrap(),
            [("add", 2, true), ("remove", 1, true), ("add", 1, true)]
        );
    }

    #[tokio::test]
    async fn a_pipeline_runs_commands_on_different_keys_at_once_and_answers_in_order() {
        let r = Arc::new(Recorder::default());
        let got = pipeline(&r, "SET a 1; SET b 2; SET c 3; GET a; GET b; GET zz", 128).await;
        assert_eq!(
            got,
            [
                Value::ok(),
                Value::ok(),
                Value::ok(),
                bulk("1"),
                bulk("2"),
                Value::Null
            ]
        );
        assert!(r.most.load(Ordering::SeqCst) >= 3, "{:?}", r.most);

        // One key: strictly one after another, each reading the last write.
        let r = Arc::new(Recorder::default());
        let got = pipeline(
            &r,
            "SET k v1; GET k; SET k v2; GET k; MSET x 1 k v3; GET k",
            128,
        )
        .await;
        assert_eq!(
            got,
            [
                Value::ok(),
                bulk("v1"),
                Value::ok(),
                bulk("v2"),
                Value::ok(),
                bulk("v3")
            ]
        );
        assert_eq!(
            r.most.load(Ordering::SeqCst),
            2,
            "only MSET's two writes at once"
        );

        // Session commands are barriers: GET a after SELECT 1 reads db1.
        let r = Arc::new(Recorder::default());
        let got = pipeline(&r, "SET a 1; SELECT 1; GET a; SELECT 0; GET a", 128).await;
        assert_eq!(
            got,
            [
                Value::ok(),
                Value::ok(),
                Value::Null,
                Value::ok(),
                bulk("1")
            ]
        );

        // QUIT ends the pipeline: what follows it does not run.
        let r = Arc::new(Recorder::default());
        let got = pipeline(&r, "SET a 1; QUIT; SET b 2", 128).await;
        assert_eq!(got, [Value::ok(), Value::ok()]);
        assert!(!r
            .data
            .lock()
            .unwrap()
            .contains_key(&(b"db0".to_vec(), b"b".to_vec())));

        // A refused MULTI: nothing runs until EXEC (EXECABORT) or DISCARD.
        let r = Arc::new(Recorder::default());
        let got = pipeline(&r, "MULTI; SET a 1; SET b 2; EXEC; GET a; SET c 3", 128).await;
        assert!(
            matches!(&got[0], Value::Error(e) if e.contains("will not run")),
            "{got:?}"
        );
        for v in &got[1..3] {
            assert!(
                matches!(v, Value::Error(e) if e.starts_with("ERR not run")),
                "{v:?}"
            );
        }
        assert!(
            matches!(&got[3], Value::Error(e) if e.starts_with("EXECABORT")),
            "{got:?}"
        );
        assert_eq!(got[4..], [Value::Null, Value::ok()]);
        let stored: Vec<_> = r.data.lock().unwrap().keys().cloned().collect();
        assert_eq!(stored.len(), 1, "only SET c ran: {stored:?}");
        let r = Arc::new(Recorder::default());
        let got = pipeline(&r, "MULTI; SET a 1; DISCARD; SET b 2; GET b; EXEC", 128).await;
        assert_eq!(got[2..5], [Value::ok(), Value::ok(), bulk("2")]);
        assert!(
            matches!(&got[5], Value::Error(e) if e.contains("unsupported command 'exec'")),
            "EXEC with no MULTI: {got:?}"
        );

        // The bound holds.
        let r = Arc::new(Recorder::default());
        let text: Vec<String> = (0..40).map(|i| format!("SET k{i} v")).collect();
        let got = pipeline(&r, &text.join(";"), 8).await;
        assert_eq!(got.len(), 40);
        assert_eq!(r.most.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn integers_and_levels_parse_strictly() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"+1", b" 1", b"1.5", b"9223372036854775808", b"x"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_consistency(b"QUORUM"),
            Some(Some(Consistency::Quorum))
        );
        assert_eq!(parse_consistency(b"default"), Some(None));
        assert_eq!(parse_consistency(b"3"), Some(Some(Consistency::Count(3))));
        assert_eq!(parse_consistency(b"0"), None);
        assert_eq!(parse_consistency(b"most"), None);
    }

    #[test]
    fn config_globs() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"SAVE", b"save"));
        assert!(glob(b"s?ve", b"save"));
        assert!(glob(b"data*", b"databases"));
        assert!(!glob(b"data", b"databases"));
    }

    #[test]
    fn a_write_errors_outcome_is_said_once() {
        let timeout = Error::QuorumTimeout {
            needed: 2,
            got: 0,
            after: Duration::from_secs(5),
            indefinite: true,
        };
        let Value::Error(text) = error_value(true, &timeout) else {
            panic!()
        };
        assert_eq!(text.matches("applied").count(), 1, "{text}");
        let unavailable = Error::Unavailable {
            needed: 2,
            got: 1,
            indefinite: false,
        };
        let Value::Error(text) = error_value(true, &unavailable) else {
            panic!()
        };
        assert!(text.ends_with("(nothing was written)"), "{text}");
    }

    #[test]
    fn command_entries_have_redis_7s_ten_fields() {
        for c in COMMANDS {
            let Value::Array(fields) = command_info(c) else {
                panic!("{}", c.name)
            };
            assert_eq!(fields.len(), 10, "{}", c.name);
        }
    }

    #[test]
    fn every_unsupported_command_names_a_reason_and_none_is_served() {
        for name in [
            "expire",
            "multi",
            "eval",
            "subscribe",
            "keys",
            "flushall",
            "setnx",
        ] {
            assert!(unsupported(name).is_some(), "{name}");
        }
        for c in COMMANDS {
            assert!(unsupported(c.name).is_none(), "{}", c.name);
        }
    }
}
