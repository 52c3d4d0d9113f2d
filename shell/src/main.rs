//! `ringkv-shell`: runs a rhai script (`FILE [ARGS]`, `-e EXPR`, or stdin
//! when it is not a terminal), or the interactive prompt.
//!
//! Exit status: 0 on success, 1 when a script fails (its error and position
//! on stderr), 2 when the shell itself cannot start (bad arguments, an
//! unreadable file).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringkv_shell::{display, repl, Shell};

/// A rhai shell for ringkv clusters: start nodes in this process, break
/// them, and watch. help() at the prompt lists the API.
#[derive(Parser, Debug)]
#[command(name = "ringkv-shell", version)]
struct Args {
    /// Evaluates EXPR and prints its value (instead of a script or the
    /// prompt).
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "EXPR",
        conflicts_with = "file"
    )]
    expr: Option<String>,
    /// A script to run; the prompt when absent (or stdin, when it is not a
    /// terminal).
    file: Option<PathBuf>,
    /// Arguments for the script, seen in it as the array ARGS.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn run_script(shell: &mut Shell, source: &str, name: &str, print_value: bool) -> ExitCode {
    match shell.eval(source) {
        Ok(v) => {
            if print_value {
                if let Some(s) = display(&v) {
                    println!("{s}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.render(source, name));
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let interactive = std::io::stderr().is_terminal();
    let mut shell = Shell::new(interactive);
    shell.set_args(args.args.clone());
    let code = if let Some(expr) = &args.expr {
        run_script(&mut shell, expr, "-e", true)
    } else if let Some(file) = &args.file {
        match std::fs::read_to_string(file) {
            Ok(src) => {
                // A `#!` line makes scripts executable; rhai does not know
                // it. It becomes a plain comment (`///` would be a doc
                // comment, which must precede a function).
                let src = match src.strip_prefix("#!") {
                    Some(rest) => format!("// {rest}"),
                    None => src,
                };
                run_script(&mut shell, &src, &file.display().to_string(), false)
            }
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                ExitCode::from(2)
            }
        }
    } else if !std::io::stdin().is_terminal() {
        let mut src = String::new();
        match std::io::stdin().read_to_string(&mut src) {
            Ok(_) => run_script(&mut shell, &src, "stdin", false),
            Err(e) => {
                eprintln!("error: reading stdin: {e}");
                ExitCode::from(2)
            }
        }
    } else {
        ExitCode::from(repl::run(&mut shell) as u8)
    };
    shell.shutdown();
    code
}
