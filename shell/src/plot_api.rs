//! The shell's plot functions: rhai values in, an SVG file out (drawn by
//! [`crate::plot`]).
//!
//! Every function takes the data, the file, and optionally a map of
//! options, and returns the path it wrote:
//!
//! - `plot_series(#{ name: #{ x: [..], y: [..] }, .. }, file)`: lines;
//! - `plot_phi(trace, file)`: phi against time, `trace` an array of
//!   `#{ t_ms, phi }` samples (`phi` a number or the map `phi(node)`
//!   returns), with the detector's threshold;
//! - `plot_latency(w, file)` and `plot_percentiles(w, file)`: a
//!   workload's latency histogram and its percentiles over time;
//! - `plot_ring(ring(), file)`: each node's share of the ring;
//! - `plot_bars(data, file)`: any bars (a map, or a table's columns);
//! - `plot_gossip(gossip_rounds(..), file)`: dissemination rounds
//!   against N, with the theory.
//!
//! The common options are `title`, `x_label`, `y_label`, `width`,
//! `height`, `log_x` and `log_y`; each function names the others it
//! takes. An unknown option, a missing or malformed field, an empty data
//! set, a value that is not a finite number, a file not named `.svg` or
//! in a directory that does not exist: each is a rhai error that says
//! which, and no file is written.

use rhai::{Array, Dynamic, Engine, Map, INT};

use crate::api::{fail, ApiResult};
use crate::plot::{self, Bar, Bin, Frame, Line};
use crate::table::Table;

/// The options every plot function takes.
const COMMON: &[&str] = &[
    "title", "x_label", "y_label", "width", "height", "log_x", "log_y",
];

/// The default threshold line of `plot_phi`: the phi past which a
/// monitor suspects a peer (`MembershipConfig::phi_threshold`'s default,
/// which embedded clusters and simulations keep).
pub const PHI_THRESHOLD: f64 = 8.0;

/// A number from an int or a float; `None` for anything else.
fn number(v: &Dynamic) -> Option<f64> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
}

fn need_number(v: &Dynamic, what: impl Fn() -> String) -> Result<f64, String> {
    number(v).ok_or_else(|| format!("{} must be a number, got {}", what(), describe(v)))
}

fn describe(v: &Dynamic) -> String {
    if v.is_unit() {
        "()".into()
    } else {
        format!("{} ({})", v, v.type_name())
    }
}

fn array(v: &Dynamic, what: &str) -> Result<Array, String> {
    v.clone()
        .try_cast::<Array>()
        .ok_or_else(|| format!("{what} must be an array, got {}", describe(v)))
}

fn map_of(v: &Dynamic, what: &str) -> Result<Map, String> {
    v.clone()
        .try_cast::<Map>()
        .ok_or_else(|| format!("{what} must be a map, got {}", describe(v)))
}

/// The frame of `f` from `defaults` and the common options of `o`; the
/// other options `f` takes (`extra`) are returned for it to read.
fn options(f: &str, defaults: Frame, o: &Map, extra: &[&str]) -> Result<(Frame, Map), String> {
    let mut frame = defaults;
    let mut rest = Map::new();
    for (k, v) in o {
        let text = || v.to_string();
        let flag = |name: &str| {
            v.as_bool()
                .map_err(|_| format!("{f}: {name} must be true or false, got {}", describe(v)))
        };
        let side = |name: &str| -> Result<u32, String> {
            match v.as_int() {
                Ok(n) if (100..=plot::MAX_SIDE as INT).contains(&n) => Ok(n as u32),
                _ => Err(format!(
                    "{f}: {name} must be a number of pixels from 100 to {}, got {}",
                    plot::MAX_SIDE,
                    describe(v)
                )),
            }
        };
        match k.as_str() {
            "title" => frame.title = text(),
            "x_label" => frame.x_label = text(),
            "y_label" => frame.y_label = text(),
            "width" => frame.width = side("width")?,
            "height" => frame.height = side("height")?,
            "log_x" => frame.log_x = flag("log_x")?,
            "log_y" => frame.log_y = flag("log_y")?,
            other if extra.contains(&other) => {
                rest.insert(k.clone(), v.clone());
            }
            other => {
                let known: Vec<&str> = COMMON.iter().chain(extra).copied().collect();
                return Err(format!(
                    "{f}: unknown option {other:?}: {}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok((frame, rest))
}

/// Writes `svg` to `file` and returns the path, or the error with the
/// function's name.
fn finish(f: &str, file: &str, svg: Result<String, String>) -> ApiResult<String> {
    let svg = svg.map_err(|e| fail(format!("{f}: {e}")))?;
    plot::write(file, &svg).map_err(|e| fail(format!("{f}: {e}")))?;
    Ok(file.to_string())
}

/// One series of `plot_series`: `#{ x: [..], y: [..] }`, an array of
/// `[x, y]` pairs, or an array of y values (x is 0, 1, 2, ...). A `()`
/// y is skipped (a sample with no value).
fn series_points(name: &str, v: &Dynamic) -> Result<Vec<(f64, f64)>, String> {
    let what = |i: usize, axis: &str| format!("series {name:?}, point {i}: {axis}");
    if let Some(m) = v.clone().try_cast::<Map>() {
        let field = |f: &str| -> Result<Array, String> {
            let v = m.get(f).ok_or_else(|| {
                format!("series {name:?} has no {f:?}: give #{{ x: [..], y: [..] }}")
            })?;
            array(v, &format!("series {name:?}'s {f}"))
        };
        let (xs, ys) = (field("x")?, field("y")?);
        if xs.len() != ys.len() {
            return Err(format!(
                "series {name:?} has {} x values and {} y values",
                xs.len(),
                ys.len()
            ));
        }
        let mut points = Vec::new();
        for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
            if y.is_unit() {
                continue;
            }
            points.push((
                need_number(x, || what(i, "x"))?,
                need_number(y, || what(i, "y"))?,
            ));
        }
        return Ok(points);
    }
    let items = array(v, &format!("series {name:?}"))?;
    let mut points = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(pair) = item.clone().try_cast::<Array>() {
            if pair.len() != 2 {
                return Err(format!(
                    "series {name:?}, point {i}: a pair is [x, y], got {} values",
                    pair.len()
                ));
            }
            if pair[1].is_unit() {
                continue;
            }
            points.push((
                need_number(&pair[0], || what(i, "x"))?,
                need_number(&pair[1], || what(i, "y"))?,
            ));
        } else if !item.is_unit() {
            points.push((i as f64, need_number(item, || what(i, "y"))?));
        }
    }
    Ok(points)
}

/// `marks: #{ name: y, .. }`: horizontal reference lines across the x
/// range of `lines`.
fn marks(f: &str, v: Option<&Dynamic>, lines: &[Line]) -> Result<Vec<Line>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let m = map_of(v, &format!("{f}: marks"))?;
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return Ok(Vec::new());
    }
    m.iter()
        .map(|(name, y)| {
            let y = need_number(y, || format!("{f}: the mark {name:?}"))?;
            Ok(reference(name, lo, hi, y))
        })
        .collect()
}

fn reference(name: &str, from: f64, to: f64, y: f64) -> Line {
    Line {
        name: name.to_string(),
        points: vec![(from, y), (to, y)],
        reference: true,
        markers: false,
    }
}

fn flag(o: &Map, key: &str, default: bool) -> Result<bool, String> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .map_err(|_| format!("{key} must be true or false, got {}", describe(v))),
    }
}

/// `plot_series(series, file, opts)`.
pub fn series(data: &Map, o: &Map) -> Result<String, String> {
    let f = "plot_series";
    let (frame, extra) = options(f, Frame::new("", "x", "y"), o, &["marks", "markers"])?;
    let markers = flag(&extra, "markers", false).map_err(|e| format!("{f}: {e}"))?;
    if data.is_empty() {
        return Err(format!(
            "{f}: no series: give a map from each series' name to #{{ x: [..], y: [..] }}"
        ));
    }
    let mut lines = Vec::new();
    for (name, v) in data {
        lines.push(Line {
            name: name.to_string(),
            points: series_points(name, v).map_err(|e| format!("{f}: {e}"))?,
            reference: false,
            markers,
        });
    }
    let refs = marks(f, extra.get("marks"), &lines)?;
    lines.extend(refs);
    plot::lines(&frame, &lines).map_err(|e| format!("{f}: {e}"))
}

/// `plot_phi(trace, file, opts)`: `trace` is an array of `#{ t_ms, phi }`
/// with `phi` a number (one line, "phi") or a map from observer to phi
/// (a line per observer; `()` values skipped).
pub fn phi(trace: &Array, o: &Map) -> Result<String, String> {
    let f = "plot_phi";
    let (frame, extra) = options(
        f,
        Frame::new("phi over time", "time (ms)", "phi"),
        o,
        &["threshold"],
    )?;
    if trace.is_empty() {
        return Err(format!(
            "{f}: the trace is empty: push #{{ t_ms, phi }} samples to it"
        ));
    }
    let mut by_name: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for (i, s) in trace.iter().enumerate() {
        let s = map_of(s, &format!("{f}: sample {i}"))?;
        let t = s
            .get("t_ms")
            .ok_or_else(|| format!("{f}: sample {i} has no t_ms"))?;
        let t = need_number(t, || format!("{f}: sample {i}'s t_ms"))?;
        let phi = s
            .get("phi")
            .ok_or_else(|| format!("{f}: sample {i} has no phi"))?;
        if let Some(m) = phi.clone().try_cast::<Map>() {
            for (observer, v) in m {
                if v.is_unit() {
                    continue;
                }
                let v = need_number(&v, || format!("{f}: sample {i}'s phi of {observer}"))?;
                by_name
                    .entry(format!("seen by node {observer}"))
                    .or_default()
                    .push((t, v));
            }
        } else if !phi.is_unit() {
            let v = need_number(phi, || format!("{f}: sample {i}'s phi"))?;
            by_name.entry("phi".into()).or_default().push((t, v));
        }
    }
    let mut lines: Vec<Line> = by_name
        .into_iter()
        .map(|(name, points)| Line {
            name,
            points,
            reference: false,
            markers: false,
        })
        .collect();
    if lines.is_empty() {
        return Err(format!("{f}: no sample has a phi value"));
    }
    let threshold = match extra.get("threshold") {
        None => Some(PHI_THRESHOLD),
        Some(v) if v.is_unit() => None,
        Some(v) => Some(need_number(v, || format!("{f}: threshold"))?),
    };
    if let Some(y) = threshold {
        let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        lines.push(reference(&format!("threshold {y}"), lo, hi, y));
    }
    plot::lines(&frame, &lines).map_err(|e| format!("{f}: {e}"))
}

/// A workload result's array field `key`, with a hint when it is not one.
fn workload_rows(f: &str, w: &Map, key: &str) -> Result<Array, String> {
    let v = w.get(key).ok_or_else(|| {
        format!("{f}: the map has no {key:?}: give it what workload() or workload_stop() returned")
    })?;
    let rows = array(v, &format!("{f}: {key}"))?;
    if rows.is_empty() {
        return Err(format!(
            "{f}: the workload's {key} is empty: it made no request"
        ));
    }
    Ok(rows)
}

fn field(f: &str, row: &Dynamic, i: usize, key: &str, what: &str) -> Result<f64, String> {
    let m = map_of(row, &format!("{f}: {what} {i}"))?;
    let v = m
        .get(key)
        .ok_or_else(|| format!("{f}: {what} {i} has no {key}"))?;
    need_number(v, || format!("{f}: {what} {i}'s {key}"))
}

/// `plot_latency(w, file, opts)`: the histogram of a workload's latencies
/// (`w.histogram`), on a logarithmic axis by default.
pub fn latency(w: &Map, o: &Map) -> Result<String, String> {
    let f = "plot_latency";
    let rows = workload_rows(f, w, "histogram")?;
    let num = |k: &str| w.get(k).and_then(number);
    let title = match (num("ops"), num("p50_ms"), num("p99_ms")) {
        (Some(ops), Some(p50), Some(p99)) => {
            format!("latency of {ops} requests: p50 {p50:.2} ms, p99 {p99:.2} ms")
        }
        _ => "latency".to_string(),
    };
    let mut defaults = Frame::new(&title, "latency (ms)", "requests");
    defaults.log_x = true;
    let (frame, _) = options(f, defaults, o, &[])?;
    let mut bins = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        bins.push(Bin {
            from: field(f, r, i, "from_ms", "bin")?,
            to: field(f, r, i, "to_ms", "bin")?,
            count: field(f, r, i, "count", "bin")?,
        });
    }
    plot::histogram(&frame, &bins).map_err(|e| format!("{f}: {e}"))
}

/// The percentiles `plot_percentiles` draws, in order.
pub const PERCENTILES: [&str; 4] = ["p50_ms", "p90_ms", "p99_ms", "max_ms"];

/// `plot_percentiles(w, file, opts)`: a workload's p50, p90, p99 and max
/// per interval (`w.timeline`) against time.
pub fn percentiles(w: &Map, o: &Map) -> Result<String, String> {
    let f = "plot_percentiles";
    let rows = workload_rows(f, w, "timeline")?;
    let (frame, _) = options(
        f,
        Frame::new("latency over time", "time (s)", "latency (ms)"),
        o,
        &[],
    )?;
    let mut lines = Vec::new();
    for p in PERCENTILES {
        let mut points = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            points.push((
                field(f, r, i, "t_s", "interval")?,
                field(f, r, i, p, "interval")?,
            ));
        }
        lines.push(Line {
            name: p.trim_end_matches("_ms").to_string(),
            points,
            reference: false,
            markers: rows.len() <= 40,
        });
    }
    plot::lines(&frame, &lines).map_err(|e| format!("{f}: {e}"))
}

/// Bars from `data`: a map from label to number, or a table (or an array
/// of row maps) with the columns named by the options `label` and
/// `value`.
fn bar_data(f: &str, data: &Dynamic, label: &str, value: &str) -> Result<Vec<Bar>, String> {
    let rows: Option<Array> = if let Some(t) = data.clone().try_cast::<Table>() {
        Some(t.rows_array())
    } else {
        data.clone().try_cast::<Array>()
    };
    if let Some(rows) = rows {
        let mut bars = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let m = map_of(r, &format!("{f}: row {i}"))?;
            let l = m
                .get(label)
                .ok_or_else(|| format!("{f}: row {i} has no column {label:?}"))?;
            let v = m
                .get(value)
                .ok_or_else(|| format!("{f}: row {i} has no column {value:?}"))?;
            bars.push(Bar {
                label: l.to_string(),
                value: need_number(v, || format!("{f}: row {i}'s {value}"))?,
            });
        }
        return Ok(bars);
    }
    let m = data.clone().try_cast::<Map>().ok_or_else(|| {
        format!(
            "{f}: give a map from label to number, or a table; got {}",
            describe(data)
        )
    })?;
    m.iter()
        .map(|(k, v)| {
            Ok(Bar {
                label: k.to_string(),
                value: need_number(v, || format!("{f}: the bar {k:?}"))?,
            })
        })
        .collect()
}

fn text_option(f: &str, o: &Map, key: &str, default: &str) -> Result<String, String> {
    match o.get(key) {
        None => Ok(default.to_string()),
        Some(v) => v
            .clone()
            .into_string()
            .map_err(|_| format!("{f}: {key} must be a column name, got {}", describe(v))),
    }
}

/// `plot_bars(data, file, opts)`.
pub fn bars(data: &Dynamic, o: &Map) -> Result<String, String> {
    let f = "plot_bars";
    let (frame, extra) = options(f, Frame::new("", "", ""), o, &["label", "value", "marks"])?;
    let label = text_option(f, &extra, "label", "label")?;
    let value = text_option(f, &extra, "value", "value")?;
    let bars = bar_data(f, data, &label, &value)?;
    let mut refs = Vec::new();
    if let Some(m) = extra.get("marks") {
        for (name, y) in map_of(m, &format!("{f}: marks"))? {
            refs.push((
                name.to_string(),
                need_number(&y, || format!("{f}: the mark {name:?}"))?,
            ));
        }
    }
    plot::bars(&frame, &bars, &refs).map_err(|e| format!("{f}: {e}"))
}

/// `plot_ring(ring(), file, opts)`: each node's share of the ring, with
/// the even share (100 / nodes) as a reference line.
pub fn ring(data: &Dynamic, o: &Map) -> Result<String, String> {
    let f = "plot_ring";
    let title = data
        .clone()
        .try_cast::<Table>()
        .map_or_else(|| "ring ownership".to_string(), |t| t.title);
    let (frame, _) = options(
        f,
        Frame::new(&title, "node", "share of the ring (%)"),
        o,
        &[],
    )?;
    let mut bars = bar_data(f, data, "node", "share_pct")?;
    for b in &mut bars {
        b.label = format!("node {}", b.label);
    }
    let even = if bars.is_empty() {
        Vec::new()
    } else {
        vec![(
            format!("even share {:.1}%", 100.0 / bars.len() as f64),
            100.0 / bars.len() as f64,
        )]
    };
    plot::bars(&frame, &bars, &even).map_err(|e| format!("{f}: {e}"))
}

/// `plot_gossip(gossip_rounds(..), file, opts)`: p50 and max rounds
/// against N, and the theory for push to one peer per round.
pub fn gossip(data: &Dynamic, o: &Map) -> Result<String, String> {
    let f = "plot_gossip";
    let (rows, title): (Array, String) = match data.clone().try_cast::<Table>() {
        Some(t) => (t.rows_array(), t.title),
        None => (
            array(
                data,
                &format!("{f}: the data (what gossip_rounds() returned)"),
            )?,
            "rounds until a change reaches every node".into(),
        ),
    };
    if rows.is_empty() {
        return Err(format!(
            "{f}: no rows: give it what gossip_rounds() returned"
        ));
    }
    let mut defaults = Frame::new(&title, "nodes (N)", "rounds");
    defaults.log_x = true;
    let (frame, _) = options(f, defaults, o, &[])?;
    let mut lines = Vec::new();
    for (column, name, reference) in [
        ("p50", "p50", false),
        ("max", "max", false),
        ("theory", "theory log2 N + ln N", true),
    ] {
        let mut points = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            points.push((
                field(f, r, i, "nodes", "row")?,
                field(f, r, i, column, "row")?,
            ));
        }
        lines.push(Line {
            name: name.to_string(),
            points,
            reference,
            markers: !reference,
        });
    }
    plot::lines(&frame, &lines).map_err(|e| format!("{f}: {e}"))
}

/// `plot_dir()`: `$RINGKV_PLOT_DIR`, or `ringkv-plots` in the system's
/// temporary directory; created if missing.
pub fn plot_dir() -> Result<String, String> {
    let dir = match std::env::var_os("RINGKV_PLOT_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::env::temp_dir().join("ringkv-plots"),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("plot_dir: cannot create {}: {e}", dir.display()))?;
    dir.into_os_string()
        .into_string()
        .map_err(|d| format!("plot_dir: {} is not UTF-8", d.to_string_lossy()))
}

/// Registers the plot functions on `engine`, each as `f(data, file)` and
/// `f(data, file, opts)`.
pub fn register(engine: &mut Engine) {
    macro_rules! both {
        ($name:literal, $ty:ty, $draw:expr) => {
            let run = |d: $ty, file: &str, o: Map| -> ApiResult<String> {
                finish($name, file, $draw(&d, &o))
            };
            engine.register_fn($name, move |d: $ty, file: &str| run(d, file, Map::new()));
            engine.register_fn($name, move |d: $ty, file: &str, o: Map| run(d, file, o));
        };
    }
    both!("plot_series", Map, series);
    both!("plot_phi", Array, phi);
    both!("plot_latency", Map, latency);
    both!("plot_percentiles", Map, percentiles);
    both!("plot_ring", Dynamic, ring);
    both!("plot_bars", Dynamic, bars);
    both!("plot_gossip", Dynamic, gossip);
    engine.register_fn("plot_dir", || plot_dir().map_err(fail));
}
