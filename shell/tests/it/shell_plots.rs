//! The plot functions from a script, on a simulation (so every count is
//! the same each run): each kind writes an SVG file that an XML parser
//! reads back with the `<svg>` root, the title, and one data element per
//! bar, bin or series (with its points); bad input of every kind is a
//! rhai error naming what is wrong, never a panic, and writes nothing.

use std::path::Path;
use std::time::Duration;

use crate::support::{self, shell, Svg};

const LIMIT: Duration = Duration::from_secs(180);

const SCRIPT: &str = r#"
let out = ARGS[0];
let s = sim(5, 42);
let w = workload(#{ ops: 600, keys: 60, clients: 3, interval_ms: 20 });
print("bins " + w.histogram.filter(|b| b.count > 0).len());
print("intervals " + w.timeline.len());
print("ops " + w.timeline.reduce(|sum, r| sum + r.ops, 0));
print(plot_latency(w, out + "/lat.svg"));
plot_percentiles(w, out + "/pct.svg", #{ title: "Percentiles Title", log_y: true });
plot_ring(ring(), out + "/ring.svg");
plot_bars(status(), out + "/keys.svg", #{ label: "node", value: "keys", title: "keys per node" });
pause(3, 6000);
let trace = [];
let t0 = now_ms();
while now_ms() - t0 < 8000 {
    trace.push(#{ t_ms: now_ms() - t0, phi: phi(3) });
    sleep(200);
}
print("samples " + trace.len());
print("phi(1, 3) " + type_of(phi(1, 3)));
plot_phi(trace, out + "/phi.svg", #{ title: "phi of node 3" });
let g = gossip_rounds(#{ nodes: [10, 20, 40], seeds: 2 });
print(g);
plot_gossip(g, out + "/gossip.svg");
plot_series(#{ "a": #{ x: [0, 1, 2, 3], y: [1, 4, 2, ()] }, "b": [[0, 1], [3, 2]], "c": [5, 6, 7] },
            out + "/series.svg", #{ marks: #{ limit: 3 }, title: "Three Series", markers: true });
"#;

fn count(out: &str, what: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix(what))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what:?} in\n{out}"))
}

#[test]
fn each_plot_kind_writes_an_svg_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let script = dir.path().join("plots.rhai");
    std::fs::write(&script, SCRIPT).unwrap();
    let run = shell(&[script.to_str().unwrap(), out_dir], None, LIMIT);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let file = |name: &str| Svg::read(&dir.path().join(name));

    // Returns the path it wrote.
    assert!(out.contains(&format!("{out_dir}/lat.svg")), "{out}");

    let lat = file("lat.svg");
    assert_eq!(lat.bars(), count(out, "bins "));
    assert!(lat.bars() >= 5, "{}", lat.bars());
    assert!(
        lat.texts
            .iter()
            .any(|t| t.starts_with("latency of 600 requests: p50 ")),
        "{:?}",
        lat.texts
    );
    assert!(lat.has_text("latency (ms)"));

    let pct = file("pct.svg");
    let intervals = count(out, "intervals ");
    assert!(intervals >= 3, "{out}");
    assert_eq!(count(out, "ops "), 600);
    assert_eq!(pct.series(), vec![intervals; 4]);
    for t in ["Percentiles Title", "p50", "p90", "p99", "max"] {
        assert!(pct.has_text(t), "no {t} in {:?}", pct.texts);
    }

    let ring = file("ring.svg");
    assert_eq!(ring.bars(), 5);
    for n in 1..=5 {
        assert!(ring.has_text(&format!("node {n}")), "{:?}", ring.texts);
    }
    assert!(ring.has_text("even share 20.0%"));
    assert_eq!(ring.references(), vec![2]);
    assert!(ring.texts.iter().any(|t| t.starts_with("ring epoch")));

    let keys = file("keys.svg");
    assert_eq!(keys.bars(), 5);
    assert!(keys.has_text("keys per node"));

    let phi = file("phi.svg");
    let samples = count(out, "samples ");
    assert!(samples >= 30, "{out}");
    assert!(out.contains("phi(1, 3) f64"), "{out}");
    // One line per observer (1, 2, 4, 5), each with every sample.
    assert_eq!(phi.series(), vec![samples; 4]);
    assert_eq!(phi.references(), vec![2]);
    for t in [
        "phi of node 3",
        "seen by node 1",
        "seen by node 5",
        "threshold 8",
        "phi",
        "time (ms)",
    ] {
        assert!(phi.has_text(t), "no {t} in {:?}", phi.texts);
    }

    let gossip = file("gossip.svg");
    assert_eq!(gossip.series(), vec![3, 3]);
    assert_eq!(gossip.references(), vec![3]);
    assert_eq!(gossip.circles, 6);
    assert!(gossip.has_text("theory log2 N + ln N"));
    assert!(out.contains("nodes  seeds  min  p50  max  theory"), "{out}");

    let series = file("series.svg");
    // a: the () point skipped; b: two pairs; c: y values only.
    assert_eq!(series.series(), vec![3, 2, 3]);
    assert_eq!(series.references(), vec![2]);
    assert_eq!(series.circles, 8);
    for t in ["Three Series", "a", "b", "c", "limit"] {
        assert!(series.has_text(t), "no {t} in {:?}", series.texts);
    }
}

const ERRORS: &str = r#"
let out = ARGS[0];
let w = #{ ops: 1 };
let cases = [
    || plot_series(#{}, out + "/e.svg"),
    || plot_series(#{ a: [1, parse_float("NaN")] }, out + "/e.svg"),
    || plot_series(#{ a: [1, 2] }, out + "/e.svg", #{ colour: "red" }),
    || plot_series(#{ a: #{ x: [1, 2], y: [1] } }, out + "/e.svg"),
    || plot_series(#{ a: [0, 1] }, out + "/e.svg", #{ log_y: true }),
    || plot_series(#{ a: [1, 2] }, out + "/e.svg", #{ width: 5 }),
    || plot_series(#{ a: ["x"] }, out + "/e.svg"),
    || plot_latency(w, out + "/e.svg"),
    || plot_latency(#{ histogram: [] }, out + "/e.svg"),
    || plot_percentiles(#{ timeline: [#{ t_s: 1.0 }] }, out + "/e.svg"),
    || plot_ring(#{ "1": 50.0, "2": 50.0 }, out + "/e.png"),
    || plot_ring(#{ "1": 50.0 }, out + "/no/such/dir/e.svg"),
    || plot_bars(#{ a: "x" }, out + "/e.svg"),
    || plot_bars(42, out + "/e.svg"),
    || plot_phi([], out + "/e.svg"),
    || plot_phi([#{ t_ms: 0 }], out + "/e.svg"),
    || plot_phi([#{ t_ms: 0, phi: 1.0 / 0.0 }], out + "/e.svg"),
    || plot_gossip([], out + "/e.svg"),
    || gossip_rounds(#{ nodes: [1] }),
    || gossip_rounds(#{ rounds: 3 }),
];
for c in cases {
    try {
        c.call();
        print("no error");
    } catch (e) {
        print("error: " + e);
    }
}
"#;

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("errors.rhai");
    std::fs::write(&script, ERRORS).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let run = shell(
        &[script.to_str().unwrap(), out_dir.to_str().unwrap()],
        None,
        LIMIT,
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let expected = [
        "plot_series: no series",
        "plot_series: series \"a\", point 1: y is NaN, not a finite number",
        "plot_series: unknown option \"colour\"",
        "plot_series: series \"a\" has 2 x values and 1 y values",
        "plot_series: series \"a\", point 0: y is 0: a logarithmic axis shows positive values only",
        "plot_series: width must be a number of pixels from 100 to 8000",
        "plot_series: series \"a\", point 0: y must be a number",
        "plot_latency: the map has no \"histogram\": give it what workload() or workload_stop() returned",
        "plot_latency: the workload's histogram is empty",
        "plot_percentiles: interval 0 has no p50_ms",
        "plot_ring: plots are written as SVG: name the file *.svg",
        "does not exist",
        "plot_bars: the bar \"a\" must be a number",
        "plot_bars: give a map from label to number, or a table",
        "plot_phi: the trace is empty",
        "plot_phi: sample 0 has no phi",
        "plot_phi: series \"phi\", point 0: y is inf, not a finite number",
        "plot_gossip: no rows",
        "gossip_rounds: each size in nodes must be a number from 2 to 1000",
        "gossip_rounds: unknown option \"rounds\"",
    ];
    assert_eq!(lines.len(), expected.len(), "{}", run.stdout);
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains(want), "{line:?} does not say {want:?}");
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "a failed plot wrote {left:?}");

    // Uncaught, it ends a script with status 1 and its position.
    let bad = dir.path().join("bad.svg");
    let expr = format!("plot_bars(#{{}}, {:?})", bad.to_str().unwrap());
    let run = shell(&["-e", &expr], None, LIMIT);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("plot_bars: nothing to plot: no bars"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("-e:1:"), "{}", run.stderr);
    assert!(!Path::new(&bad).exists());
}

#[test]
fn plot_dir_is_the_environment_variable_or_a_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let want = dir.path().join("made/here");
    let run = support::shell_env(
        &["-e", "plot_dir()"],
        None,
        LIMIT,
        &[("RINGKV_PLOT_DIR", want.to_str().unwrap())],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), want.to_str().unwrap());
    assert!(want.is_dir(), "plot_dir() creates the directory");

    let run = support::shell_env(
        &["-e", "plot_dir()"],
        None,
        LIMIT,
        &[("RINGKV_PLOT_DIR", "")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let default = std::env::temp_dir().join("ringkv-plots");
    assert_eq!(run.stdout.trim(), default.to_str().unwrap());
}
