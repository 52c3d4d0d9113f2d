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
fn axis(values: impl Iterator<Item = f64>, log: bool, from_zero: bool, room: f64) -> Range<f64> {
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
    let x = axis(xs(), frame.log_x, false, 0.05);
    // A legend row is about 5% of the plot's height.
    let y = axis(ys(), frame.log_y, true, 0.1 + 0.07 * series.len() as f64);
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
    );
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
    if !bins.iter().any(|b| b.count > 0.0) {
        return Err("nothing to plot: no bin has a value".into());
    }
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
    let x = axis(bins.iter().flat_map(|b| [b.from, b.to]), false, false, 0.05);
    // The bars fill the x range exactly: no room either side.
    let x = if frame.log_x {
        let lo = bins.iter().map(|b| b.from).fold(f64::INFINITY, f64::min);
        let hi = bins.iter().map(|b| b.to).fold(f64::NEG_INFINITY, f64::max);
        lo..hi
    } else {
        x
    };
    let y = axis(bins.iter().map(|b| b.count), false, true, 0.1);
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
