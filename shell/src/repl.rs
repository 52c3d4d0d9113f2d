//! The interactive prompt: rustyline with completion of the API's
//! functions, rhai's functions and keywords, the variables and functions
//! defined so far, and after a `.` the methods (every function the engine
//! knows), the fields of the API's results and, after a variable holding
//! a map, that map's keys; multi-line input while rhai says the input is
//! unfinished; a history file.
//!
//! Ctrl-C cancels the line being typed, Ctrl-D exits. An error prints the
//! input's line with a caret, and the prompt comes back.
//!
//! Ctrl-C while an input runs: the terminal is then out of raw mode, so
//! Ctrl-C is a SIGINT. A handler sets the shell's interrupt flag, which the
//! engine's progress hook and the long-running functions (`sleep`, waits,
//! `workload`) check: the input stops with `interrupted (Ctrl-C)` and the
//! prompt comes back. The flag is cleared before each input. A second
//! Ctrl-C before the first one is noticed (a call stuck in a request) ends
//! the shell, as SIGINT does by default. At the prompt rustyline reads
//! Ctrl-C as a key, so no signal is involved there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper, Highlighter, Hinter};

use crate::{api, display, is_incomplete, new_engine, Shell};

/// rhai keywords offered by completion.
const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "while", "loop", "for", "in", "do", "until", "break",
    "continue", "return", "throw", "try", "catch", "switch", "true", "false", "print", "debug",
    "type_of", "Fn",
];

/// Offered after a `.`: the fields of the API's results (the methods come
/// from the engine).
const MEMBERS: &[&str] = &[
    "value",
    "siblings",
    "context",
    "receipt",
    "found",
    "policy_error",
    "asked",
    "answered",
    "fallbacks",
    "repaired",
    "resolved_by",
    "node",
    "owner",
    "throughput",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "lost_keys",
    "errors",
    "blocked",
    "dropped",
    "delayed",
];

/// Where the history is kept: `$RINGKV_SHELL_HISTORY`, else
/// `<data dir>/ringkv/shell_history`.
pub fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGKV_SHELL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    dirs::data_dir().map(|d| d.join("ringkv").join("shell_history"))
}

/// Completion and validation for the prompt.
#[derive(Helper, Highlighter, Hinter)]
pub struct ShellHelper {
    /// Variables and functions defined so far.
    names: Arc<Mutex<Vec<String>>>,
    /// The keys of each variable that holds a map.
    fields: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Every function the engine knows.
    functions: Vec<String>,
    parser: rhai::Engine,
}

impl ShellHelper {
    /// What completes `word`; `receiver` is `Some(name)` after `name.`
    /// (or `Some("")` after a `.` that follows no name).
    fn candidates(&self, word: &str, receiver: Option<&str>) -> Vec<String> {
        let mut all: Vec<String> = match receiver {
            Some(var) => {
                let fields = self.fields.lock().unwrap_or_else(|e| e.into_inner());
                match fields.get(var) {
                    // A map variable: its keys, and the methods.
                    Some(keys) => keys.iter().chain(&self.functions).cloned().collect(),
                    None => MEMBERS
                        .iter()
                        .map(|s| s.to_string())
                        .chain(self.functions.iter().cloned())
                        .collect(),
                }
            }
            None => {
                let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
                crate::help::ENTRIES
                    .iter()
                    .map(|e| e.name.to_string())
                    .chain(KEYWORDS.iter().map(|s| s.to_string()))
                    .chain(self.functions.iter().cloned())
                    .chain(names)
                    .collect()
            }
        };
        all.retain(|c| c.starts_with(word));
        all.sort();
        all.dedup();
        all
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        let receiver = before[..start].strip_suffix('.').map(|head| {
            let from = head
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            &head[from..]
        });
        let pairs = self
            .candidates(word, receiver)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        if is_incomplete(&self.parser, ctx.input()) {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

/// Runs the prompt until Ctrl-D. Returns the process's exit status.
pub fn run(shell: &mut Shell) -> i32 {
    let names = Arc::new(Mutex::new(shell.names()));
    let fields = Arc::new(Mutex::new(shell.map_fields()));
    let helper = ShellHelper {
        names: Arc::clone(&names),
        fields: Arc::clone(&fields),
        functions: shell.function_names(),
        parser: new_engine(),
    };
    let mut editor: Editor<ShellHelper, rustyline::history::DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return 2;
        }
    };
    editor.set_helper(Some(helper));
    let history = history_path();
    if let Some(p) = &history {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing file is the first run.
        let _ = editor.load_history(p);
    }
    let interrupt = shell.interrupt_flag();
    // The order matters: the conditional default sees the flag before the
    // second handler sets it, so only a Ctrl-C arriving while the flag is
    // still set ends the process.
    let handlers = signal_hook::flag::register_conditional_default(
        signal_hook::consts::SIGINT,
        Arc::clone(&interrupt),
    )
    .and_then(|_| signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupt)));
    if let Err(e) = handlers {
        eprintln!("warning: Ctrl-C will end the shell rather than the running input: {e}");
    }
    println!("ringkv-shell: help() lists the API; Ctrl-C stops a running input; Ctrl-D exits.");
    loop {
        match editor.readline("ringkv> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                if let Some(p) = &history {
                    if let Err(e) = editor.save_history(p) {
                        eprintln!("warning: cannot save history to {}: {e}", p.display());
                    }
                }
                interrupt.store(false, Ordering::Relaxed);
                match shell.eval(&line) {
                    Ok(v) => {
                        if let Some(s) = display(&v) {
                            println!("{s}");
                        }
                    }
                    Err(e) if e.is_interrupt() => eprintln!("{}", api::INTERRUPTED),
                    Err(e) => eprintln!("{}", e.render(&line, "input")),
                }
                interrupt.store(false, Ordering::Relaxed);
                *names.lock().unwrap_or_else(|e| e.into_inner()) = shell.names();
                *fields.lock().unwrap_or_else(|e| e.into_inner()) = shell.map_fields();
            }
            Err(ReadlineError::Interrupted) => {
                println!("^C");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return 2;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(shell: &Shell) -> ShellHelper {
        ShellHelper {
            names: Arc::new(Mutex::new(shell.names())),
            fields: Arc::new(Mutex::new(shell.map_fields())),
            functions: shell.function_names(),
            parser: new_engine(),
        }
    }

    fn complete(h: &ShellHelper, line: &str) -> (usize, Vec<String>) {
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = h.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn completion_offers_api_functions_methods_variables_and_map_keys() {
        let mut shell = Shell::new(false);
        let _ = shell
            .eval("let my_counter = 1; let rec = #{ zebra: 1, zone: 2 }; fn my_fn() { 1 }")
            .unwrap();
        let h = helper(&shell);
        assert_eq!(complete(&h, "wait_h"), (0, vec!["wait_hints".to_string()]));
        assert_eq!(complete(&h, "x + my_c").1, vec!["my_counter".to_string()]);
        assert_eq!(complete(&h, "my_f").1, vec!["my_fn".to_string()]);
        assert_eq!(complete(&h, "parse_in").1, vec!["parse_int".to_string()]);
        // Methods of rhai's library after a dot, on any value.
        assert_eq!(complete(&h, "[1, 2].filt").1, vec!["filter".to_string()]);
        // The API's result fields and properties.
        assert!(complete(&h, "r.sib").1.contains(&"siblings".to_string()));
        assert!(complete(&h, "t.ro").1.contains(&"rows".to_string()));
        // A map variable's keys, beside the methods.
        let (start, keys) = complete(&h, "rec.z");
        assert_eq!(start, 4);
        assert!(keys.contains(&"zebra".to_string()) && keys.contains(&"zone".to_string()));
        assert!(!complete(&h, "other.z").1.contains(&"zebra".to_string()));
        assert_eq!(complete(&h, "rec.zeb").1, vec!["zebra".to_string()]);
    }
}
