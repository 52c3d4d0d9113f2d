//! Conflict policies written in rhai: a function over a key's siblings that
//! returns the one value a read gives, run in a sandbox on the nodes.
//!
//! `policy("name", |siblings| ...)` registers a [`RhaiPolicy`] in the
//! shell's [`PolicyTable`]; a bucket whose policy is `"script:name"` then
//! resolves concurrent values with it on every read. The table is each
//! node's `ResolverSource`, so a policy defined after the cluster started
//! is found, and redefining one takes effect at the next read.
//!
//! # The sandbox
//!
//! A policy runs on a node's thread, so it must neither hang nor take the
//! node down. It runs on an engine of its own with: at most
//! [`MAX_OPERATIONS`] operations per call (an endless loop stops there)
//! and at most [`MAX_POLICY_TIME`] of wall-clock time per call (checked
//! every [`TIME_CHECK_OPERATIONS`] operations, so no loop outlives it
//! however slow its operations are), [`MAX_CALL_LEVELS`] nested calls,
//! strings up to [`MAX_STRING_BYTES`], arrays and maps up to
//! [`MAX_COLLECTION`] items, no `eval`, no modules (so no `import` of
//! files), and `print`/`debug` discarded.
//!
//! Its functions are rhai's standard library without the two packages
//! that can block or look at the clock: the language core (`sleep`, which
//! blocks the thread for seconds whatever the operation limit says, and
//! `exit`, `take`, tags, `parse_json`, reflection) and time (`timestamp`,
//! `elapsed`, which only serve to wait or to depend on when a read runs,
//! and a policy must be deterministic). A policy calling them fails at
//! once ("function not found"). None of the shell's own functions exist
//! there either: a policy cannot start, stop or write to a cluster, nor
//! wait (the shell's `sleep` included).
//!
//! # Failures
//!
//! A policy that throws, exceeds a limit or returns something that is not
//! a value does not fail the read: the node returns the siblings as the
//! `siblings` policy would (see `ringkv::roles::client_ops`). The
//! failure is recorded here; `get` reports it in its result
//! (`policy_error`) and `policy_failures()` lists them.
//!
//! # On a connection
//!
//! A node reached by `connect` has no access to this table: it returns the
//! siblings of a `script:` bucket unresolved, and `get` runs the policy
//! here ([`RhaiPolicy::resolve_values`]) in the same sandbox, recording a
//! failure the same way.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicBlobPackage, BasicFnPackage, BasicIteratorPackage,
    BasicMapPackage, BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage,
    MoreStringPackage, Package,
};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, AST};
use ringkv::version::{Payload, Resolver, ResolverSource, Sibling};

/// Operations a policy may run per call.
pub const MAX_OPERATIONS: u64 = 200_000;
/// Nested function calls a policy may make.
pub const MAX_CALL_LEVELS: usize = 24;
/// Longest string a policy may build, in bytes.
pub const MAX_STRING_BYTES: usize = 1 << 20;
/// Most items in an array or map a policy builds.
pub const MAX_COLLECTION: usize = 100_000;
/// Failures kept for `policy_failures()`.
pub const FAILURES_KEPT: usize = 100;
/// Wall-clock time a policy may run per call: 250 ms. A read waits for
/// its policy, so this bounds what one costs a read (whose default
/// timeout is 5 s) even when its operations are slow ones; an honest
/// policy over a few siblings takes microseconds, and [`MAX_OPERATIONS`]
/// of the cheapest operations take a few tens of milliseconds.
pub const MAX_POLICY_TIME: Duration = Duration::from_millis(250);
/// How often, in operations, a running policy checks its clock: every 64
/// (a clock read is a few tens of ns, an operation about as much).
pub const TIME_CHECK_OPERATIONS: u64 = 64;

thread_local! {
    /// When the policy running on this thread started, if one is.
    static CALL_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The engine policies run on.
pub fn sandbox_engine() -> Engine {
    sandbox_engine_with(MAX_OPERATIONS, MAX_POLICY_TIME)
}

/// The engine policies run on, with other bounds on operations (0: none)
/// and time per call: for tests.
pub fn sandbox_engine_with(max_operations: u64, max_time: Duration) -> Engine {
    // Raw: no functions, no module resolver, print and debug go nowhere.
    let mut engine = Engine::new_raw();
    // rhai's standard library without `LanguageCorePackage` (`sleep`) and
    // `BasicTimePackage` (`timestamp`): see the module docs.
    for module in [
        ArithmeticPackage::new().as_shared_module(),
        BasicStringPackage::new().as_shared_module(),
        BasicIteratorPackage::new().as_shared_module(),
        BasicFnPackage::new().as_shared_module(),
        BitFieldPackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicMathPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicBlobPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
    ] {
        engine.register_global_module(module);
    }
    engine.on_progress(move |operations| {
        if operations % TIME_CHECK_OPERATIONS != 0 {
            return None;
        }
        let started = CALL_STARTED.with(Cell::get)?;
        (started.elapsed() >= max_time).then(|| {
            Dynamic::from(format!(
                "the policy ran for more than its {} ms",
                max_time.as_millis()
            ))
        })
    });
    engine.set_max_operations(max_operations);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(MAX_STRING_BYTES);
    engine.set_max_array_size(MAX_COLLECTION);
    engine.set_max_map_size(MAX_COLLECTION);
    engine.disable_symbol("eval");
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine
}

/// One failure of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFailure {
    /// The policy's name.
    pub policy: String,
    /// What went wrong.
    pub error: String,
}

/// The shell's policies by name, and the failures they had.
#[derive(Default)]
pub struct PolicyTable {
    policies: RwLock<HashMap<String, Arc<RhaiPolicy>>>,
    failures: Mutex<Vec<PolicyFailure>>,
    failure_count: AtomicU64,
}

impl PolicyTable {
    /// Adds or replaces policy `name`: `function` called with the siblings,
    /// found (with any function it calls) in `ast`.
    pub fn define(self: &Arc<Self>, name: &str, function: FnPtr, ast: AST) {
        let policy = Arc::new(RhaiPolicy {
            name: name.to_string(),
            engine: sandbox_engine(),
            function,
            ast,
            table: Arc::downgrade(self),
        });
        let mut map = self.policies.write().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_string(), policy);
    }

    /// The names defined, sorted.
    pub fn names(&self) -> Vec<String> {
        let map = self.policies.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    /// Failures so far (all of them, including those no longer kept).
    pub fn failure_count(&self) -> u64 {
        self.failure_count.load(Ordering::Acquire)
    }

    /// The last [`FAILURES_KEPT`] failures, oldest first.
    pub fn failures(&self) -> Vec<PolicyFailure> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a failure: logged, kept for `policy_failures()`, counted.
    pub fn record(&self, failure: PolicyFailure) {
        tracing::warn!(policy = %failure.policy, error = %failure.error, "policy failed; the siblings are kept");
        let mut kept = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == FAILURES_KEPT {
            kept.remove(0);
        }
        kept.push(failure);
        self.failure_count.fetch_add(1, Ordering::AcqRel);
    }

    /// The policy called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<RhaiPolicy>> {
        let map = self.policies.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }
}

/// The nodes' view of the table.
pub struct TableSource(pub Arc<PolicyTable>);

impl ResolverSource for TableSource {
    fn resolver(&self, name: &str) -> Option<Arc<dyn Resolver>> {
        self.0.get(name).map(|p| p as Arc<dyn Resolver>)
    }
}

/// A rhai function used as a conflict resolver.
pub struct RhaiPolicy {
    name: String,
    engine: Engine,
    function: FnPtr,
    ast: AST,
    table: std::sync::Weak<PolicyTable>,
}

impl RhaiPolicy {
    /// Calls the function on `siblings`; what it returns, as a payload.
    pub fn run(&self, siblings: &[Sibling]) -> Result<Payload, String> {
        self.run_values(
            siblings
                .iter()
                .map(sibling_map)
                .map(Dynamic::from)
                .collect(),
        )
    }

    /// Calls the function on siblings already in their rhai form (as
    /// `get` shows them: `#{ value, timestamp_ms, node }` each).
    pub fn run_values(&self, siblings: Array) -> Result<Payload, String> {
        // The clock of this call, for the engine's progress callback; the
        // previous one is put back after (a policy run inside another
        // keeps the outer one's clock for the outer one).
        let outer = CALL_STARTED.with(|c| c.replace(Some(Instant::now())));
        let called = self.function.call(&self.engine, &self.ast, (siblings,));
        CALL_STARTED.with(|c| c.set(outer));
        let out: Dynamic = called.map_err(|e| match e.unwrap_inner() {
            // The reason the progress callback gave.
            EvalAltResult::ErrorTerminated(why, _) => why.to_string(),
            _ => e.to_string(),
        })?;
        match crate::api::value_bytes(&out) {
            Ok(Some(bytes)) => Ok(Payload::Value(bytes)),
            Ok(None) => Ok(Payload::Tombstone),
            Err(e) => Err(format!("the policy returned {e}")),
        }
    }

    /// [`RhaiPolicy::run_values`] as a node runs a policy: a panic is a
    /// failure, and a failure is recorded in the table. The shell uses it
    /// for siblings a remote node returned.
    pub fn resolve_values(&self, siblings: Array) -> Result<Payload, String> {
        self.guarded(|| self.run_values(siblings))
    }

    fn guarded(&self, call: impl FnOnce() -> Result<Payload, String>) -> Result<Payload, String> {
        // A panic inside rhai must not take the node's coordinator down.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            .unwrap_or_else(|_| Err("the policy panicked".to_string()));
        if let Err(error) = &ran {
            if let Some(table) = self.table.upgrade() {
                table.record(PolicyFailure {
                    policy: self.name.clone(),
                    error: error.clone(),
                });
            }
        }
        ran
    }
}

impl Resolver for RhaiPolicy {
    fn resolve(&self, siblings: &[Sibling]) -> ringkv::Result<Payload> {
        self.guarded(|| self.run(siblings))
            .map_err(|error| ringkv::Error::InvalidInput(format!("policy {}: {error}", self.name)))
    }
}

/// A sibling as a policy (and `get`) sees it: `#{ value, timestamp_ms,
/// node }`, the value `()` for a delete.
pub fn sibling_map(s: &Sibling) -> Map {
    let mut m = Map::new();
    let value = match &s.payload {
        Payload::Value(v) => crate::api::bytes_value(v),
        Payload::Tombstone => Dynamic::UNIT,
    };
    m.insert("value".into(), value);
    m.insert(
        "timestamp_ms".into(),
        Dynamic::from_int(s.timestamp.physical_ms as i64),
    );
    m.insert("node".into(), Dynamic::from_int(s.dot.node.0 as i64));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv::version::CausalContext;
    use ringkv::{ConflictPolicy, NodeId, Object, Timestamp};

    fn two_siblings(a: &str, b: &str) -> Vec<Sibling> {
        let mut obj = Object::new();
        for (node, v) in [(1, a), (2, b)] {
            ConflictPolicy::Siblings
                .put(
                    &mut obj,
                    NodeId(node),
                    &CausalContext::empty(),
                    Payload::Value(v.as_bytes().to_vec()),
                    Timestamp::from_ms(node * 10),
                    10,
                )
                .unwrap();
        }
        obj.siblings().to_vec()
    }

    fn table_with(src: &str) -> (Arc<PolicyTable>, Arc<RhaiPolicy>) {
        let engine = Engine::new();
        let ast = engine.compile(src).unwrap();
        let table = Arc::new(PolicyTable::default());
        table.define("p", FnPtr::new("p").unwrap(), ast);
        let policy = table.get("p").unwrap();
        (table, policy)
    }

    #[test]
    fn a_policy_merges_siblings() {
        let (table, p) = table_with(
            "fn p(s) { let best = 0; for x in s { let v = parse_int(x.value); if v > best { best = v } } best }",
        );
        let out = p.resolve(&two_siblings("7", "12")).unwrap();
        assert_eq!(out, Payload::Value(b"12".to_vec()));
        assert_eq!(table.failure_count(), 0);
    }

    /// `policy` on another engine.
    fn on_engine(policy: &RhaiPolicy, table: &Arc<PolicyTable>, engine: Engine) -> RhaiPolicy {
        RhaiPolicy {
            name: policy.name.clone(),
            engine,
            function: policy.function.clone(),
            ast: policy.ast.clone(),
            table: Arc::downgrade(table),
        }
    }

    #[test]
    fn an_endless_loop_stops_at_the_operation_limit_and_is_recorded() {
        let (table, p) = table_with("fn p(s) { let i = 0; loop { i += 1; } }");
        // No time limit to speak of, so that a slow machine cannot make
        // the time limit come first.
        let p = on_engine(
            &p,
            &table,
            sandbox_engine_with(MAX_OPERATIONS, Duration::from_secs(600)),
        );
        let err = p.resolve(&two_siblings("a", "b")).unwrap_err();
        assert!(err.to_string().contains("operations"), "{err}");
        assert_eq!(table.failure_count(), 1);
        assert_eq!(table.failures()[0].policy, "p");
    }

    /// Issue [9] C13: rhai's `sleep` (in seconds) was there, outside the
    /// operation limit: `sleep(3000)` held a read for over 60 s.
    #[test]
    fn blocking_and_clock_functions_are_not_there() {
        for body in [
            "sleep(3000); 1",
            "sleep(2.5); 1",
            "let t = timestamp(); while t.elapsed < 100.0 {} 1",
            "exit(1)",
        ] {
            let (table, p) = table_with(&format!("fn p(s) {{ {body} }}"));
            let started = Instant::now();
            let err = p.resolve(&two_siblings("a", "b")).unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{body}: took {:?}",
                started.elapsed()
            );
            assert!(err.to_string().contains("not found"), "{body}: {err}");
            assert_eq!(table.failure_count(), 1);
        }
        // What policies use is still there.
        let (_, p) = table_with(
            r#"fn p(s) { let v = []; for x in s { v += x.value.split(",") } v.sort(); v.reduce(|a, x| if a == () { x } else { a + "," + x }) }"#,
        );
        assert_eq!(
            p.resolve(&two_siblings("b,c", "a")).unwrap(),
            Payload::Value(b"a,b,c".to_vec())
        );
    }

    /// Issue [9] C13: a policy's wall-clock time is bounded too, whatever
    /// its operations cost: here with no operation limit at all.
    #[test]
    fn an_endless_loop_stops_at_the_time_limit() {
        let (table, p) = table_with("fn p(s) { let i = 0; loop { i += 1; } }");
        let slow = on_engine(
            &p,
            &table,
            sandbox_engine_with(0, Duration::from_millis(100)),
        );
        let started = Instant::now();
        let err = slow.resolve(&two_siblings("a", "b")).unwrap_err();
        let took = started.elapsed();
        assert!(err.to_string().contains("100 ms"), "{err}");
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // The default engine has both bounds (the operation limit comes
        // first for a cheap loop on a machine not too busy).
        let started = Instant::now();
        let err = p.resolve(&two_siblings("a", "b")).unwrap_err();
        assert!(
            err.to_string().contains("operations")
                || err
                    .to_string()
                    .contains(&format!("{} ms", MAX_POLICY_TIME.as_millis())),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(table.failure_count(), 2);
    }

    #[test]
    fn a_huge_string_stops_at_the_size_limit() {
        let (table, p) = table_with(r#"fn p(s) { let x = "0123456789abcdef"; loop { x += x; } }"#);
        let err = p.resolve(&two_siblings("a", "b")).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("string"), "{err}");
        assert_eq!(table.failure_count(), 1);
    }

    #[test]
    fn a_thrown_error_and_a_bad_return_value_are_failures() {
        let (table, p) = table_with(r#"fn p(s) { throw "no merge for " + s.len() }"#);
        let err = p.resolve(&two_siblings("a", "b")).unwrap_err();
        assert!(err.to_string().contains("no merge for 2"), "{err}");
        let (_, q) = table_with("fn p(s) { [1, 2] }");
        assert!(q.resolve(&two_siblings("a", "b")).is_err());
        assert_eq!(table.failure_count(), 1);
    }

    #[test]
    fn eval_modules_and_deep_recursion_are_refused() {
        // `eval` is refused when the script is parsed (the shell's engine
        // refuses it too), so no policy can hold it.
        assert!(sandbox_engine()
            .compile(r#"fn p(s) { eval("40 + 2") }"#)
            .is_err());
        assert!(crate::api::shell_engine_for_tests()
            .compile(r#"fn p(s) { eval("40 + 2") }"#)
            .is_err());
        let (_, p) = table_with(r#"fn p(s) { import "x" as x; 1 }"#);
        assert!(p.resolve(&two_siblings("a", "b")).is_err());
        let (_, p) = table_with("fn r(n) { r(n + 1) } fn p(s) { r(0) }");
        assert!(p.resolve(&two_siblings("a", "b")).is_err());
    }

    #[test]
    fn returning_unit_deletes() {
        let (_, p) = table_with("fn p(s) { () }");
        assert_eq!(
            p.resolve(&two_siblings("a", "b")).unwrap(),
            Payload::Tombstone
        );
    }
}
