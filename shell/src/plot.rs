//! Plots: SVG pictures of what a script measured, drawn with `plotters`'
//! SVG backend (text is written as SVG `<text>`, so no font is loaded and
//! no system library is needed).
//!
//! Three shapes of chart, each a pure function from data to SVG text:
//! [`lines`] (named series of (x, y) points, with optional reference
//! lines such as a threshold or a theory), [`bars`] (one bar per label)
//! and [`histogram`] (bins with edges on a continuous, by default
//! logarithmic, axis). [`write`] puts the text in a file. Every input is
//! checked first: an empty data set, a value that is not a finite number,
//! or a non-positive value on a logarithmic axis is an error naming what
//! is wrong, never a panic and never a half-drawn file.
//!
//! The rhai functions (`plot_series`, `plot_phi`, `plot_latency`,
//! `plot_percentiles`, `plot_ring`, `plot_bars`, `plot_gossip`,
//! `plot_dir`) are in [`crate::plot_api`]; they turn rhai values into
//! these shapes.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
pub use plotters::style::RGBColor;

/// The fill of a data bar (bars and histogram bins): tests count the
/// `<rect>` elements of this colour.
pub const BAR_COLOR: RGBColor = RGBColor(0x4c, 0x72, 0xb0);

/// The colours of successive series.
pub const SERIES_COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The colour of reference lines (a threshold, a theory, a mean).
pub const REFERENCE_COLOR: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// The largest picture side, in pixels.
pub const MAX_SIDE: u32 = 8000;

/// A chart's frame: its title, axis labels, size and scales.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Drawn above the chart.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// A logarithmic x axis.
    pub log_x: bool,
    /// A logarithmic y axis.
    pub log_y: bool,
}

impl Frame {
    /// An 800 x 500 frame with linear axes.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Frame {
        Frame {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            width: 800,
            height: 500,
            log_x: false,
            log_y: false,
        }
    }
}

/// A named series of points, drawn as one polyline.
#[derive(Clone, Debug)]
pub struct Line {
    /// Shown in the legend.
    pub name: String,
    /// The points, drawn in this order.
    pub points: Vec<(f64, f64)>,
    /// A reference line (threshold, theory): drawn thin and grey.
    pub reference: bool,
    /// Also mark each point with a dot.
    pub markers: bool,
}

/// One bar.
#[derive(Clone, Debug)]
pub struct Bar {
    /// Under the bar.
    pub label: String,
    /// Its height.
    pub value: f64,
}

/// One histogram bin: `count` values from `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Bin {
    /// Lower edge.
    pub from: f64,
    /// Upper edge.
    pub to: f64,
    /// How many values fell in it.
    pub count: f64,
}

fn finite(v: f64, what: impl FnOnce() -> String) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{} is {v}, not a finite number", what()))
    }
}

fn check_frame(f: &Frame) -> Result<(), String> {
    for (side, v) in [("width", f.width), ("height", f.height)] {
        if !(100..=MAX_SIDE).contains(&v) {
            return Err(format!(
                "{side} must be from 100 to {MAX_SIDE} pixels, got {v}"
            ));
        }
    }
    Ok(())
}

/// The axis range that shows every value of `values`: from 0 (or below,
/// for negative values) on a linear axis, with `room` of the span free
/// above (for the legend); a factor either side on a logarithmic one.
///
/// Fails when the range is not finite (values near f64's limits): plotters
/// would loop forever on an infinite axis.
fn axis(
    values: impl Iterator<Item = f64>,
    log: bool,
    from_zero: bool,
    room: f64,
) -> Result<Range<f64>, String> {
    let r = axis_range(values, log, from_zero, room);
    if r.start.is_finite() && r.end.is_finite() && (r.end - r.start).is_finite() {
        Ok(r)
    } else {
        Err(format!(
            "the values reach {} .. {}, too large to draw (at most about 1e300)",
            r.start, r.end
        ))
    }
}

fn axis_range(
    values: impl Iterator<Item = f64>,
    log: bool,
    from_zero: bool,
    room: f64,
) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if log {
        return lo / 1.3..hi * 1.3;
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi <= lo {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return lo - pad..hi + pad;
    }
    let pad = (hi - lo) * 0.05;
    let lo = if from_zero && lo >= 0.0 {
        0.0
    } else {
        lo - pad
    };
    lo..hi + (hi - lo) * room.max(0.05)
}

fn positive_on_log(v: f64, log: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if log && v <= 0.0 {
        Err(format!(
            "{} is {v}: a logarithmic axis shows positive values only",
            what()
        ))
    } else {
        Ok(())
    }
}

/// An axis label: whole numbers without decimals, others with at most
/// three significant digits (0.125, 2.5, 1500).
fn tick(v: &f64) -> String {
    let v = *v;
    if v == v.round() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = (3 - 1 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The title's font size: 28, or smaller for a title that would not fit
/// the width (by plotters' estimate of a glyph's width).
fn caption_size(frame: &Frame) -> f64 {
    let chars = frame.title.chars().count().max(1) as f64;
    let fits = 0.92 * f64::from(frame.width) * 1.24 * 1.24 / (0.7 * chars);
    fits.clamp(10.0, 28.0)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the plot failed: {e}")
}

/// A line chart of `series` (at least one with a point; every value finite).
pub fn lines(frame: &Frame, series: &[Line]) -> Result<String, String> {
    check_frame(frame)?;
    if series.iter().all(|s| s.points.is_empty()) {
        return Err("nothing to plot: every series is empty".into());
    }
    for s in series {
        for (i, &(x, y)) in s.points.iter().enumerate() {
            finite(x, || format!("series {:?}, point {i}: x", s.name))?;
            finite(y, || format!("series {:?}, point {i}: y", s.name))?;
            positive_on_log(x, frame.log_x, || {
                format!("series {:?}, point {i}: x", s.name)
            })?;
            positive_on_log(y, frame.log_y, || {
                format!("series {:?}, point {i}: y", s.name)
            })?;
        }
    }
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x = axis(xs(), frame.log_x, false, 0.05)?;
    // A legend row is about 5% of the plot's height.
    let y = axis(ys(), frame.log_y, true, 0.1 + 0.07 * series.len() as f64)?;
    match (frame.log_x, frame.log_y) {
        (false, false) => draw_lines(frame, x, y, series),
        (true, false) => draw_lines(frame, x.log_scale().base(2.0), y, series),
        (false, true) => draw_lines(frame, x, y.log_scale(), series),
        (true, true) => draw_lines(frame, x.log_scale().base(2.0), y.log_scale(), series),
    }
}

fn draw_lines<X, Y>(frame: &Frame, x: X, y: Y, series: &[Line]) -> Result<String, String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (frame.width, frame.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&frame.title, ("sans-serif", caption_size(frame)))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc(&frame.x_label)
            .y_desc(&frame.y_label)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let mut colour = 0;
        for s in series {
            let style = if s.reference {
                REFERENCE_COLOR.stroke_width(1)
            } else {
                let c = SERIES_COLORS[colour % SERIES_COLORS.len()];
                colour += 1;
                c.stroke_width(2)
            };
            let legend = style;
            chart
                .draw_series(std::iter::once(PathElement::new(s.points.clone(), style)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 2), (x + 16, y + 2)], legend.filled())
                });
            if s.markers {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Circle::new(p, 3, style.color.filled())),
                    )
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A bar chart, one bar per entry of `bars` in order (at least one; every
/// value finite), and optional horizontal reference lines
/// (`(name, y)`, e.g. the mean).
pub fn bars(frame: &Frame, bars: &[Bar], references: &[(String, f64)]) -> Result<String, String> {
    check_frame(frame)?;
    if bars.is_empty() {
        return Err("nothing to plot: no bars".into());
    }
    for b in bars {
        finite(b.value, || format!("the bar {:?}", b.label))?;
    }
    for (name, v) in references {
        finite(*v, || format!("the reference line {name:?}"))?;
    }
    let y = axis(
        bars.iter()
            .map(|b| b.value)
            .chain(references.iter().map(|r| r.1)),
        false,
        true,
        0.1 + 0.07 * references.len() as f64,
    )?;
    let n = bars.len();
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (frame.width, frame.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&frame.title, ("sans-serif", caption_size(frame)))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), y)
            .map_err(err)?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i).map(|b| b.label.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&label)
            .y_label_formatter(&tick)
            .x_desc(&frame.x_label)
            .y_desc(&frame.y_label)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.value),
                    ],
                    BAR_COLOR.filled(),
                );
                r.set_margin(0, 0, 6, 6);
                r
            }))
            .map_err(err)?;
        for (name, v) in references {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::Exact(0), *v), (SegmentValue::Last, *v)],
                    REFERENCE_COLOR.stroke_width(1),
                )))
                .map_err(err)?
                .label(name.clone())
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 2), (x + 16, y + 2)], REFERENCE_COLOR.filled())
                });
        }
        if !references.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .label_font(("sans-serif", 16))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A histogram: a bar from each bin's `from` to its `to`, as high as its
/// count (at least one bin with a count; edges finite, increasing, and
/// positive on a logarithmic x axis).
pub fn histogram(frame: &Frame, bins: &[Bin]) -> Result<String, String> {
    check_frame(frame)?;
    for (i, b) in bins.iter().enumerate() {
        finite(b.from, || format!("bin {i}: from"))?;
        finite(b.to, || format!("bin {i}: to"))?;
        finite(b.count, || format!("bin {i}: count"))?;
        positive_on_log(b.from, frame.log_x, || format!("bin {i}: from"))?;
        if b.to <= b.from {
            return Err(format!(
                "bin {i}: its upper edge {} is not above its lower edge {}",
                b.to, b.from
            ));
        }
        if b.count < 0.0 {
            return Err(format!("bin {i}: a count of {} is negative", b.count));
        }
    }
    if !bins.iter().any(|b| b.count > 0.0) {
        return Err("nothing to plot: no bin has a value".into());
    }
    let x = axis(bins.iter().flat_map(|b| [b.from, b.to]), false, false, 0.05)?;
    // The bars fill the x range exactly: no room either side.
    let x = if frame.log_x {
        let lo = bins.iter().map(|b| b.from).fold(f64::INFINITY, f64::min);
        let hi = bins.iter().map(|b| b.to).fold(f64::NEG_INFINITY, f64::max);
        lo..hi
    } else {
        x
    };
    let y = axis(bins.iter().map(|b| b.count), false, true, 0.1)?;
    if frame.log_x {
        draw_histogram(frame, x.log_scale().base(2.0), y, bins)
    } else {
        draw_histogram(frame, x, y, bins)
    }
}

fn draw_histogram<X>(frame: &Frame, x: X, y: Range<f64>, bins: &[Bin]) -> Result<String, String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (frame.width, frame.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&frame.title, ("sans-serif", caption_size(frame)))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(12)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc(&frame.x_label)
            .y_desc(&frame.y_label)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0.0).map(|b| {
                let mut r = Rectangle::new([(b.from, 0.0), (b.to, b.count)], BAR_COLOR.filled());
                r.set_margin(0, 0, 1, 1);
                r
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Writes `svg` to `path`, which must name an `.svg` file in a directory
/// that exists.
pub fn write(path: &str, svg: &str) -> Result<(), String> {
    check_path(path)?;
    std::fs::write(path, svg).map_err(|e| format!("cannot write the plot to {path}: {e}"))
}

/// Refuses a path that does not end in `.svg` (the only format written)
/// or whose directory does not exist.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = std::path::Path::new(path);
    let svg = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        return Err(format!(
            "plots are written as SVG: name the file *.svg, not {path:?}"
        ));
    }
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!(
                "cannot write the plot to {path}: the directory {} does not exist",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test reads back from an SVG document.
    struct Parsed {
        texts: Vec<String>,
        /// (stroke, number of points) of each polyline.
        polylines: Vec<(String, usize)>,
        /// The fill of each rect.
        rects: Vec<String>,
        circles: usize,
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    fn parse(svg: &str) -> Parsed {
        let doc = roxmltree::Document::parse(svg).expect("the output is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let mut p = Parsed {
            texts: Vec::new(),
            polylines: Vec::new(),
            rects: Vec::new(),
            circles: 0,
        };
        for n in root.descendants().filter(|n| n.is_element()) {
            match n.tag_name().name() {
                "text" => p.texts.push(n.text().unwrap_or("").trim().to_string()),
                "polyline" => p.polylines.push((
                    n.attribute("stroke").unwrap_or("").to_uppercase(),
                    n.attribute("points")
                        .unwrap_or("")
                        .split_whitespace()
                        .count(),
                )),
                "rect" => p
                    .rects
                    .push(n.attribute("fill").unwrap_or("").to_uppercase()),
                "circle" => p.circles += 1,
                _ => {}
            }
        }
        p
    }

    fn line(name: &str, points: &[(f64, f64)]) -> Line {
        Line {
            name: name.into(),
            points: points.to_vec(),
            reference: false,
            markers: false,
        }
    }

    #[test]
    fn lines_draw_a_polyline_per_series_with_its_points_title_and_legend() {
        let frame = Frame::new("Phi Of Node 3", "time (ms)", "phi");
        let mut a = line(
            "seen by 1",
            &[(0.0, 0.5), (50.0, 3.0), (100.0, 12.5), (150.0, 0.0)],
        );
        a.markers = true;
        let b = line("seen by 2", &[(0.0, 0.2), (100.0, 9.0)]);
        let mut t = line("threshold 8", &[(0.0, 8.0), (150.0, 8.0)]);
        t.reference = true;
        let p = parse(&lines(&frame, &[a, b, t]).unwrap());
        assert!(
            p.texts.iter().any(|t| t == "Phi Of Node 3"),
            "{:?}",
            p.texts
        );
        for label in ["time (ms)", "phi", "seen by 1", "seen by 2", "threshold 8"] {
            assert!(
                p.texts.iter().any(|t| t == label),
                "no {label:?} in {:?}",
                p.texts
            );
        }
        let of = |c: RGBColor| -> Vec<usize> {
            p.polylines
                .iter()
                .filter(|(s, _)| *s == hex(c))
                .map(|(_, n)| *n)
                .collect()
        };
        assert_eq!(of(SERIES_COLORS[0]), vec![4]);
        assert_eq!(of(SERIES_COLORS[1]), vec![2]);
        assert_eq!(of(REFERENCE_COLOR), vec![2]);
        // Markers for the first series only.
        assert_eq!(p.circles, 4);
    }

    #[test]
    fn bars_draw_one_rect_per_bar_with_its_label() {
        let frame = Frame::new("ring", "node", "share (%)");
        let data: Vec<Bar> = (1..=5)
            .map(|i| Bar {
                label: format!("node {i}"),
                value: 18.0 + i as f64,
            })
            .collect();
        let p = parse(&bars(&frame, &data, &[("even share".into(), 20.0)]).unwrap());
        assert_eq!(p.rects.iter().filter(|f| **f == hex(BAR_COLOR)).count(), 5);
        for i in 1..=5 {
            assert!(p.texts.contains(&format!("node {i}")), "{:?}", p.texts);
        }
        assert!(p.texts.contains(&"even share".to_string()));
        assert!(p.texts.contains(&"ring".to_string()));
        assert_eq!(
            p.polylines
                .iter()
                .filter(|(s, _)| *s == hex(REFERENCE_COLOR))
                .count(),
            1
        );
    }

    #[test]
    fn a_histogram_draws_its_non_empty_bins() {
        let mut frame = Frame::new("latency", "latency (ms)", "requests");
        let bins = [
            Bin {
                from: 0.1,
                to: 0.2,
                count: 5.0,
            },
            Bin {
                from: 0.2,
                to: 0.4,
                count: 9.0,
            },
            Bin {
                from: 0.4,
                to: 0.8,
                count: 0.0,
            },
            Bin {
                from: 0.8,
                to: 1.6,
                count: 1.0,
            },
        ];
        for log in [true, false] {
            frame.log_x = log;
            let p = parse(&histogram(&frame, &bins).unwrap());
            assert_eq!(p.rects.iter().filter(|f| **f == hex(BAR_COLOR)).count(), 3);
            assert!(p.texts.contains(&"latency".to_string()));
        }
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        let frame = Frame::new("t", "x", "y");
        let err = |r: Result<String, String>| r.expect_err("refused");
        assert!(err(lines(&frame, &[])).contains("nothing to plot"));
        assert!(err(lines(&frame, &[line("a", &[])])).contains("nothing to plot"));
        let e = err(lines(&frame, &[line("a", &[(0.0, 1.0), (1.0, f64::NAN)])]));
        assert!(e.contains("series \"a\", point 1: y is NaN"), "{e}");
        let e = err(lines(&frame, &[line("a", &[(f64::INFINITY, 1.0)])]));
        assert!(e.contains("not a finite number"), "{e}");
        let mut log = frame.clone();
        log.log_y = true;
        let e = err(lines(&log, &[line("a", &[(0.0, 0.0)])]));
        assert!(e.contains("logarithmic"), "{e}");
        let mut tiny = frame.clone();
        tiny.width = 10;
        assert!(err(lines(&tiny, &[line("a", &[(0.0, 1.0)])])).contains("width"));

        assert!(err(bars(&frame, &[], &[])).contains("no bars"));
        let nan = Bar {
            label: "n".into(),
            value: f64::NAN,
        };
        assert!(err(bars(&frame, &[nan], &[])).contains("the bar \"n\""));

        assert!(err(histogram(&frame, &[])).contains("nothing to plot"));
        let empty = Bin {
            from: 1.0,
            to: 2.0,
            count: 0.0,
        };
        assert!(err(histogram(&frame, &[empty])).contains("nothing to plot"));
        let backwards = Bin {
            from: 2.0,
            to: 1.0,
            count: 1.0,
        };
        assert!(err(histogram(&frame, &[backwards])).contains("not above"));
        let negative = Bin {
            from: 1.0,
            to: 2.0,
            count: -1.0,
        };
        assert!(err(histogram(&frame, &[negative])).contains("negative"));
        // Finite, but an axis around them would not be.
        let e = err(lines(&frame, &[line("a", &[(0.0, -1e308), (1.0, 1e308)])]));
        assert!(e.contains("too large"), "{e}");
        let huge = Bar {
            label: "h".into(),
            value: f64::MAX,
        };
        assert!(err(bars(&frame, &[huge], &[])).contains("too large"));
        let wide = Bin {
            from: -1e308,
            to: 1e308,
            count: 1.0,
        };
        assert!(err(histogram(&frame, &[wide])).contains("too large"));
        let mut log = frame;
        log.log_x = true;
        let zero = Bin {
            from: 0.0,
            to: 2.0,
            count: 1.0,
        };
        assert!(err(histogram(&log, &[zero])).contains("logarithmic"));
    }

    #[test]
    fn one_value_still_draws() {
        let frame = Frame::new("t", "x", "y");
        let p = parse(&lines(&frame, &[line("a", &[(3.0, 3.0)])]).unwrap());
        assert_eq!(
            p.polylines
                .iter()
                .filter(|(s, _)| *s == hex(SERIES_COLORS[0]))
                .count(),
            1
        );
        let zero = Bar {
            label: "z".into(),
            value: 0.0,
        };
        let p = parse(&bars(&frame, &[zero], &[]).unwrap());
        assert_eq!(p.rects.iter().filter(|f| **f == hex(BAR_COLOR)).count(), 1);
    }

    #[test]
    fn paths_must_be_svg_in_a_directory_that_exists() {
        assert!(check_path("lat.png").unwrap_err().contains("SVG"));
        assert!(check_path("lat").unwrap_err().contains("SVG"));
        assert!(check_path("/no/such/dir/lat.svg")
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_path("lat.SVG").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.svg");
        let file = file.to_str().unwrap();
        write(file, "<svg/>").unwrap();
        assert_eq!(std::fs::read_to_string(file).unwrap(), "<svg/>");
        // A directory in the way of the file.
        let blocked = dir.path().join("b.svg");
        std::fs::create_dir(&blocked).unwrap();
        let e = write(blocked.to_str().unwrap(), "<svg/>").unwrap_err();
        assert!(e.contains("cannot write the plot"), "{e}");
    }

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick(&2000.0), "2000");
        assert_eq!(tick(&0.125), "0.125");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.30000000000000004), "0.3");
        assert_eq!(tick(&-4.0), "-4");
    }
}
