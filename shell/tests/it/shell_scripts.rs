//! Every script in `scripts/` (all seven, `rebalance.rhai` among them) runs
//! and succeeds, writes the plots it promises into `$RINGKV_PLOT_DIR` (each
//! read back as SVG with its data) and nothing into the repository, and the
//! one on a simulation (`sim_partition.rhai`) prints the same bytes every
//! run; script mode reports errors with their position and exit status 1;
//! `-e`, `ARGS` and scripts on stdin work.

use std::path::Path;
use std::time::Duration;

use crate::support::{shell, shell_env, Svg};

const LIMIT: Duration = Duration::from_secs(180);

/// The scripts in `scripts/`, each run by a test of its own below (one
/// test per script, so that libtest runs them side by side: in one test
/// they took 36 of this binary's 40 s).
const SCRIPTS: [&str; 7] = [
    "counters.rhai",
    "failure_detector.rhai",
    "lww_vs_siblings.rhai",
    "partition_siblings.rhai",
    "rebalance.rhai",
    "sim_partition.rhai",
    "tour.rhai",
];

#[test]
fn every_script_in_scripts_has_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");
    let mut scripts: Vec<String> = std::fs::read_dir(dir)
        .expect("scripts/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    scripts.sort();
    assert_eq!(
        scripts, SCRIPTS,
        "a script in scripts/ has no test here (or one is gone)"
    );
}

/// Runs `scripts/<file>` in script mode: it must exit 0, print at least one
/// passed check, write exactly the plots it promises (read back), and write
/// nothing into the repository.
fn script_succeeds(file: &str) {
    assert!(SCRIPTS.contains(&file), "{file} is not in SCRIPTS");
    let name = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/").to_string() + file;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let svgs_in_root = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".svg"))
            .collect();
        names.sort();
        names
    };
    let before = svgs_in_root();
    let plots = tempfile::tempdir().unwrap();
    let run = shell_env(
        &[&name],
        None,
        LIMIT,
        &[("RINGKV_PLOT_DIR", plots.path().to_str().unwrap())],
    );
    assert_eq!(
        run.code,
        Some(0),
        "{name} failed:\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("ok: "),
        "{name} checked nothing:\n{}",
        run.stdout
    );
    check_plots(file, plots.path(), &run.stdout);
    assert_eq!(svgs_in_root(), before, "{name} wrote into the repository");
}

#[test]
fn script_counters_succeeds() {
    script_succeeds("counters.rhai");
}

#[test]
fn script_failure_detector_succeeds() {
    script_succeeds("failure_detector.rhai");
}

#[test]
fn script_lww_vs_siblings_succeeds() {
    script_succeeds("lww_vs_siblings.rhai");
}

#[test]
fn script_partition_siblings_succeeds() {
    script_succeeds("partition_siblings.rhai");
}

#[test]
fn script_rebalance_succeeds() {
    script_succeeds("rebalance.rhai");
}

#[test]
fn script_sim_partition_succeeds() {
    script_succeeds("sim_partition.rhai");
}

#[test]
fn script_tour_succeeds() {
    script_succeeds("tour.rhai");
}

/// The plots each script writes, read back: the files it names and no
/// others, each an SVG with the data elements it should have.
fn check_plots(script: &str, dir: &Path, stdout: &str) {
    let mut written: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let expected: &[&str] = match script {
        "tour.rhai" => &["tour-latency.svg", "tour-percentiles.svg", "tour-ring.svg"],
        "failure_detector.rhai" => &[
            "failure-detector-crash.svg",
            "failure-detector-gossip.svg",
            "failure-detector-phi.svg",
        ],
        "rebalance.rhai" => &["rebalance-join-percentiles.svg", "rebalance-ring.svg"],
        _ => &[],
    };
    assert_eq!(written, expected, "{script} wrote other plots");
    for name in expected {
        let path = dir.join(name);
        assert!(
            stdout.contains(&format!("plot: {}", path.display())),
            "{script} did not print where it wrote {name}:\n{stdout}"
        );
        let svg = Svg::read(&path);
        let series = svg.series();
        match *name {
            "tour-ring.svg" => {
                assert_eq!(svg.bars(), 5, "{name}");
                assert_eq!(svg.references(), vec![2], "{name}");
                assert!(
                    svg.texts.iter().any(|t| t.starts_with("ring epoch")),
                    "{name}"
                );
            }
            "rebalance-ring.svg" => {
                assert_eq!(svg.bars(), 6, "{name}");
                assert!(svg.has_text("ring ownership after node 6 joined"), "{name}");
            }
            "tour-latency.svg" => {
                assert!(svg.bars() >= 3, "{name}: {} bars", svg.bars());
                assert!(
                    svg.texts
                        .iter()
                        .any(|t| t.starts_with("latency of 2000 requests")),
                    "{name}: {:?}",
                    svg.texts
                );
            }
            "tour-percentiles.svg" | "rebalance-join-percentiles.svg" => {
                // p50, p90, p99 and max over the same intervals.
                assert_eq!(series.len(), 4, "{name}");
                assert!(
                    series[0] >= 2 && series.iter().all(|&n| n == series[0]),
                    "{name}: {series:?}"
                );
                assert!(svg.has_text("p99"), "{name}");
            }
            "failure-detector-phi.svg" | "failure-detector-crash.svg" => {
                // A line per observer: nodes 1 to 4 less the one watched.
                assert_eq!(series.len(), 3, "{name}: {series:?}");
                assert!(series.iter().all(|&n| n >= 5), "{name}: {series:?}");
                assert_eq!(svg.references(), vec![2], "{name}");
                assert!(svg.has_text("threshold 8"), "{name}");
            }
            "failure-detector-gossip.svg" => {
                // p50 and max at 10, 20, 50, 100 and 200 nodes, and the theory.
                assert_eq!(series, vec![5, 5], "{name}");
                assert_eq!(svg.references(), vec![5], "{name}");
                assert!(svg.has_text("theory log2 N + ln N"), "{name}");
            }
            other => panic!("no check for {other}"),
        }
    }
}

#[test]
fn the_simulated_experiment_replays_byte_for_byte() {
    let runs: Vec<_> = (0..2)
        .map(|_| shell(&["scripts/sim_partition.rhai"], None, LIMIT))
        .collect();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    }
    assert!(
        runs[0]
            .stdout
            .contains("ok: a strict-quorum write on the minority side fails"),
        "{}",
        runs[0].stdout
    );
    assert!(
        runs[0]
            .stdout
            .contains("sim_partition: the properties hold."),
        "{}",
        runs[0].stdout
    );
    assert_eq!(runs[0].stdout, runs[1].stdout);
}

#[test]
fn a_failing_script_exits_1_with_the_line_and_a_caret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.rhai");
    std::fs::write(
        &path,
        "let x = 1;\nlet y = x + missing_var;\nprint(\"unreached\");\n",
    )
    .unwrap();
    let run = shell(&[path.to_str().unwrap()], None, LIMIT);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("missing_var"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.rhai:2:13"), "{}", run.stderr);
    assert!(
        run.stderr.contains("2 | let y = x + missing_var;"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("  |             ^"), "{}", run.stderr);
    assert!(!run.stdout.contains("unreached"));

    let run = shell(&["-e", "check(1 == 2, \"one is two\")"], None, LIMIT);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("check failed: one is two"),
        "{}",
        run.stderr
    );
    let run = shell(&["-e", "let x = ;"], None, LIMIT);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("-e:1:"), "{}", run.stderr);
}

#[test]
fn eval_args_and_stdin() {
    let run = shell(&["-e", "40 + 2"], None, LIMIT);
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stdout.trim(), "42");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args.rhai");
    std::fs::write(
        &path,
        "#!/usr/bin/env ringkv-shell\nprint(ARGS.len() + \":\" + ARGS[1]);\n",
    )
    .unwrap();
    let run = shell(&[path.to_str().unwrap(), "a", "--b"], None, LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "2:--b");

    // Not a terminal: stdin is one whole script, functions and all.
    let script = "fn double(x) {\n  x * 2\n}\nlet c = cluster(3);\nput(\"k\", double(21));\nprint(\"got \" + get(\"k\").value);\n";
    let run = shell(&[], Some(script), LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("got 42"), "{}", run.stdout);
    let run = shell(&[], Some("print(\"before\");\nkill(9);\n"), LIMIT);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("before"));
    assert!(run.stderr.contains("no cluster"), "{}", run.stderr);
    assert!(run.stderr.contains("stdin:2:1"), "{}", run.stderr);

    let run = shell(&["-e", "help(\"partition\")"], None, LIMIT);
    assert!(
        run.stdout.contains("partition([nodes], [nodes])"),
        "{}",
        run.stdout
    );
}
