//! The REPL on a pseudo-terminal, as a person uses it: completion of
//! variables, API functions, map keys and methods, multi-line input, an error with its caret
//! after which the prompt goes on, Ctrl-C cancelling a line, Ctrl-D
//! exiting, and the history file read back by the next session; Ctrl-C
//! stopping a running `sleep`, loop or `workload` and the prompt coming
//! back.

use std::process::Command;

use rexpect::session::{spawn_command, PtySession};

/// Generous: the machine may be busy; nothing here measures speed.
const TIMEOUT_MS: u64 = 60_000;

fn session(history: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv-shell"));
    cmd.env("RINGKV_SHELL_HISTORY", history)
        .env("TERM", "xterm");
    let mut p = spawn_command(cmd, Some(TIMEOUT_MS)).expect("the shell starts on a pty");
    p.exp_string("Ctrl-D exits").expect("the banner");
    p
}

/// Waits for the prompt: rustyline may discard what is typed before it
/// puts the terminal in raw mode, as a person would not type before it.
fn prompt(p: &mut PtySession) {
    p.exp_string("ringkv> ").expect("the prompt");
}

#[test]
fn the_repl_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut p = session(&history);

    // Completion of a variable defined earlier.
    prompt(&mut p);
    p.send_line("let my_long_variable = 1230;").unwrap();
    prompt(&mut p);
    p.send("my_long_v\t + 4\r").unwrap();
    p.flush().unwrap();
    p.exp_string("1234")
        .expect("the completed variable evaluates");

    // Completion of an API function.
    prompt(&mut p);
    p.send("help(\"wait_h\t\")\r").unwrap();
    p.flush().unwrap();
    p.exp_string("Waits until no running node holds hints")
        .expect("help of the completed name");

    // Completion of a map variable's key, and of a method.
    prompt(&mut p);
    p.send_line("let rec = #{ zebra_count: 7000 };").unwrap();
    prompt(&mut p);
    p.send("rec.zebra_c\t + 5\r").unwrap();
    p.flush().unwrap();
    p.exp_string("7005").expect("the completed key evaluates");
    prompt(&mut p);
    p.send("[1, 2, 3].filt\t(|x| x > 1).len() * 111\r").unwrap();
    p.flush().unwrap();
    p.exp_string("222").expect("the completed method runs");

    // Multi-line input: the function is unfinished until its brace closes.
    prompt(&mut p);
    p.send_line("fn add(a, b) {").unwrap();
    p.send_line("  a + b").unwrap();
    p.send_line("}").unwrap();
    prompt(&mut p);
    p.send_line("add(4000, 321)").unwrap();
    p.exp_string("4321").expect("the multi-line function");

    // An error shows the line and a caret, and the prompt goes on.
    prompt(&mut p);
    p.send_line("let z = 1 + nope_var;").unwrap();
    p.exp_string("nope_var").unwrap();
    p.exp_string("1 | let z = 1 + nope_var;")
        .expect("the source line");
    p.exp_string("^").expect("the caret");
    prompt(&mut p);
    p.send_line("print(\"still \" + \"here\")").unwrap();
    p.exp_string("still here")
        .expect("the REPL continues after an error");

    // Ctrl-C cancels the line being typed.
    prompt(&mut p);
    p.send("let abandoned = 5").unwrap();
    p.flush().unwrap();
    p.send_control('c').unwrap();
    p.exp_string("^C").unwrap();
    prompt(&mut p);
    p.send_line("is_def_var(\"abandoned\")").unwrap();
    p.exp_string("false")
        .expect("the cancelled line did not run");

    prompt(&mut p);
    p.send_line("print(\"from history \" + 6 * 7)").unwrap();
    p.exp_string("from history 42").unwrap();
    // Ctrl-D exits.
    p.send_control('d').unwrap();
    p.exp_eof().expect("Ctrl-D ends the shell");

    let saved = std::fs::read_to_string(&history).expect("the history file is written");
    assert!(saved.contains("let my_long_variable = 1230;"), "{saved}");
    assert!(!saved.contains("let abandoned"), "{saved}");

    // The next session recalls the last line with the up arrow.
    let mut p = session(&history);
    prompt(&mut p);
    p.send("\x1b[A").unwrap();
    p.flush().unwrap();
    p.send("\r").unwrap();
    p.flush().unwrap();
    p.exp_string("from history 42")
        .expect("the recalled line runs");
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn ctrl_c_stops_the_running_input_not_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = session(&dir.path().join("history"));

    // Each input announces itself before running long, so that Ctrl-C is
    // sent while it runs, not while the line editor still reads. The
    // announcement is built from two strings, so that the terminal's echo
    // of the input line cannot match it: a match on the echo sent Ctrl-C
    // while the line editor still had the terminal in raw mode (on a busy
    // machine), where it is a keystroke, not a signal.
    let interrupt = |p: &mut PtySession, input: &str, started: &str| {
        assert!(
            !input.contains(started),
            "the echo of {input:?} would match"
        );
        prompt(p);
        p.send_line(input).unwrap();
        p.exp_string(started).expect("the input started");
        p.send_control('c').unwrap();
        p.exp_string("interrupted (Ctrl-C)")
            .expect("Ctrl-C stops the input");
    };
    interrupt(
        &mut p,
        "print(\"sleep\" + \"ing\"); sleep(600000)",
        "sleeping",
    );
    interrupt(&mut p, "print(\"loop\" + \"ing\"); loop { }", "looping");
    interrupt(
        &mut p,
        "cluster(3); print(\"work\" + \"ing\"); workload(#{ ops: 10000000, keys: 50 })",
        "working",
    );

    // The shell, its cluster and its variables are still there.
    prompt(&mut p);
    p.send_line("print(\"after: \" + live_nodes().len() + \" nodes\")")
        .unwrap();
    p.exp_string("after: 3 nodes")
        .expect("the prompt works after an interrupt");
    prompt(&mut p);
    p.send_line("put(\"k\", \"stored \" + 6 * 7); get(\"k\").value")
        .unwrap();
    p.exp_string("stored 42")
        .expect("the cluster serves after an interrupted workload");
    p.send_control('d').unwrap();
    p.exp_eof().expect("Ctrl-D ends the shell");
}
