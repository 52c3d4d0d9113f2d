//! The shell's rhai API: every function a script or the REPL can call, and
//! the conversions between rhai values and the client protocol.
//!
//! Functions act on the *current target*: the cluster most recently made
//! by `cluster(...)`, `sim(...)` or `connect(...)`, or the one chosen with
//! `select(handle)`. Data ops, buckets and views go through the
//! [`Backend`] trait, so they work the same on an embedded cluster, a
//! simulation and a connection; faults, per-node views, waits and ring
//! changes go through the target's [`Nodes`], which an embedded cluster
//! and a simulation have and a connection does not. On a simulation,
//! `sleep` and the waits advance its virtual time (see [`crate::sim`]).
//!
//! Script policies: an embedded cluster's nodes resolve siblings with the
//! shell's policies themselves. A node reached by `connect`, or a
//! simulated one, knows none of them, so it returns the siblings; `get`
//! then resolves them here, with the same sandboxed policy, and reports a
//! failure the same way.
//!
//! Long-running functions (`sleep`, the waits, `workload`) give up with
//! `interrupted` when [`Context::interrupt`] is set (the REPL sets it on
//! Ctrl-C); the engine's progress hook stops a running script then too.
//!
//! Values: a string is stored as its UTF-8 bytes, a blob as itself, a
//! number or bool as its text; a read gives back a string when the bytes
//! are UTF-8, a blob otherwise. A causal context travels as a hex string.
//! A failed request throws, with the node's error; `try { } catch (e) { }`
//! catches it.
//!
//! The list of functions with their help text is in `help.rs`; this file
//! and `docs/shell.md` must name the same ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, Position, INT};
use ringkv::client::Credentials;
use ringkv::crdt::CrdtKind;
use ringkv::net::client_tls::ClientTls;
use ringkv::protocol::{BucketInfo, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::get::Repair;
use ringkv::replication::{Consistency, Receipt};
use ringkv::version::Resolvers;
use ringkv::ConflictPolicy;
use serde_bytes::ByteBuf;

use crate::backend::{Backend, Nodes, Remote};
use crate::cluster::{Cluster, ClusterOptions, EngineKind, TransportKind};
use crate::policy::{PolicyTable, TableSource};
use crate::runtime::Runtime;
use crate::sim::{Sim, SimOptions};
use crate::table::Table;

/// What the API's functions throw.
pub type ApiResult<T> = Result<T, Box<EvalAltResult>>;

/// A runtime error with `message`; rhai adds the call's position.
pub fn fail(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE).into()
}

/// The bucket used when an op names none.
pub const DEFAULT_BUCKET: &str = "default";

/// A cluster or connection, as a rhai value.
#[derive(Clone)]
pub struct Handle(pub Arc<dyn Backend>);

/// What the API's functions share.
pub struct Context {
    rt: RwLock<Option<Arc<Runtime>>>,
    current: RwLock<Option<Arc<dyn Backend>>>,
    /// Every cluster this shell started, kept so that selecting another
    /// does not stop it.
    started: RwLock<Vec<Arc<dyn Backend>>>,
    /// The conflict policies defined so far.
    pub policies: Arc<PolicyTable>,
    /// The functions of the input being run (and, at the prompt, of every
    /// earlier input): where `policy()` finds the function it is given.
    pub functions: RwLock<rhai::AST>,
    /// Whether to draw progress bars.
    pub interactive: bool,
    /// Set (by the REPL's SIGINT handler) to stop the running input.
    pub interrupt: Arc<AtomicBool>,
}

/// What an input stopped by Ctrl-C reports.
pub const INTERRUPTED: &str = "interrupted (Ctrl-C)";

impl Context {
    /// A context with no target yet.
    pub fn new(interactive: bool) -> Arc<Context> {
        Arc::new(Context {
            rt: RwLock::new(None),
            current: RwLock::new(None),
            started: RwLock::new(Vec::new()),
            policies: Arc::new(PolicyTable::default()),
            functions: RwLock::new(rhai::AST::empty()),
            interactive,
            interrupt: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether the running input was asked to stop.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    /// Throws [`INTERRUPTED`] when the running input was asked to stop.
    pub fn check_interrupt(&self) -> ApiResult<()> {
        if self.interrupted() {
            Err(fail(INTERRUPTED))
        } else {
            Ok(())
        }
    }

    /// Polls `check` on `nodes` until it holds (true), `ms` pass on their
    /// clock (false), or the input is interrupted (an error).
    fn wait_on(
        &self,
        nodes: &dyn Nodes,
        ms: INT,
        mut check: impl FnMut() -> Result<bool, String>,
    ) -> Result<bool, String> {
        nodes.wait(Duration::from_millis(ms.max(0) as u64), &mut || {
            if self.interrupted() {
                return Err(INTERRUPTED.to_string());
            }
            check()
        })
    }

    fn runtime(&self) -> ApiResult<Arc<Runtime>> {
        let mut rt = self.rt.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rt.as_ref() {
            return Ok(Arc::clone(r));
        }
        let made = Arc::new(Runtime::new().map_err(fail)?);
        *rt = Some(Arc::clone(&made));
        Ok(made)
    }

    /// The current target.
    pub fn target(&self) -> ApiResult<Arc<dyn Backend>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                fail(
                    "no cluster: start one with cluster(3), sim(3, seed) or connect(\"host:port\")",
                )
            })
    }

    fn set_target(&self, b: Arc<dyn Backend>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(b);
    }

    /// The current target's nodes (an embedded cluster or a simulation).
    fn with_nodes<T>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Nodes) -> Result<T, String>,
    ) -> ApiResult<T> {
        let target = self.target()?;
        let nodes = target.nodes().ok_or_else(|| {
            fail(format!(
                "{what} needs an embedded cluster (cluster(...)) or a simulation (sim(...)), not a connection"
            ))
        })?;
        f(nodes).map_err(fail)
    }

    /// Stops every cluster this shell started.
    pub fn shutdown(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
        let started: Vec<_> =
            std::mem::take(&mut *self.started.write().unwrap_or_else(|e| e.into_inner()));
        drop(started);
    }
}

// ---- conversions ----

/// The bytes a rhai value stands for: `None` for `()` (a delete).
pub fn value_bytes(v: &Dynamic) -> Result<Option<Vec<u8>>, String> {
    if v.is_unit() {
        return Ok(None);
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return Ok(Some(s.as_bytes().to_vec()));
    }
    if v.is_blob() {
        return Ok(v.clone().try_cast::<rhai::Blob>());
    }
    if v.is_int() || v.is_float() || v.is_bool() || v.is_char() {
        return Ok(Some(v.to_string().into_bytes()));
    }
    Err(format!(
        "a {} (values are strings, blobs, numbers or bools)",
        v.type_name()
    ))
}

/// Bytes as a rhai value: a string when they are UTF-8, else a blob.
pub fn bytes_value(b: &[u8]) -> Dynamic {
    match std::str::from_utf8(b) {
        Ok(s) => Dynamic::from(s.to_string()),
        Err(_) => Dynamic::from_blob(b.to_vec()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("a context is a hex string of even length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| "a context is a hex string".to_string())
        })
        .collect()
}

fn ids_array(ids: &[ringkv::NodeId]) -> Array {
    ids.iter().map(|n| Dynamic::from_int(n.0 as INT)).collect()
}

fn receipt_map(r: &Receipt) -> Map {
    let mut m = Map::new();
    m.insert("asked".into(), ids_array(&r.asked).into());
    m.insert("answered".into(), ids_array(&r.answered).into());
    let fallbacks: Array = r
        .fallbacks
        .iter()
        .map(|(f, o)| {
            let mut e = Map::new();
            e.insert("node".into(), Dynamic::from_int(f.0 as INT));
            e.insert("owner".into(), Dynamic::from_int(o.0 as INT));
            Dynamic::from_map(e)
        })
        .collect();
    m.insert("fallbacks".into(), fallbacks.into());
    m.insert("repaired".into(), ids_array(&r.repaired).into());
    m
}

fn consistency_of(v: &Dynamic, what: &str) -> ApiResult<Consistency> {
    if let Ok(n) = v.as_int() {
        return match n {
            1..=16 => Ok(Consistency::Count(n as u32)),
            _ => Err(fail(format!("{what}: a count from 1 to 16, got {n}"))),
        };
    }
    let s = v.to_string().to_lowercase();
    match s.as_str() {
        "one" => Ok(Consistency::One),
        "two" => Ok(Consistency::Two),
        "quorum" => Ok(Consistency::Quorum),
        "all" => Ok(Consistency::All),
        _ => Err(fail(format!(
            "{what}: \"one\", \"two\", \"quorum\", \"all\" or a number, got {s:?}"
        ))),
    }
}

fn consistency_value(c: &Consistency) -> Dynamic {
    match c {
        Consistency::One => "one".into(),
        Consistency::Two => "two".into(),
        Consistency::Quorum => "quorum".into(),
        Consistency::All => "all".into(),
        Consistency::Count(n) => Dynamic::from_int(*n as INT),
    }
}

fn policy_of(s: &str) -> ApiResult<ConflictPolicy> {
    let lower = s.to_lowercase();
    Ok(match lower.as_str() {
        "lww" => ConflictPolicy::Lww,
        "siblings" => ConflictPolicy::Siblings,
        "gcounter" => ConflictPolicy::Crdt(CrdtKind::GCounter),
        "pncounter" | "counter" => ConflictPolicy::Crdt(CrdtKind::PnCounter),
        "gset" => ConflictPolicy::Crdt(CrdtKind::GSet),
        "2pset" | "twopset" => ConflictPolicy::Crdt(CrdtKind::TwoPSet),
        "orset" | "set" => ConflictPolicy::Crdt(CrdtKind::OrSet),
        "lwwregister" => ConflictPolicy::Crdt(CrdtKind::LwwRegister),
        _ => match s.strip_prefix("script:") {
            Some(name) if !name.is_empty() => ConflictPolicy::Script(name.to_string()),
            _ => {
                return Err(fail(format!(
                    "unknown policy {s:?}: lww, siblings, gcounter, pncounter, gset, 2pset, orset, lwwregister or script:NAME"
                )))
            }
        },
    })
}

fn policy_name(p: &ConflictPolicy) -> String {
    match p {
        ConflictPolicy::Lww => "lww".into(),
        ConflictPolicy::Siblings => "siblings".into(),
        ConflictPolicy::Crdt(k) => match k {
            CrdtKind::GCounter => "gcounter",
            CrdtKind::PnCounter => "pncounter",
            CrdtKind::GSet => "gset",
            CrdtKind::TwoPSet => "2pset",
            CrdtKind::OrSet => "orset",
            CrdtKind::LwwRegister => "lwwregister",
        }
        .into(),
        ConflictPolicy::Script(n) => format!("script:{n}"),
    }
}

fn bucket_map(p: &BucketInfo) -> Map {
    let mut m = Map::new();
    m.insert("n".into(), Dynamic::from_int(p.n as INT));
    m.insert("r".into(), consistency_value(&p.r));
    m.insert("w".into(), consistency_value(&p.w));
    m.insert("policy".into(), policy_name(&p.policy).into());
    m.insert("sloppy_quorum".into(), p.sloppy_quorum.into());
    m.insert("timeout_ms".into(), Dynamic::from_int(p.timeout_ms as INT));
    m
}

/// The options every op may take.
#[derive(Default)]
struct Opts {
    bucket: Option<String>,
    via: Option<u64>,
    r: Option<Consistency>,
    w: Option<Consistency>,
    repair: Option<Repair>,
    sloppy: Option<bool>,
    timeout_ms: Option<u64>,
    context: Option<Vec<u8>>,
}

const OPTION_KEYS: &[&str] = &[
    "bucket",
    "via",
    "r",
    "w",
    "repair",
    "sloppy",
    "timeout_ms",
    "context",
];

fn opts(m: &Map) -> ApiResult<Opts> {
    let mut o = Opts::default();
    for (k, v) in m {
        match k.as_str() {
            "bucket" => o.bucket = Some(v.to_string()),
            "via" => o.via = Some(uint(v, "via")?),
            "r" => o.r = Some(consistency_of(v, "r")?),
            "w" => o.w = Some(consistency_of(v, "w")?),
            "repair" => {
                o.repair = Some(match v.to_string().as_str() {
                    "async" => Repair::Async,
                    "before" | "before_answer" => Repair::BeforeAnswer,
                    "off" => Repair::Off,
                    other => {
                        return Err(fail(format!(
                            "repair: \"async\", \"before\" or \"off\", got {other:?}"
                        )))
                    }
                })
            }
            "sloppy" => {
                o.sloppy = Some(
                    v.as_bool()
                        .map_err(|t| fail(format!("sloppy: a bool, got {t}")))?,
                )
            }
            "timeout_ms" => o.timeout_ms = Some(uint(v, "timeout_ms")?),
            "context" => {
                if !v.is_unit() {
                    o.context = Some(unhex(&v.to_string()).map_err(fail)?)
                }
            }
            other => {
                return Err(fail(format!(
                    "unknown option {other:?}; options are {}",
                    OPTION_KEYS.join(", ")
                )))
            }
        }
    }
    Ok(o)
}

fn uint(v: &Dynamic, what: &str) -> ApiResult<u64> {
    match v.as_int() {
        Ok(n) if n >= 0 => Ok(n as u64),
        Ok(n) => Err(fail(format!("{what}: must not be negative, got {n}"))),
        Err(t) => Err(fail(format!("{what}: a number, got {t}"))),
    }
}

fn node_list(a: &Array, what: &str) -> ApiResult<Vec<u64>> {
    a.iter().map(|v| uint(v, what)).collect()
}

impl Opts {
    fn bucket(&self) -> ByteBuf {
        ByteBuf::from(
            self.bucket
                .as_deref()
                .unwrap_or(DEFAULT_BUCKET)
                .as_bytes()
                .to_vec(),
        )
    }
    fn read(&self) -> ReadOptions {
        ReadOptions {
            r: self.r,
            repair: self.repair,
            sloppy_quorum: self.sloppy,
            timeout_ms: self.timeout_ms,
        }
    }
    fn write(&self) -> WriteOptions {
        WriteOptions {
            w: self.w,
            sloppy_quorum: self.sloppy,
            timeout_ms: self.timeout_ms,
        }
    }
}

fn key_bytes(k: &Dynamic) -> ApiResult<ByteBuf> {
    match value_bytes(k) {
        Ok(Some(b)) => Ok(ByteBuf::from(b)),
        Ok(None) => Err(fail("a key cannot be ()")),
        Err(e) => Err(fail(format!("a key cannot be {e}"))),
    }
}

/// Runs `op` on the current target; a node's error becomes a throw.
fn run(ctx: &Context, via: Option<u64>, op: Op) -> ApiResult<Reply> {
    let name = op.name();
    let target = ctx.target()?;
    match target.execute(via, op).map_err(fail)? {
        Ok(r) => Ok(r),
        Err(e) => Err(fail(format!("{name} failed: {e}"))),
    }
}

fn unexpected(what: &str, r: &Reply) -> Box<EvalAltResult> {
    fail(format!("{what}: unexpected reply {r:?}"))
}

/// A get's reply as a map.
fn object_map(reply: Reply) -> ApiResult<Map> {
    let Reply::Object {
        value,
        siblings,
        context,
        receipt,
    } = reply
    else {
        return Err(unexpected("get", &reply));
    };
    let mut m = Map::new();
    let found = value.is_some() || !siblings.is_empty();
    m.insert("found".into(), found.into());
    m.insert(
        "value".into(),
        value.map_or(Dynamic::UNIT, |v| bytes_value(&v)),
    );
    let sibs: Array = siblings
        .iter()
        .map(|s| {
            let mut e = Map::new();
            e.insert(
                "value".into(),
                s.value.as_ref().map_or(Dynamic::UNIT, |v| bytes_value(v)),
            );
            e.insert(
                "timestamp_ms".into(),
                Dynamic::from_int(s.timestamp_ms as INT),
            );
            e.insert("node".into(), Dynamic::from_int(s.node.0 as INT));
            Dynamic::from_map(e)
        })
        .collect();
    m.insert("siblings".into(), sibs.into());
    m.insert("context".into(), hex(&context).into());
    m.insert("receipt".into(), receipt_map(&receipt).into());
    Ok(m)
}

fn get_impl(ctx: &Context, key: Dynamic, o: Map) -> ApiResult<Map> {
    let o = opts(&o)?;
    let failures = ctx.policies.failure_count();
    let op = Op::Get {
        bucket: o.bucket(),
        key: key_bytes(&key)?,
        options: o.read(),
    };
    let target = ctx.target()?;
    let mut m = object_map(run(ctx, o.via, op)?)?;
    let has_siblings = m
        .get("siblings")
        .and_then(|s| s.read_lock::<Array>().map(|a| !a.is_empty()))
        .unwrap_or(false);
    if has_siblings && !target.runs_script_policies() {
        let bucket = o.bucket.as_deref().unwrap_or(DEFAULT_BUCKET);
        if let ConflictPolicy::Script(name) = bucket_info(ctx, bucket)?.policy {
            resolve_in_shell(ctx, &name, &mut m);
        }
    }
    if ctx.policies.failure_count() != failures {
        if let Some(last) = ctx.policies.failures().last() {
            m.insert(
                "policy_error".into(),
                format!("policy {}: {}", last.policy, last.error).into(),
            );
        }
    }
    Ok(m)
}

/// On a connection: resolves the siblings of a `get` result with policy
/// `name`, as an embedded node would, and marks the result
/// `resolved_by: "shell"`. A failure is recorded and leaves the siblings.
fn resolve_in_shell(ctx: &Context, name: &str, m: &mut Map) {
    let siblings: Array = m
        .get("siblings")
        .and_then(|s| s.read_lock::<Array>().map(|a| a.clone()))
        .unwrap_or_default();
    let Some(policy) = ctx.policies.get(name) else {
        ctx.policies.record(crate::policy::PolicyFailure {
            policy: name.to_string(),
            error: format!("no policy named {name:?} in this shell; define it with policy({name:?}, |siblings| ...)"),
        });
        return;
    };
    if let Ok(payload) = policy.resolve_values(siblings) {
        let (found, value) = match payload {
            ringkv::version::Payload::Value(v) => (true, bytes_value(&v)),
            ringkv::version::Payload::Tombstone => (false, Dynamic::UNIT),
        };
        m.insert("found".into(), found.into());
        m.insert("value".into(), value);
        m.insert("siblings".into(), Array::new().into());
        m.insert("resolved_by".into(), "shell".into());
    }
}

fn write_map(reply: Reply) -> ApiResult<Map> {
    let Reply::Written { context, receipt } = reply else {
        return Err(unexpected("put", &reply));
    };
    let mut m = Map::new();
    m.insert("context".into(), hex(&context).into());
    m.insert("receipt".into(), receipt_map(&receipt).into());
    Ok(m)
}

fn put_impl(ctx: &Context, key: Dynamic, value: Dynamic, o: Map) -> ApiResult<Map> {
    let o = opts(&o)?;
    let value = match value_bytes(&value) {
        Ok(Some(v)) => v,
        Ok(None) => return Err(fail("put: a value cannot be (); use delete(key)")),
        Err(e) => return Err(fail(format!("put: a value cannot be {e}"))),
    };
    let op = Op::Put {
        bucket: o.bucket(),
        key: key_bytes(&key)?,
        value: ByteBuf::from(value),
        context: o.context.clone().map(ByteBuf::from),
        options: o.write(),
    };
    write_map(run(ctx, o.via, op)?)
}

fn delete_impl(ctx: &Context, key: Dynamic, o: Map) -> ApiResult<Map> {
    let o = opts(&o)?;
    let op = Op::Delete {
        bucket: o.bucket(),
        key: key_bytes(&key)?,
        context: o.context.clone().map(ByteBuf::from),
        options: o.write(),
    };
    write_map(run(ctx, o.via, op)?)
}

fn counter_value(reply: Reply) -> ApiResult<INT> {
    match reply {
        Reply::Counter { value, .. } => Ok(value),
        r => Err(unexpected("counter", &r)),
    }
}

fn set_value(reply: Reply) -> ApiResult<Array> {
    match reply {
        Reply::Set { members, .. } => Ok(members.iter().map(|m| bytes_value(m)).collect()),
        r => Err(unexpected("set", &r)),
    }
}

fn members_of(a: Array) -> ApiResult<Vec<ByteBuf>> {
    a.iter().map(key_bytes).collect()
}

fn bucket_info(ctx: &Context, name: &str) -> ApiResult<BucketInfo> {
    match run(
        ctx,
        None,
        Op::GetBucket {
            bucket: ByteBuf::from(name.as_bytes().to_vec()),
        },
    )? {
        Reply::Bucket { props } => Ok(props),
        r => Err(unexpected("bucket", &r)),
    }
}

fn set_bucket_impl(ctx: &Context, name: &str, changes: Map) -> ApiResult<Map> {
    let mut props = bucket_info(ctx, name)?;
    for (k, v) in &changes {
        match k.as_str() {
            "n" => props.n = uint(v, "n")? as u32,
            "r" => props.r = consistency_of(v, "r")?,
            "w" => props.w = consistency_of(v, "w")?,
            "policy" => props.policy = policy_of(&v.to_string())?,
            "sloppy_quorum" => {
                props.sloppy_quorum = v
                    .as_bool()
                    .map_err(|t| fail(format!("sloppy_quorum: a bool, got {t}")))?
            }
            "timeout_ms" => props.timeout_ms = uint(v, "timeout_ms")?,
            other => {
                return Err(fail(format!(
                    "unknown bucket property {other:?}: n, r, w, policy, sloppy_quorum, timeout_ms"
                )))
            }
        }
    }
    if let ConflictPolicy::Script(name) = &props.policy {
        // Embedded nodes ask this shell for the policy; on a connection
        // the shell resolves. Either way it must exist here.
        if ctx.policies.get(name).is_none() {
            return Err(fail(format!(
                "no policy named {name:?}; define it first with policy({name:?}, |siblings| ...)"
            )));
        }
    }
    let bucket = ByteBuf::from(name.as_bytes().to_vec());
    let set = run(
        ctx,
        None,
        Op::SetBucket {
            bucket: bucket.clone(),
            props: props.clone(),
        },
    )?;
    let Reply::Bucket { props: stored } = set else {
        return Err(unexpected("set_bucket", &set));
    };
    // On an embedded cluster or a simulation, wait until every running
    // node knows, so that the next op behaves the same through any node.
    let target = ctx.target()?;
    if let Some(nodes) = target.nodes() {
        let spread = ctx
            .wait_on(nodes, 10_000, || {
                for id in nodes.live() {
                    let reply = target.execute(
                        Some(id),
                        Op::GetBucket {
                            bucket: bucket.clone(),
                        },
                    )?;
                    match reply {
                        Ok(Reply::Bucket { props: p }) if p == stored => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            })
            .map_err(fail)?;
        if !spread {
            return Err(fail(format!(
                "set_bucket: the properties of {name:?} did not reach every node within 10 s"
            )));
        }
    }
    Ok(bucket_map(&stored))
}

fn cluster_options(m: &Map) -> ApiResult<ClusterOptions> {
    let mut o = ClusterOptions::default();
    let mut n_set = false;
    for (k, v) in m {
        match k.as_str() {
            "nodes" => o.nodes = uint(v, "nodes")?,
            "n" => {
                o.n = uint(v, "n")? as usize;
                n_set = true;
            }
            "r" => o.r = consistency_of(v, "r")?,
            "w" => o.w = consistency_of(v, "w")?,
            "vnodes" => o.vnodes = uint(v, "vnodes")? as usize,
            "seed" => o.seed = uint(v, "seed")?,
            "gossip_ms" => o.gossip_ms = uint(v, "gossip_ms")?,
            "dir" => o.dir = Some(v.to_string().into()),
            "engine" => {
                o.engine = match v.to_string().as_str() {
                    "memory" => EngineKind::Memory,
                    "lsm" => EngineKind::Lsm,
                    "btree" => EngineKind::BTree,
                    e => return Err(fail(format!("engine: \"memory\", \"lsm\" or \"btree\", got {e:?}"))),
                }
            }
            "transport" => {
                o.transport = match v.to_string().as_str() {
                    "memory" => TransportKind::Memory,
                    "tcp" => TransportKind::Tcp,
                    t => return Err(fail(format!("transport: \"memory\" or \"tcp\", got {t:?}"))),
                }
            }
            other => {
                return Err(fail(format!(
                    "unknown cluster option {other:?}: nodes, n, r, w, engine, vnodes, transport, dir, seed, gossip_ms"
                )))
            }
        }
    }
    if !n_set {
        o.n = (o.nodes as usize).clamp(1, 3);
    }
    Ok(o)
}

fn start_cluster(ctx: &Arc<Context>, o: ClusterOptions) -> ApiResult<Handle> {
    let rt = ctx.runtime()?;
    let resolvers = Resolvers::with_source(Arc::new(TableSource(Arc::clone(&ctx.policies))));
    let cluster: Arc<dyn Backend> = Arc::new(Cluster::start(rt, o, resolvers).map_err(fail)?);
    ctx.started
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::clone(&cluster));
    ctx.set_target(Arc::clone(&cluster));
    Ok(Handle(cluster))
}

/// What `sim(#{...})` takes: `cluster`'s options that a simulation has.
fn sim_options(m: &Map) -> ApiResult<SimOptions> {
    let nodes = match m.get("nodes") {
        Some(v) => uint(v, "nodes")?,
        None => 3,
    };
    let seed = match m.get("seed") {
        Some(v) => uint(v, "seed")?,
        None => 1,
    };
    let mut o = SimOptions::new(nodes, seed);
    for (k, v) in m {
        match k.as_str() {
            "nodes" | "seed" => {}
            "n" => o.n = uint(v, "n")? as usize,
            "r" => o.r = consistency_of(v, "r")?,
            "w" => o.w = consistency_of(v, "w")?,
            "vnodes" => o.vnodes = uint(v, "vnodes")?.max(1) as usize,
            "engine" | "dir" => {
                return Err(fail(format!(
                    "sim: option {k} is not available: a simulation keeps each node's store in memory, and a crash keeps it (as under sync = always)"
                )))
            }
            "transport" => {
                return Err(fail(
                    "sim: option transport is not available: a simulation's nodes talk over its own seeded in-process network",
                ))
            }
            "gossip_ms" => {
                return Err(fail(
                    "sim: option gossip_ms is not available: simulated nodes gossip every second (a node's default), on virtual time",
                ))
            }
            other => {
                return Err(fail(format!(
                    "unknown sim option {other:?}: nodes, seed, n, r, w, vnodes"
                )))
            }
        }
    }
    Ok(o)
}

fn start_sim(ctx: &Arc<Context>, o: SimOptions) -> ApiResult<Handle> {
    let rt = ctx.runtime()?;
    let sim: Arc<dyn Backend> = Arc::new(Sim::new(rt, o).map_err(fail)?);
    ctx.started
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::clone(&sim));
    ctx.set_target(Arc::clone(&sim));
    Ok(Handle(sim))
}

fn status_table(ctx: &Context, observer: Option<u64>) -> ApiResult<Table> {
    let target = ctx.target()?;
    let Some(cluster) = target.nodes() else {
        let reply = run(ctx, None, Op::Status)?;
        let Reply::Status(s) = reply else {
            return Err(unexpected("status", &reply));
        };
        let mut t = Table::new(
            format!(
                "cluster {:?} as node {} sees it (keys and hints: its own)",
                s.cluster, s.node.0
            ),
            &["node", "state", "phi", "keys", "hints", "addr"],
        );
        for m in &s.members {
            let own = m.node == s.node;
            t.push(vec![
                Dynamic::from_int(m.node.0 as INT),
                m.state.clone().into(),
                Dynamic::from_float(m.phi),
                if own {
                    Dynamic::from_int(s.keys as INT)
                } else {
                    Dynamic::UNIT
                },
                if own {
                    Dynamic::from_int(s.hints as INT)
                } else {
                    Dynamic::UNIT
                },
                m.addr.clone().into(),
            ]);
        }
        return Ok(t);
    };
    let live = cluster.live();
    let observer = match observer {
        Some(o) => o,
        None => *live.first().ok_or_else(|| fail("every node is killed"))?,
    };
    let seen = cluster.status_of(observer).map_err(fail)?;
    // A simulation has no client ports: no column.
    let clients = cluster.client_addrs().unwrap_or_default();
    let mut columns = vec!["node", "state", "phi", "keys", "hints"];
    if !clients.is_empty() {
        columns.push("client");
    }
    let mut t = Table::new(
        format!("as node {observer} sees the cluster (keys and hints: each node's own)"),
        &columns,
    );
    for id in cluster.ids() {
        let member = seen.members.iter().find(|m| m.node.0 == id);
        let state: Dynamic = if !live.contains(&id) {
            format!("killed ({})", member.map_or("?", |m| m.state.as_str())).into()
        } else {
            member.map_or(Dynamic::UNIT, |m| m.state.clone().into())
        };
        let own = if live.contains(&id) {
            cluster.status_of(id).ok()
        } else {
            None
        };
        let mut row = vec![
            Dynamic::from_int(id as INT),
            state,
            member.map_or(Dynamic::UNIT, |m| Dynamic::from_float(m.phi)),
            own.as_ref()
                .map_or(Dynamic::UNIT, |s| Dynamic::from_int(s.keys as INT)),
            own.as_ref()
                .map_or(Dynamic::UNIT, |s| Dynamic::from_int(s.hints as INT)),
        ];
        if !clients.is_empty() {
            row.push(clients.get(&id).map_or(Dynamic::UNIT, |a| a.clone().into()));
        }
        t.push(row);
    }
    Ok(t)
}

fn ring_table(ctx: &Context) -> ApiResult<Table> {
    let reply = run(ctx, None, Op::Ring)?;
    let Reply::Ring(ring) = reply else {
        return Err(unexpected("ring", &reply));
    };
    let change = match &ring.change {
        Some(c) => format!(
            "; {} of node {} in progress, {}/{} range moves done",
            c.kind, c.node.0, c.done, c.moves
        ),
        None => String::new(),
    };
    let mut t = Table::new(
        format!("ring epoch {}: first-replica ownership{change}", ring.epoch),
        &["node", "vnodes", "share_pct"],
    );
    for n in &ring.nodes {
        t.push(vec![
            Dynamic::from_int(n.node.0 as INT),
            Dynamic::from_int(n.vnodes as INT),
            Dynamic::from_float(n.share * 100.0),
        ]);
    }
    Ok(t)
}

fn preference_table(ctx: &Context, key: Dynamic, o: Map) -> ApiResult<Table> {
    let o = opts(&o)?;
    let op = Op::PreferenceList {
        bucket: o.bucket(),
        key: key_bytes(&key)?,
    };
    let reply = run(ctx, o.via, op)?;
    let Reply::Preference { targets } = reply else {
        return Err(unexpected("preference_list", &reply));
    };
    let mut t = Table::new(
        format!("preference list of {key}"),
        &["position", "node", "fallback_for"],
    );
    for (i, e) in targets.iter().enumerate() {
        t.push(vec![
            Dynamic::from_int(i as INT + 1),
            Dynamic::from_int(e.node.0 as INT),
            e.fallback_for
                .map_or(Dynamic::UNIT, |f| Dynamic::from_int(f.0 as INT)),
        ]);
    }
    Ok(t)
}

/// The states a wait accepts: one name, or an array of names; lower case.
fn states_of(v: &Dynamic) -> ApiResult<Vec<String>> {
    let names: Vec<String> = match v.read_lock::<Array>() {
        Some(a) => a.iter().map(|s| s.to_string().to_lowercase()).collect(),
        None => vec![v.to_string().to_lowercase()],
    };
    for n in &names {
        if !["alive", "suspect", "down", "left"].contains(&n.as_str()) {
            return Err(fail(format!(
                "a state is \"Alive\", \"Suspect\", \"Down\" or \"Left\", got {n:?}"
            )));
        }
    }
    Ok(names)
}

/// The phi of node `of` as `observer`'s detector rates it now (`()` when
/// the observer has no entry for it). Asks only the observer.
fn phi_seen(cl: &dyn Nodes, observer: u64, of: u64) -> Result<Dynamic, String> {
    let seen = cl.status_of(observer)?;
    Ok(seen
        .members
        .iter()
        .find(|m| m.node.0 == of)
        .map_or(Dynamic::UNIT, |m| Dynamic::from_float(m.phi)))
}

fn state_is(s: Option<ringkv::MemberStatus>, want: &[String]) -> bool {
    s.is_some_and(|s| want.contains(&format!("{s:?}").to_lowercase()))
}

/// Waits until every running node other than `node` sees it in one of
/// `states`; returns the milliseconds waited.
fn wait_state(ctx: &Context, node: INT, states: Dynamic, ms: INT) -> ApiResult<INT> {
    let want = states_of(&states)?;
    let (ok, waited) = ctx.with_nodes("wait_state", |c| {
        let start = c.now();
        let ok = ctx.wait_on(c, ms, || {
            let views = c.views_of(node as u64)?;
            Ok(!views.is_empty() && views.iter().all(|(_, s)| state_is(*s, &want)))
        })?;
        Ok((ok, c.now().saturating_sub(start)))
    })?;
    if ok {
        Ok(waited.as_millis() as INT)
    } else {
        Err(fail(format!(
            "node {node} was not {states} on every running node within {ms} ms"
        )))
    }
}

/// Waits until `observer` sees `node` in one of `states`.
fn wait_seen(ctx: &Context, observer: INT, node: INT, states: Dynamic, ms: INT) -> ApiResult<INT> {
    let want = states_of(&states)?;
    let (ok, waited) = ctx.with_nodes("wait_seen", |cl| {
        let start = cl.now();
        let ok = ctx.wait_on(cl, ms, || {
            let views = cl.views_of(node as u64)?;
            Ok(views
                .iter()
                .any(|(o, s)| *o == observer as u64 && state_is(*s, &want)))
        })?;
        Ok((ok, cl.now().saturating_sub(start)))
    })?;
    if ok {
        Ok(waited.as_millis() as INT)
    } else {
        Err(fail(format!(
            "node {observer} did not see node {node} {states} within {ms} ms"
        )))
    }
}

/// A node id given to a ring-change function: a positive number.
fn node_id(n: INT) -> ApiResult<u64> {
    if n < 1 {
        return Err(fail(format!("node ids start at 1, got {n}")));
    }
    Ok(n as u64)
}

/// The status of the node a connection talks to.
fn remote_status(ctx: &Context) -> ApiResult<ringkv::protocol::StatusView> {
    match run(ctx, None, Op::Status)? {
        Reply::Status(s) => Ok(s),
        r => Err(unexpected("status", &r)),
    }
}

fn remote_ring(ctx: &Context) -> ApiResult<ringkv::protocol::RingView> {
    match run(ctx, None, Op::Ring)? {
        Reply::Ring(r) => Ok(r),
        r => Err(unexpected("ring", &r)),
    }
}

/// `join()` / `join(id)`: a new node in the embedded cluster.
fn join_impl(ctx: &Context, id: Option<u64>) -> ApiResult<INT> {
    let target = ctx.target()?;
    let Some(cluster) = target.nodes() else {
        return Err(fail(
            "join() needs an embedded cluster (cluster(...)): on a connection, start a ringkv-node with a running node as its seed",
        ));
    };
    let id = cluster.add_node(id).map_err(fail)?;
    Ok(id as INT)
}

/// `decommission(n)`: node `n` gives its ranges away and stays up. On a
/// connection only the node connected to can be asked (`Op::Leave`).
fn decommission_impl(ctx: &Context, n: INT) -> ApiResult<()> {
    let id = node_id(n)?;
    let target = ctx.target()?;
    if let Some(cluster) = target.nodes() {
        return cluster.decommission(id).map_err(fail);
    }
    let me = remote_status(ctx)?.node.0;
    if me != id {
        return Err(fail(format!(
            "decommission({id}): a connection asks the node it is connected to (node {me}) to leave; connect to node {id}'s client port"
        )));
    }
    match run(ctx, None, Op::Leave)? {
        Reply::Ring(_) => Ok(()),
        r => Err(unexpected("decommission", &r)),
    }
}

/// `remove(n)`: takes dead node `n` out of the ring.
fn remove_impl(ctx: &Context, n: INT) -> ApiResult<()> {
    let id = node_id(n)?;
    let target = ctx.target()?;
    if let Some(cluster) = target.nodes() {
        return cluster.remove(id).map_err(fail);
    }
    match run(
        ctx,
        None,
        Op::RemoveNode {
            node: ringkv::NodeId(id),
        },
    )? {
        Reply::Ring(_) => Ok(()),
        r => Err(unexpected("remove", &r)),
    }
}

/// `forget(n)`: node `n`, gone for good, becomes LEFT everywhere and then
/// leaves the ring. On a connection the node connected to is asked
/// (`Op::Forget`); on an embedded cluster `n` must be killed.
fn forget_impl(ctx: &Context, n: INT) -> ApiResult<()> {
    let id = node_id(n)?;
    let target = ctx.target()?;
    if let Some(cluster) = target.nodes() {
        return cluster.forget(id).map_err(fail);
    }
    match run(
        ctx,
        None,
        Op::Forget {
            node: ringkv::NodeId(id),
        },
    )? {
        Reply::Ring(_) => Ok(()),
        r => Err(unexpected("forget", &r)),
    }
}

/// The range of a transfer as text: `(after, through]` in hex tokens.
fn range_text(t: &ringkv::protocol::TransferView) -> String {
    format!("({:016x}, {:016x}]", t.after, t.through)
}

/// Whether a transfer has not finished yet.
fn transfer_active(t: &ringkv::protocol::TransferView) -> bool {
    !matches!(t.state.as_str(), "done" | "failed")
}

/// `transfers()`: every incoming range transfer of every running node (on
/// a connection: of the node connected to).
fn transfers_table(ctx: &Context) -> ApiResult<Table> {
    let target = ctx.target()?;
    let (title, rows) = match target.nodes() {
        Some(cluster) => (
            "range transfers into each running node".to_string(),
            cluster.transfers().map_err(fail)?,
        ),
        None => {
            let s = remote_status(ctx)?;
            let me = s.node.0;
            (
                format!("range transfers into node {me} (the node connected to)"),
                s.transfers.into_iter().map(|t| (me, t)).collect(),
            )
        }
    };
    let mut t = Table::new(
        title,
        &[
            "node",
            "id",
            "range",
            "sources",
            "state",
            "keys",
            "bytes",
            "batches",
            "elapsed_ms",
        ],
    );
    for (node, v) in &rows {
        t.push(vec![
            Dynamic::from_int(*node as INT),
            Dynamic::from(format!("{:016x}", v.id)),
            range_text(v).into(),
            ids_array(&v.sources).into(),
            match &v.error {
                Some(e) => format!("{}: {e}", v.state).into(),
                None => v.state.clone().into(),
            },
            Dynamic::from_int(v.keys as INT),
            Dynamic::from_int(v.bytes as INT),
            Dynamic::from_int(v.batches as INT),
            Dynamic::from_int(v.elapsed_ms as INT),
        ]);
    }
    Ok(t)
}

/// `rebalance_status()`: each running node's ring epoch, the change it has
/// in progress and its moves done, and its incoming transfers.
fn rebalance_table(ctx: &Context) -> ApiResult<Table> {
    let target = ctx.target()?;
    let (views, transfers, at_rest) = match target.nodes() {
        Some(cluster) => {
            let views = cluster.ring_views().map_err(fail)?;
            let transfers = cluster.transfers().map_err(fail)?;
            let at_rest = cluster.rebalanced().map_err(fail)?;
            (views, transfers, at_rest)
        }
        None => {
            let s = remote_status(ctx)?;
            let me = s.node.0;
            let ring = remote_ring(ctx)?;
            let at_rest = ring.change.is_none();
            let transfers = s.transfers.into_iter().map(|t| (me, t)).collect();
            (vec![(me, ring)], transfers, at_rest)
        }
    };
    let agree = views.iter().all(|(_, v)| v.change.is_none())
        && views.windows(2).all(|w| {
            w[0].1.epoch == w[1].1.epoch
                && w[0]
                    .1
                    .nodes
                    .iter()
                    .map(|n| n.node)
                    .eq(w[1].1.nodes.iter().map(|n| n.node))
        });
    let epoch = views.first().map_or(0, |(_, v)| v.epoch);
    let title = if at_rest {
        format!("ring at rest: epoch {epoch}, no change in progress")
    } else if agree {
        format!(
            "ring epoch {epoch} on every running node, no change in progress, but its members are not the nodes expected (a join or leave asked for has not begun, or a change was made through a connection)"
        )
    } else {
        let changes: Vec<String> = views
            .iter()
            .filter_map(|(_, v)| v.change.as_ref())
            .map(|c| format!("{} of node {}", c.kind, c.node.0))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if changes.is_empty() {
            "ring changing: the nodes do not agree yet".to_string()
        } else {
            format!("ring changing: {}", changes.join(", "))
        }
    };
    let mut t = Table::new(
        title,
        &[
            "node",
            "epoch",
            "members",
            "change",
            "moves_done",
            "moves",
            "transfers_active",
            "keys_in",
        ],
    );
    for (node, v) in &views {
        let mine: Vec<&ringkv::protocol::TransferView> = transfers
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, t)| t)
            .collect();
        let members: Array = v
            .nodes
            .iter()
            .map(|n| Dynamic::from_int(n.node.0 as INT))
            .collect();
        let (change, done, moves) = match &v.change {
            Some(c) => (
                Dynamic::from(format!("{} {}", c.kind, c.node.0)),
                Dynamic::from_int(c.done as INT),
                Dynamic::from_int(c.moves as INT),
            ),
            None => (Dynamic::UNIT, Dynamic::UNIT, Dynamic::UNIT),
        };
        t.push(vec![
            Dynamic::from_int(*node as INT),
            Dynamic::from_int(v.epoch as INT),
            members.into(),
            change,
            done,
            moves,
            Dynamic::from_int(mine.iter().filter(|t| transfer_active(t)).count() as INT),
            Dynamic::from_int(mine.iter().map(|t| t.keys).sum::<u64>() as INT),
        ]);
    }
    Ok(t)
}

/// `wait_rebalanced(ms)`: until no running node has a change in progress
/// and all agree on a ring with the members expected (on a connection:
/// until the node connected to has no change in progress).
fn wait_rebalanced(ctx: &Context, ms: INT) -> ApiResult<INT> {
    let start = Instant::now();
    let target = ctx.target()?;
    let (ok, waited) = match target.nodes() {
        Some(cluster) => {
            let from = cluster.now();
            let ok = ctx
                .wait_on(cluster, ms, || cluster.rebalanced())
                .map_err(fail)?;
            (ok, cluster.now().saturating_sub(from))
        }
        None => {
            let limit = Duration::from_millis(ms.max(0) as u64);
            loop {
                ctx.check_interrupt()?;
                if remote_ring(ctx)?.change.is_none() {
                    break (true, start.elapsed());
                }
                if start.elapsed() >= limit {
                    break (false, start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    if ok {
        return Ok(waited.as_millis() as INT);
    }
    let state = rebalance_table(ctx).map_or_else(|e| e.to_string(), |t| t.to_string());
    Err(fail(format!(
        "the ring did not come to rest within {ms} ms:\n{}",
        state.trim_end()
    )))
}

/// A workload running in the background (`workload_start`).
#[derive(Clone)]
pub struct WorkloadHandle(Arc<std::sync::Mutex<Option<crate::workload::Running>>>);

impl WorkloadHandle {
    /// One line: running with the requests done, or stopped.
    pub fn describe(&self) -> String {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(r) => format!("workload running: {} requests done", r.done()),
            None => "workload stopped".to_string(),
        }
    }
}

/// The default limit of `wait_rebalanced()` and `leave(n)`.
pub const REBALANCE_WAIT_MS: INT = 60_000;

/// Registers the whole API on `engine`.
pub fn register(engine: &mut Engine, ctx: &Arc<Context>) {
    engine.register_type_with_name::<Handle>("Cluster");
    engine.register_fn("to_string", |h: &mut Handle| h.0.describe());
    engine.register_fn("to_debug", |h: &mut Handle| h.0.describe());
    engine.register_type_with_name::<Table>("Table");
    engine.register_fn("to_string", |t: &mut Table| t.to_string());
    engine.register_fn("to_debug", |t: &mut Table| t.to_string());
    engine.register_get("rows", |t: &mut Table| t.rows_array());
    engine.register_fn("len", |t: &mut Table| t.rows.len() as INT);
    engine.register_fn("column", |t: &mut Table, c: &str| t.column(c));
    engine.register_indexer_get(|t: &mut Table, i: INT| -> ApiResult<Map> {
        usize::try_from(i)
            .ok()
            .and_then(|i| t.rows.get(i).cloned())
            .ok_or_else(|| {
                fail(format!(
                    "row {i} out of range (the table has {})",
                    t.rows.len()
                ))
            })
    });
    engine.register_fn("table", |rows: Array| -> ApiResult<Table> {
        Table::from_rows(rows).map_err(fail)
    });

    let c = Arc::clone(ctx);
    engine.register_fn("cluster", move |n: INT| -> ApiResult<Handle> {
        let mut m = Map::new();
        m.insert("nodes".into(), Dynamic::from_int(n));
        start_cluster(&c, cluster_options(&m)?)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("cluster", move |m: Map| -> ApiResult<Handle> {
        start_cluster(&c, cluster_options(&m)?)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("sim", move |n: INT, seed: INT| -> ApiResult<Handle> {
        let mut m = Map::new();
        m.insert("nodes".into(), Dynamic::from_int(n));
        m.insert("seed".into(), Dynamic::from_int(seed));
        start_sim(&c, sim_options(&m)?)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("sim", move |m: Map| -> ApiResult<Handle> {
        start_sim(&c, sim_options(&m)?)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("connect", move |addr: &str| -> ApiResult<Handle> {
        let rt = c.runtime()?;
        let remote: Arc<dyn Backend> =
            Arc::new(Remote::connect(rt, addr, None, None).map_err(fail)?);
        c.set_target(Arc::clone(&remote));
        Ok(Handle(remote))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("connect", move |addr: &str, m: Map| -> ApiResult<Handle> {
        let text = |key: &str| -> ApiResult<Option<String>> {
            match m.get(key) {
                None => Ok(None),
                Some(v) if v.is_unit() => Ok(None),
                Some(v) => v
                    .clone()
                    .into_string()
                    .map(Some)
                    .map_err(|t| fail(format!("connect: {key} must be a string, got {t}"))),
            }
        };
        const OPTIONS: [&str; 4] = ["user", "password", "tls_ca", "server_name"];
        if let Some(unknown) = m.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
            return Err(fail(format!(
                "connect: unknown option {unknown} (options: {})",
                OPTIONS.join(", ")
            )));
        }
        let credentials = match (text("user")?, text("password")?) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password)),
            (None, None) => None,
            _ => return Err(fail("connect: user and password go together")),
        };
        let tls = match (text("tls_ca")?, text("server_name")?) {
            (None, None) => None,
            (None, Some(_)) => return Err(fail("connect: server_name needs tls_ca")),
            (Some(path), name) => {
                let pem = read_pem(&path).map_err(|e| fail(format!("connect: tls_ca: {e}")))?;
                let tls = ClientTls::new(&pem).map_err(|e| fail(format!("connect: {e}")))?;
                Some(match name {
                    Some(name) => tls
                        .with_server_name(name)
                        .map_err(|e| fail(format!("connect: {e}")))?,
                    None => tls,
                })
            }
        };
        let rt = c.runtime()?;
        let remote: Arc<dyn Backend> =
            Arc::new(Remote::connect(rt, addr, credentials, tls).map_err(fail)?);
        c.set_target(Arc::clone(&remote));
        Ok(Handle(remote))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("select", move |h: Handle| {
        c.set_target(h.0);
    });
    let c = Arc::clone(ctx);
    engine.register_fn("nodes", move || -> ApiResult<Array> {
        c.with_nodes("nodes()", |cl| {
            Ok(cl
                .ids()
                .into_iter()
                .map(|i| Dynamic::from_int(i as INT))
                .collect())
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("live_nodes", move || -> ApiResult<Array> {
        c.with_nodes("live_nodes()", |cl| {
            Ok(cl
                .live()
                .into_iter()
                .map(|i| Dynamic::from_int(i as INT))
                .collect())
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("client_addrs", move || -> ApiResult<Map> {
        c.with_nodes("client_addrs()", |cl| {
            Ok(cl
                .client_addrs()?
                .into_iter()
                .map(|(id, a)| (id.to_string().into(), Dynamic::from(a)))
                .collect())
        })
    });

    // ---- data ----
    let c = Arc::clone(ctx);
    engine.register_fn("get", move |k: Dynamic| get_impl(&c, k, Map::new()));
    let c = Arc::clone(ctx);
    engine.register_fn("get", move |k: Dynamic, o: Map| get_impl(&c, k, o));
    let c = Arc::clone(ctx);
    engine.register_fn("put", move |k: Dynamic, v: Dynamic| {
        put_impl(&c, k, v, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("put", move |k: Dynamic, v: Dynamic, o: Map| {
        put_impl(&c, k, v, o)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("delete", move |k: Dynamic| delete_impl(&c, k, Map::new()));
    let c = Arc::clone(ctx);
    engine.register_fn("delete", move |k: Dynamic, o: Map| delete_impl(&c, k, o));
    let local = |c: &Context, node: INT, k: Dynamic, o: Map| -> ApiResult<Map> {
        let o = opts(&o)?;
        let op = Op::LocalGet {
            bucket: o.bucket(),
            key: key_bytes(&k)?,
        };
        object_map(run(c, Some(node.max(0) as u64), op)?)
    };
    let holders = |c: &Context, k: Dynamic, o: Map| -> ApiResult<Array> {
        let o = opts(&o)?;
        let (bucket, key) = (o.bucket(), key_bytes(&k)?);
        let target = c.target()?;
        let Some(cluster) = target.nodes() else {
            return Err(fail(
                "holders() asks every node's own store, so it needs an embedded cluster (cluster(...)) or a simulation (sim(...)); on a connection, local_get asks the node connected to",
            ));
        };
        // Every node at once: one round trip, not one per node.
        let mut asked = Vec::new();
        for id in cluster.live() {
            let op = Op::LocalGet {
                bucket: bucket.clone(),
                key: key.clone(),
            };
            // A node killed meanwhile holds nothing any more.
            if let Ok(fut) = target.start(Some(id), op) {
                asked.push(async move { (id, fut.await) });
            }
        }
        let replies = target
            .runtime()
            .run(move || futures_util::future::join_all(asked))
            .map_err(fail)?;
        let mut out = Array::new();
        for (id, reply) in replies {
            match reply {
                Ok(Reply::Object {
                    value, siblings, ..
                }) => {
                    if value.is_some() || !siblings.is_empty() {
                        out.push(Dynamic::from_int(id as INT));
                    }
                }
                Ok(r) => return Err(unexpected("holders", &r)),
                Err(e) => return Err(fail(format!("holders: node {id}: {e}"))),
            }
        }
        Ok(out)
    };
    let c = Arc::clone(ctx);
    engine.register_fn("holders", move |k: Dynamic| holders(&c, k, Map::new()));
    let c = Arc::clone(ctx);
    engine.register_fn("holders", move |k: Dynamic, o: Map| holders(&c, k, o));
    let c = Arc::clone(ctx);
    engine.register_fn("local_get", move |n: INT, k: Dynamic| {
        local(&c, n, k, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("local_get", move |n: INT, k: Dynamic, o: Map| {
        local(&c, n, k, o)
    });

    let counter_add = |c: &Context, k: Dynamic, by: INT, o: Map| -> ApiResult<INT> {
        let o = opts(&o)?;
        let op = Op::CounterAdd {
            bucket: o.bucket(),
            key: key_bytes(&k)?,
            by,
            options: o.write(),
        };
        counter_value(run(c, o.via, op)?)
    };
    let c = Arc::clone(ctx);
    engine.register_fn("counter_add", move |k: Dynamic, by: INT| {
        counter_add(&c, k, by, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("counter_add", move |k: Dynamic, by: INT, o: Map| {
        counter_add(&c, k, by, o)
    });
    let counter_get = |c: &Context, k: Dynamic, o: Map| -> ApiResult<INT> {
        let o = opts(&o)?;
        let op = Op::CounterGet {
            bucket: o.bucket(),
            key: key_bytes(&k)?,
            options: o.read(),
        };
        counter_value(run(c, o.via, op)?)
    };
    let c = Arc::clone(ctx);
    engine.register_fn("counter_get", move |k: Dynamic| {
        counter_get(&c, k, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("counter_get", move |k: Dynamic, o: Map| {
        counter_get(&c, k, o)
    });

    let set_change =
        |c: &Context, add: bool, k: Dynamic, members: Array, o: Map| -> ApiResult<Array> {
            let o = opts(&o)?;
            let (bucket, key, members, options) =
                (o.bucket(), key_bytes(&k)?, members_of(members)?, o.write());
            let op = if add {
                Op::SetAdd {
                    bucket,
                    key,
                    members,
                    options,
                    count_only: false,
                }
            } else {
                Op::SetRemove {
                    bucket,
                    key,
                    members,
                    options,
                    count_only: false,
                }
            };
            set_value(run(c, o.via, op)?)
        };
    let c = Arc::clone(ctx);
    engine.register_fn("set_add", move |k: Dynamic, m: Array| {
        set_change(&c, true, k, m, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("set_add", move |k: Dynamic, m: Array, o: Map| {
        set_change(&c, true, k, m, o)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("set_remove", move |k: Dynamic, m: Array| {
        set_change(&c, false, k, m, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("set_remove", move |k: Dynamic, m: Array, o: Map| {
        set_change(&c, false, k, m, o)
    });
    let set_members = |c: &Context, k: Dynamic, o: Map| -> ApiResult<Array> {
        let o = opts(&o)?;
        let op = Op::SetMembers {
            bucket: o.bucket(),
            key: key_bytes(&k)?,
            options: o.read(),
        };
        set_value(run(c, o.via, op)?)
    };
    let c = Arc::clone(ctx);
    engine.register_fn("set_members", move |k: Dynamic| {
        set_members(&c, k, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("set_members", move |k: Dynamic, o: Map| {
        set_members(&c, k, o)
    });

    // ---- buckets and policies ----
    let c = Arc::clone(ctx);
    engine.register_fn("bucket", move |name: &str| -> ApiResult<Map> {
        Ok(bucket_map(&bucket_info(&c, name)?))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("set_bucket", move |name: &str, props: Map| {
        set_bucket_impl(&c, name, props)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("policy", move |name: &str, f: FnPtr| -> ApiResult<String> {
        if name.is_empty() {
            return Err(fail("a policy needs a name"));
        }
        let ast = c
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        c.policies.define(name, f, ast);
        Ok(format!("script:{name}"))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("policies", move || -> Array {
        c.policies.names().into_iter().map(Dynamic::from).collect()
    });
    let c = Arc::clone(ctx);
    engine.register_fn("policy_failures", move || -> Array {
        c.policies
            .failures()
            .into_iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert("policy".into(), f.policy.into());
                m.insert("error".into(), f.error.into());
                Dynamic::from_map(m)
            })
            .collect()
    });

    // ---- faults ----
    let c = Arc::clone(ctx);
    engine.register_fn("kill", move |n: INT| -> ApiResult<()> {
        c.with_nodes("kill", |cl| cl.kill(n.max(0) as u64))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("restart", move |n: INT| -> ApiResult<()> {
        c.with_nodes("restart", |cl| cl.restart(n.max(0) as u64))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("pause", move |n: INT, ms: INT| -> ApiResult<()> {
        c.with_nodes("pause", |cl| cl.pause(n.max(0) as u64, ms.max(0) as u64))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("partition", move |a: Array, b: Array| -> ApiResult<()> {
        let (a, b) = (node_list(&a, "partition")?, node_list(&b, "partition")?);
        c.with_nodes("partition", |cl| cl.partition(&a, &b))
    });
    let c = Arc::clone(ctx);
    engine.register_fn(
        "partition_one_way",
        move |a: Array, b: Array| -> ApiResult<()> {
            let (a, b) = (
                node_list(&a, "partition_one_way")?,
                node_list(&b, "partition_one_way")?,
            );
            c.with_nodes("partition_one_way", |cl| cl.partition_one_way(&a, &b))
        },
    );
    let c = Arc::clone(ctx);
    engine.register_fn("heal", move || -> ApiResult<()> {
        c.with_nodes("heal", |cl| {
            cl.heal();
            Ok(())
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("drop_rate", move |p: rhai::FLOAT| -> ApiResult<()> {
        c.with_nodes("drop_rate", |cl| cl.set_drop_rate(p))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("delay", move |min: INT, max: INT| -> ApiResult<()> {
        c.with_nodes("delay", |cl| {
            cl.set_delay(min.max(0) as u64, max.max(0) as u64)
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("delay", move |ms: INT| -> ApiResult<()> {
        c.with_nodes("delay", |cl| {
            cl.set_delay(ms.max(0) as u64, ms.max(0) as u64)
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("skew", move |n: INT, ms: INT| -> ApiResult<()> {
        c.with_nodes("skew", |cl| cl.skew(n.max(0) as u64, ms))
    });

    let c = Arc::clone(ctx);
    engine.register_fn("fault_counters", move || -> ApiResult<Map> {
        c.with_nodes("fault_counters()", |cl| {
            let f = cl.fault_counters();
            let mut m = Map::new();
            m.insert("blocked".into(), Dynamic::from_int(f.blocked as INT));
            m.insert("dropped".into(), Dynamic::from_int(f.dropped as INT));
            m.insert("delayed".into(), Dynamic::from_int(f.delayed as INT));
            Ok(m)
        })
    });

    // ---- views and waits ----
    let c = Arc::clone(ctx);
    engine.register_fn("status", move || status_table(&c, None));
    let c = Arc::clone(ctx);
    engine.register_fn("status", move |n: INT| {
        status_table(&c, Some(n.max(0) as u64))
    });
    let c = Arc::clone(ctx);
    engine.register_fn("ring", move || ring_table(&c));
    let c = Arc::clone(ctx);
    engine.register_fn("preference_list", move |k: Dynamic| {
        preference_table(&c, k, Map::new())
    });
    let c = Arc::clone(ctx);
    engine.register_fn("preference_list", move |k: Dynamic, o: Map| {
        preference_table(&c, k, o)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("wait_state", move |n: INT, states: Dynamic, ms: INT| {
        wait_state(&c, n, states, ms)
    });
    let c = Arc::clone(ctx);
    engine.register_fn(
        "wait_seen",
        move |observer: INT, n: INT, states: Dynamic, ms: INT| {
            wait_seen(&c, observer, n, states, ms)
        },
    );
    let c = Arc::clone(ctx);
    engine.register_fn("views", move |n: INT| -> ApiResult<Map> {
        c.with_nodes("views", |cl| {
            Ok(cl
                .views_of(n.max(0) as u64)?
                .into_iter()
                .map(|(o, s)| {
                    let state = s.map_or(Dynamic::UNIT, |s| format!("{s:?}").into());
                    (o.to_string().into(), state)
                })
                .collect())
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("phi", move |n: INT| -> ApiResult<Map> {
        c.with_nodes("phi", |cl| {
            let of = n.max(0) as u64;
            let mut out = Map::new();
            for observer in cl.live() {
                if observer != of {
                    out.insert(observer.to_string().into(), phi_seen(cl, observer, of)?);
                }
            }
            Ok(out)
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("phi", move |observer: INT, n: INT| -> ApiResult<Dynamic> {
        c.with_nodes("phi", |cl| {
            phi_seen(cl, observer.max(0) as u64, n.max(0) as u64)
        })
    });
    let c = Arc::clone(ctx);
    engine.register_fn("now_ms", move || -> INT {
        let target = c.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = match target.as_ref().and_then(|t| t.nodes()) {
            Some(nodes) => nodes.now(),
            None => crate::backend::wall_epoch().elapsed(),
        };
        now.as_millis() as INT
    });
    let c = Arc::clone(ctx);
    engine.register_fn("wait_settled", move |ms: INT| -> ApiResult<INT> {
        let (ok, waited) = c.with_nodes("wait_settled", |cl| {
            let start = cl.now();
            let live = cl.live();
            let ok = c.wait_on(cl, ms, || {
                for id in &live {
                    for (_, s) in cl.views_of(*id)? {
                        if s != Some(ringkv::MemberStatus::Alive) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            })?;
            Ok((ok, cl.now().saturating_sub(start)))
        })?;
        if ok {
            Ok(waited.as_millis() as INT)
        } else {
            Err(fail(format!(
                "the running nodes did not all see each other ALIVE within {ms} ms"
            )))
        }
    });
    let c = Arc::clone(ctx);
    engine.register_fn("wait_hints", move |ms: INT| -> ApiResult<INT> {
        let (ok, waited) = c.with_nodes("wait_hints", |cl| {
            let start = cl.now();
            let ok = c.wait_on(cl, ms, || Ok(cl.total_hints()? == 0))?;
            Ok((ok, cl.now().saturating_sub(start)))
        })?;
        if ok {
            Ok(waited.as_millis() as INT)
        } else {
            Err(fail(format!("hints were not all delivered within {ms} ms")))
        }
    });
    let c = Arc::clone(ctx);
    engine.register_fn("sleep", move |ms: INT| -> ApiResult<()> {
        // In slices, so that Ctrl-C ends a long sleep. On a simulation
        // its virtual time passes instead of the wall clock's.
        let d = Duration::from_millis(ms.max(0) as u64);
        let interrupted = || {
            if c.interrupted() {
                Err(INTERRUPTED.to_string())
            } else {
                Ok(())
            }
        };
        let target = c.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        match target.as_ref().and_then(|t| t.nodes()) {
            Some(nodes) => nodes.sleep(d, &interrupted),
            None => crate::backend::wall_sleep(d, &interrupted),
        }
        .map_err(fail)
    });
    engine.register_fn("check", |ok: bool, what: &str| -> ApiResult<()> {
        if ok {
            println!("  ok: {what}");
            Ok(())
        } else {
            Err(fail(format!("check failed: {what}")))
        }
    });

    let c = Arc::clone(ctx);
    engine.register_fn("workload", move |m: Map| -> ApiResult<Map> {
        crate::workload::run(&c.target()?, &m, c.interactive, &c.interrupt)
    });
    engine.register_type_with_name::<WorkloadHandle>("Workload");
    engine.register_fn("to_string", |w: &mut WorkloadHandle| w.describe());
    engine.register_fn("to_debug", |w: &mut WorkloadHandle| w.describe());
    let c = Arc::clone(ctx);
    engine.register_fn(
        "workload_start",
        move |m: Map| -> ApiResult<WorkloadHandle> {
            let running = crate::workload::start(&c.target()?, &m)?;
            Ok(WorkloadHandle(Arc::new(std::sync::Mutex::new(Some(
                running,
            )))))
        },
    );
    engine.register_fn("workload_progress", |w: WorkloadHandle| -> ApiResult<INT> {
        match &*w.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(r) => Ok(r.done() as INT),
            None => Err(fail("workload_progress: this workload was already stopped")),
        }
    });
    let c = Arc::clone(ctx);
    engine.register_fn(
        "workload_stop",
        move |w: WorkloadHandle| -> ApiResult<Map> {
            let running =
                w.0.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| fail("workload_stop: this workload was already stopped"))?;
            running.stop();
            running.finish(false, &c.interrupt)
        },
    );

    // ---- ring changes ----
    let c = Arc::clone(ctx);
    engine.register_fn("join", move || join_impl(&c, None));
    let c = Arc::clone(ctx);
    engine.register_fn("join", move |id: INT| join_impl(&c, Some(node_id(id)?)));
    let c = Arc::clone(ctx);
    engine.register_fn("decommission", move |n: INT| decommission_impl(&c, n));
    let leave = |c: &Context, n: INT, ms: INT| -> ApiResult<()> {
        let id = node_id(n)?;
        let target = c.target()?;
        let Some(cluster) = target.nodes() else {
            return Err(fail(format!(
                "leave({id}) stops the node, so it needs an embedded cluster (cluster(...)); on a connection, decommission({id}) through node {id}'s client port, then stop its process once ring() no longer lists it"
            )));
        };
        cluster
            .leave(id, Duration::from_millis(ms.max(0) as u64))
            .map_err(fail)
    };
    let c = Arc::clone(ctx);
    engine.register_fn("leave", move |n: INT| leave(&c, n, REBALANCE_WAIT_MS));
    let c = Arc::clone(ctx);
    engine.register_fn("leave", move |n: INT, ms: INT| leave(&c, n, ms));
    let c = Arc::clone(ctx);
    engine.register_fn("remove", move |n: INT| remove_impl(&c, n));
    let c = Arc::clone(ctx);
    engine.register_fn("forget", move |n: INT| forget_impl(&c, n));
    let c = Arc::clone(ctx);
    engine.register_fn("transfers", move || transfers_table(&c));
    let c = Arc::clone(ctx);
    engine.register_fn("rebalance_status", move || rebalance_table(&c));
    let c = Arc::clone(ctx);
    engine.register_fn("wait_rebalanced", move || {
        wait_rebalanced(&c, REBALANCE_WAIT_MS)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("wait_rebalanced", move |ms: INT| wait_rebalanced(&c, ms));

    // ---- plots ----
    crate::plot_api::register(engine);
    let c = Arc::clone(ctx);
    engine.register_fn("gossip_rounds", move || {
        crate::gossip::measure(&crate::gossip::params(&Map::new())?, &c.interrupt)
    });
    let c = Arc::clone(ctx);
    engine.register_fn("gossip_rounds", move |m: Map| {
        crate::gossip::measure(&crate::gossip::params(&m)?, &c.interrupt)
    });

    engine.register_fn("help", crate::help::overview);
    engine.register_fn("help", |name: &str| crate::help::topic(name));
}

/// The shell's engine with its limits but none of its functions: for
/// tests that need to parse as the shell does.
pub fn shell_engine_for_tests() -> Engine {
    crate::new_engine()
}

/// The text of a PEM file of at most 1 MiB (a CA bundle is a few KiB).
fn read_pem(path: &str) -> Result<String, String> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut text = String::new();
    file.take(MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {path} as text: {e}"))?;
    if text.len() as u64 > MAX {
        return Err(format!("{path} is larger than 1 MiB; not a PEM file"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        assert_eq!(
            value_bytes(&Dynamic::from("é")).unwrap(),
            Some("é".as_bytes().to_vec())
        );
        assert_eq!(
            value_bytes(&Dynamic::from_int(42)).unwrap(),
            Some(b"42".to_vec())
        );
        assert_eq!(value_bytes(&Dynamic::UNIT).unwrap(), None);
        assert!(value_bytes(&Dynamic::from_array(vec![])).is_err());
        assert!(bytes_value(&[0xff, 0]).is_blob());
        assert_eq!(bytes_value(b"x").to_string(), "x");
        assert_eq!(unhex(&hex(&[0, 1, 254])).unwrap(), vec![0, 1, 254]);
        assert!(unhex("zz").is_err());
        assert!(unhex("abc").is_err());
    }

    #[test]
    fn options_and_policies_parse() {
        let mut m = Map::new();
        m.insert("r".into(), "all".into());
        m.insert("w".into(), Dynamic::from_int(2));
        m.insert("bucket".into(), "b".into());
        let o = opts(&m).unwrap();
        assert_eq!(o.r, Some(Consistency::All));
        assert_eq!(o.w, Some(Consistency::Count(2)));
        m.insert("nope".into(), Dynamic::UNIT);
        assert!(opts(&m).is_err());
        for p in ["lww", "siblings", "pncounter", "orset", "script:max"] {
            assert_eq!(policy_name(&policy_of(p).unwrap()), p);
        }
        assert!(policy_of("script:").is_err());
    }
}
