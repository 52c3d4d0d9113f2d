//! The log callback of embedded clusters (`ringkv_cluster_options_set_log`):
//! a process-wide `tracing` subscriber, installed by the first cluster
//! made with a callback, forwards the events of every node (and of any
//! other `tracing` user in the process) to the callbacks of the live
//! clusters that asked for them.
//!
//! An event does not tell which cluster it came from (node ids repeat
//! across clusters), so each registered callback receives every event at
//! or below its level, from all clusters of the process.
//!
//! Not here: the options object (`cluster_options.rs`).

#![allow(non_camel_case_types)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CString};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::result::ringkv_result;
use crate::store::{Failure, Outcome};

/// Log level: errors.
pub const RINGKV_LOG_ERROR: u32 = 1;
/// Log level: warnings.
pub const RINGKV_LOG_WARN: u32 = 2;
/// Log level: information (membership changes, transfers done).
pub const RINGKV_LOG_INFO: u32 = 3;
/// Log level: debugging detail.
pub const RINGKV_LOG_DEBUG: u32 = 4;
/// Log level: tracing detail (much).
pub const RINGKV_LOG_TRACE: u32 = 5;

/// A log callback: `level` (`RINGKV_LOG_*`), `target` (the Rust module
/// that logged, e.g. `ringkv::node::failure_detector`) and `message` (the
/// text, then the event's fields as ` key=value`), both NUL-terminated
/// and valid only during the call.
pub type ringkv_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: u32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// A callback and what it wants.
#[derive(Clone, Copy, Debug)]
pub struct LogSink {
    func: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char),
    user_data: usize,
    max_level: u32,
}

impl LogSink {
    /// A sink for `func` (not NULL) at levels up to `max_level` (1 to 5).
    pub fn new(
        op: &str,
        func: ringkv_log_fn,
        user_data: *mut c_void,
        max_level: u32,
    ) -> Outcome<Option<LogSink>> {
        if !(RINGKV_LOG_ERROR..=RINGKV_LOG_TRACE).contains(&max_level) {
            return Err(Failure::invalid(format!(
                "{op}: max_level must be RINGKV_LOG_ERROR (1) to RINGKV_LOG_TRACE (5), got {max_level}"
            )));
        }
        Ok(func.map(|func| LogSink {
            func,
            user_data: user_data as usize,
            max_level,
        }))
    }
}

/// The registered callbacks, by registration. Events are delivered under
/// the read lock; unregistering takes the write lock, so once it returns
/// no call is running or will start.
static SINKS: RwLock<BTreeMap<u64, LogSink>> = RwLock::new(BTreeMap::new());
/// The highest level any registered callback wants (0: none).
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Whether this library's subscriber is the process's (set once).
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => RINGKV_LOG_ERROR,
        Level::WARN => RINGKV_LOG_WARN,
        Level::INFO => RINGKV_LOG_INFO,
        Level::DEBUG => RINGKV_LOG_DEBUG,
        _ => RINGKV_LOG_TRACE,
    }
}

fn recompute_max(sinks: &BTreeMap<u64, LogSink>) {
    let max = sinks.values().map(|s| s.max_level).max().unwrap_or(0);
    MAX_LEVEL.store(max, Ordering::SeqCst);
}

/// A callback's registration; dropping it unregisters the callback.
#[derive(Debug)]
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sinks = SINKS.write().unwrap_or_else(|e| e.into_inner());
        sinks.remove(&self.id);
        recompute_max(&sinks);
    }
}

/// Installs the forwarding subscriber if no subscriber is set yet, and
/// registers `sink`. Fails (`RINGKV_INVALID_ARGUMENT`) when the process
/// already has a global subscriber that is not this library's.
pub fn register(op: &str, sink: LogSink) -> Outcome<Registration> {
    let ours = *INSTALLED.get_or_init(|| {
        if tracing::dispatcher::has_been_set() {
            return false;
        }
        let subscriber = tracing_subscriber::registry().with(Forward);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    });
    if !ours {
        return Err(Failure::new(
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            format!("{op}: the process already has a tracing subscriber"),
        ));
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut sinks = SINKS.write().unwrap_or_else(|e| e.into_inner());
    sinks.insert(id, sink);
    recompute_max(&sinks);
    // Callsites cached "never" before a callback wanted them are asked
    // again.
    tracing::callsite::rebuild_interest_cache();
    Ok(Registration { id })
}

/// The layer that hands events to the registered callbacks.
struct Forward;

/// Collects an event's message and fields as text.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// `s` as a C string, NULs replaced.
fn c_text(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let bytes: Vec<u8> = e
            .into_vec()
            .into_iter()
            .map(|b| if b == 0 { b' ' } else { b })
            .collect();
        CString::new(bytes).unwrap_or_default()
    })
}

impl<S: Subscriber> Layer<S> for Forward {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // Asked per event (`enabled`), as callbacks come and go.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        number(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Nothing here may unwind into the node's thread, let alone into
        // C.
        let _ = catch_unwind(AssertUnwindSafe(|| deliver(event)));
    }
}

fn deliver(event: &Event<'_>) {
    let level = number(event.metadata().level());
    if level > MAX_LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let mut text = Text::default();
    event.record(&mut text);
    text.message.push_str(&text.fields);
    let message = c_text(text.message);
    let target = c_text(event.metadata().target().to_string());
    let sinks = SINKS.read().unwrap_or_else(|e| e.into_inner());
    for sink in sinks.values().filter(|s| level <= s.max_level) {
        // SAFETY: the callback's contract (ringkv_cluster_options_set_log):
        // it takes these arguments, from any thread, while registered.
        unsafe {
            (sink.func)(
                sink.user_data as *mut c_void,
                level,
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }
}
