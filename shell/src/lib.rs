//! ringkv-shell: a rhai REPL and script runner that starts, drives and
//! breaks ringkv clusters.
//!
//! [`Shell`] owns one rhai engine with the cluster API registered
//! ([`api`]), the scope that persists between inputs, and the functions
//! defined so far. `main.rs` feeds it a whole script (a file, `-e`, or
//! stdin that is not a terminal) or lines from the REPL ([`repl`]).
//! Errors come back as [`ShellError`], which prints the source line with a
//! caret under the error's position.
//!
//! Layout: [`runtime`] (the actix thread the nodes live on) and
//! [`cluster`] (embedded nodes and faults), both from `ringkv::embedded`; [`backend`] (the one trait over an embedded
//! cluster, a simulation and a remote connection, and the [`backend::Nodes`]
//! trait that faults and per-node views go through), [`sim`] (`sim(n, seed)`:
//! the deterministic cluster simulator on virtual time), [`policy`]
//! (sandboxed rhai conflict policies), [`workload`], [`plot`] (charts drawn
//! to SVG) and [`plot_api`] (the `plot_*` functions), [`gossip`]
//! (`gossip_rounds`), [`table`], [`help`].
//!
//! Not here: any protocol logic; the shell only calls `Node::execute`,
//! `ClusterSim::execute` or the client with the client protocol's ops.

#![warn(missing_docs)]

pub mod api;
pub use ringkv::embedded::{cluster, runtime};
pub mod backend;
pub mod gossip;
pub mod help;
pub mod plot;
pub mod plot_api;
pub mod policy;
pub mod repl;
pub mod sim;
pub mod table;
pub mod workload;

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Position, Scope, AST};

/// The rhai engine the shell parses and runs with, before the API is
/// registered: `eval` is refused (a policy must not hold it), and nesting
/// is bounded so that a deeply nested input fails cleanly.
pub fn new_engine() -> Engine {
    let mut engine = Engine::new();
    engine.disable_symbol("eval");
    engine.set_max_expr_depths(256, 128);
    engine.set_max_call_levels(256);
    engine
}

/// An error from an input, with what is needed to show where it is.
#[derive(Debug, Clone)]
pub struct ShellError {
    /// The message, without the position.
    pub message: String,
    /// Where in the input (`Position::NONE` when unknown).
    pub position: Position,
    /// When the error happened inside functions of the same input: each
    /// call, outermost first, as (function, where it was called).
    pub calls: Vec<(String, Position)>,
}

impl ShellError {
    fn from_rhai(e: EvalAltResult) -> ShellError {
        ShellError::from_rhai_in(e, &[])
    }

    /// Like `from_rhai`, but an error inside a function defined in this
    /// input (`local_fns`) points at the line in the function, with the
    /// calls that led there; a function from an earlier input has its
    /// lines in that input, so the caret stays at the call.
    fn from_rhai_in(mut e: EvalAltResult, local_fns: &[String]) -> ShellError {
        let mut calls = Vec::new();
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(name, _, inner, pos)
                    if local_fns.contains(&name) && !inner.position().is_none() =>
                {
                    calls.push((name, pos));
                    e = *inner;
                }
                other => {
                    e = other;
                    break;
                }
            }
        }
        let position = e.position();
        e.clear_position();
        let message = match &e {
            EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
            EvalAltResult::ErrorTerminated(..) => api::INTERRUPTED.to_string(),
            other => other.to_string(),
        };
        ShellError {
            message,
            position,
            calls,
        }
    }

    /// Whether the input stopped because it was interrupted (Ctrl-C).
    pub fn is_interrupt(&self) -> bool {
        self.message.contains(api::INTERRUPTED)
    }

    /// The error as it is printed: the message, the place (`name:line:col`)
    /// and the source line with a caret under the column.
    pub fn render(&self, source: &str, name: &str) -> String {
        let mut out = format!("error: {}", self.message);
        if let (Some(line), col) = (self.position.line(), self.position.position()) {
            let col = col.unwrap_or(1);
            out.push_str(&format!("\n --> {name}:{line}:{col}"));
            if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
                let gutter = line.to_string().len();
                let caret = " ".repeat(col.saturating_sub(1));
                out.push_str(&format!(
                    "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {caret}^",
                    "", ""
                ));
            }
        }
        for (function, at) in self.calls.iter().rev() {
            match (at.line(), at.position()) {
                (Some(line), Some(col)) => out.push_str(&format!(
                    "\n  in {function}(), called at {name}:{line}:{col}"
                )),
                _ => out.push_str(&format!("\n  in {function}()")),
            }
        }
        out
    }
}

/// Whether `source` is a prefix of a valid input: it stops where rhai
/// still expects more (an open block, bracket, string or expression).
pub fn is_incomplete(engine: &Engine, source: &str) -> bool {
    match engine.compile(source) {
        Ok(_) => false,
        Err(e) => {
            let end = {
                let lines = source.lines().count().max(1);
                (
                    lines,
                    source.lines().last().map_or(0, |l| l.chars().count()),
                )
            };
            let at_end = match e.1.line() {
                None => true,
                Some(line) => {
                    line > end.0 || (line == end.0 && e.1.position().unwrap_or(0) > end.1)
                }
            };
            match &*e.0 {
                ParseErrorType::UnexpectedEOF => true,
                ParseErrorType::MissingToken(..) | ParseErrorType::MissingSymbol(..) => at_end,
                ParseErrorType::BadInput(rhai::LexError::UnterminatedString) => true,
                _ => false,
            }
        }
    }
}

/// A rhai engine with the cluster API, and what persists between inputs.
pub struct Shell {
    engine: Engine,
    scope: Scope<'static>,
    /// The functions of every input so far; statements are cleared after
    /// each run.
    main: AST,
    ctx: Arc<api::Context>,
}

impl Shell {
    /// A shell; `interactive` draws progress bars.
    pub fn new(interactive: bool) -> Shell {
        let ctx = api::Context::new(interactive);
        let mut engine = new_engine();
        api::register(&mut engine, &ctx);
        // Ends a running script (a loop, say) soon after Ctrl-C: rhai calls
        // this between operations; the check is one relaxed load.
        let interrupt = Arc::clone(&ctx.interrupt);
        engine.on_progress(move |_| {
            interrupt
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| Dynamic::from(api::INTERRUPTED))
        });
        Shell {
            engine,
            scope: Scope::new(),
            main: AST::empty(),
            ctx,
        }
    }

    /// Sets the script's arguments, seen as the array `ARGS`.
    pub fn set_args(&mut self, args: Vec<String>) {
        let args: rhai::Array = args.into_iter().map(Dynamic::from).collect();
        self.scope.set_or_push("ARGS", args);
    }

    /// The flag that stops the running input when set: the REPL's SIGINT
    /// handler sets it, and the REPL clears it before each input.
    pub fn interrupt_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.ctx.interrupt)
    }

    /// The engine, for parsing as the shell does.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Names of the variables and functions defined so far, for completion.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.scope.iter().map(|(n, _, _)| n.to_string()).collect();
        names.extend(self.main.iter_functions().map(|f| f.name.to_string()));
        names.sort();
        names.dedup();
        names
    }

    /// For completion after `name.`: the keys of every variable that holds
    /// a map.
    pub fn map_fields(&self) -> std::collections::HashMap<String, Vec<String>> {
        self.scope
            .iter()
            .filter_map(|(name, _, value)| {
                let map = value.read_lock::<rhai::Map>()?;
                let mut keys: Vec<String> = map.keys().map(|k| k.to_string()).collect();
                keys.sort();
                Some((name.to_string(), keys))
            })
            .collect()
    }

    /// Every function the engine knows (the API's and rhai's standard
    /// library), and the properties of the API's types: what completion
    /// offers besides variables and keywords. Operators and other names
    /// that are not identifiers are left out.
    pub fn function_names(&self) -> Vec<String> {
        let is_ident = |n: &str| {
            n.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        let mut names: Vec<String> = self
            .engine
            .gen_fn_signatures(true)
            .into_iter()
            .filter_map(|sig| {
                let name = sig.split('(').next()?.trim();
                let name = name.strip_prefix("get$").unwrap_or(name);
                is_ident(name).then(|| name.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Compiles and runs `source`, keeping its variables and functions for
    /// later inputs; returns its value.
    pub fn eval(&mut self, source: &str) -> Result<Dynamic, ShellError> {
        let ast = self
            .engine
            .compile_with_scope(&self.scope, source)
            .map_err(|e| ShellError::from_rhai(EvalAltResult::from(e)))?;
        let local_fns: Vec<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        self.main = self.main.merge(&ast);
        *self
            .ctx
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = self.main.clone_functions_only();
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &self.main);
        self.main.clear_statements();
        result.map_err(|e| ShellError::from_rhai_in(*e, &local_fns))
    }

    /// Stops every cluster the shell started.
    pub fn shutdown(&mut self) {
        self.scope.clear();
        self.ctx.shutdown();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a result is shown at the prompt or after `-e`: nothing for `()`,
/// tables and handles through their `to_string`.
pub fn display(value: &Dynamic) -> Option<String> {
    if value.is_unit() {
        return None;
    }
    if let Some(t) = value.read_lock::<table::Table>() {
        return Some(t.to_string().trim_end().to_string());
    }
    if let Some(h) = value.read_lock::<api::Handle>() {
        return Some(h.0.describe());
    }
    if let Some(w) = value.read_lock::<api::WorkloadHandle>() {
        return Some(w.describe());
    }
    if value.is_string() {
        return Some(value.to_string());
    }
    Some(format!("{value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_inputs_are_told_from_wrong_ones() {
        let e = new_engine();
        for open in [
            "fn f() {",
            "let x = [1,",
            "if true {\n print(1);",
            "let s = \"abc",
            "let x = 1 +",
        ] {
            assert!(is_incomplete(&e, open), "{open:?}");
        }
        for done in ["let x = 1;", "fn f() { 1 }", "let x = );", "1 +* 2"] {
            assert!(!is_incomplete(&e, done), "{done:?}");
        }
    }

    #[test]
    fn errors_point_at_their_column() {
        let mut shell = Shell::new(false);
        let src = "let a = 1;\nlet b = a + nope;";
        let err = shell.eval(src).unwrap_err();
        let shown = err.render(src, "t.rhai");
        assert!(shown.contains("nope"), "{shown}");
        assert!(shown.contains("t.rhai:2:13"), "{shown}");
        assert!(
            shown.ends_with("2 | let b = a + nope;\n  |             ^"),
            "{shown}"
        );
    }

    #[test]
    fn an_error_in_a_function_points_into_it_with_its_calls() {
        let mut shell = Shell::new(false);
        let src = "fn inner(x) {\n  x + missing\n}\nfn outer() { inner(1) }\nouter();";
        let shown = shell.eval(src).unwrap_err().render(src, "f.rhai");
        assert!(shown.contains("f.rhai:2:7"), "{shown}");
        assert!(shown.contains("2 |   x + missing"), "{shown}");
        assert!(
            shown.ends_with(
                "  in inner(), called at f.rhai:4:14\n  in outer(), called at f.rhai:5:1"
            ),
            "{shown}"
        );
        // A function from an earlier input: the caret stays at the call.
        let shown = shell
            .eval("inner(2)")
            .unwrap_err()
            .render("inner(2)", "input");
        assert!(shown.contains("input:1:1"), "{shown}");
        assert!(shown.contains("missing"), "{shown}");
    }

    #[test]
    fn variables_and_functions_persist_between_inputs() {
        let mut shell = Shell::new(false);
        let _ = shell.eval("let x = 20; fn twice(v) { v * 2 }").unwrap();
        let v = shell.eval("twice(x) + 2").unwrap();
        assert_eq!(v.as_int().unwrap(), 42);
        assert!(shell.names().contains(&"twice".to_string()));
        assert!(shell
            .eval("throw \"boom\"")
            .unwrap_err()
            .message
            .contains("boom"));
    }
}
