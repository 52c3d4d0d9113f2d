//! Runs the `ringkv-shell` binary with a time limit.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a run printed and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the shell with `args` and `stdin`, killing it after `limit`.
pub fn shell(args: &[&str], stdin: Option<&str>, limit: Duration) -> Run {
    shell_env(args, stdin, limit, &[])
}

/// [`shell`] with environment variables set.
pub fn shell_env(args: &[&str], stdin: Option<&str>, limit: Duration, env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv-shell"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shell binary starts");
    {
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(s) = stdin {
            input
                .write_all(s.as_bytes())
                .expect("stdin takes the script");
        }
    }
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting on the shell") {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringkv-shell {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// What a test reads back from an SVG file, parsed with an XML parser.
#[derive(Debug)]
pub struct Svg {
    /// The text of every `<text>` element, trimmed.
    pub texts: Vec<String>,
    /// (stroke colour in upper case, number of points) of every polyline.
    pub polylines: Vec<(String, usize)>,
    /// The fill colour (upper case) of every rect.
    pub rects: Vec<String>,
    /// The number of circles.
    pub circles: usize,
}

/// A colour as the SVG backend writes it: `#RRGGBB`, upper case.
pub fn hex(c: ringkv_shell::plot::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

impl Svg {
    /// Parses the file at `path`: it must exist, be non-empty, be XML and
    /// have an `<svg>` root in the SVG namespace.
    pub fn read(path: &std::path::Path) -> Svg {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
        assert!(!text.is_empty(), "{} is empty", path.display());
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg"),
            "{}",
            path.display()
        );
        let mut svg = Svg {
            texts: Vec::new(),
            polylines: Vec::new(),
            rects: Vec::new(),
            circles: 0,
        };
        for n in root.descendants().filter(|n| n.is_element()) {
            match n.tag_name().name() {
                "text" => svg.texts.push(n.text().unwrap_or("").trim().to_string()),
                "polyline" => svg.polylines.push((
                    n.attribute("stroke").unwrap_or("").to_uppercase(),
                    n.attribute("points")
                        .unwrap_or("")
                        .split_whitespace()
                        .count(),
                )),
                "rect" => svg
                    .rects
                    .push(n.attribute("fill").unwrap_or("").to_uppercase()),
                "circle" => svg.circles += 1,
                _ => {}
            }
        }
        svg
    }

    /// Whether some `<text>` is exactly `t`.
    pub fn has_text(&self, t: &str) -> bool {
        self.texts.iter().any(|x| x == t)
    }

    /// The bars (rects of the bar colour).
    pub fn bars(&self) -> usize {
        let bar = hex(ringkv_shell::plot::BAR_COLOR);
        self.rects.iter().filter(|f| **f == bar).count()
    }

    /// The number of points of each data line (a polyline in a series
    /// colour), in the order drawn.
    pub fn series(&self) -> Vec<usize> {
        let colours: Vec<String> = ringkv_shell::plot::SERIES_COLORS
            .iter()
            .map(|c| hex(*c))
            .collect();
        self.polylines
            .iter()
            .filter(|(s, _)| colours.contains(s))
            .map(|(_, n)| *n)
            .collect()
    }

    /// The number of points of each reference line (threshold, theory,
    /// even share).
    pub fn references(&self) -> Vec<usize> {
        let grey = hex(ringkv_shell::plot::REFERENCE_COLOR);
        self.polylines
            .iter()
            .filter(|(s, _)| *s == grey)
            .map(|(_, n)| *n)
            .collect()
    }
}
