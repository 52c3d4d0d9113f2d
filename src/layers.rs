//! The layer check: no module imports from a layer above its own.
//!
//! The crate is layered (see "Layers" in `docs/architecture.md`); this
//! test-only module keeps it so. [`LAYERS`] gives every top-level module
//! (a file `src/x.rs` or a directory `src/x/`) its layer, and the test
//! [`every_import_points_down`] reads every `.rs` file under `src/`, finds
//! every path that starts with `crate::` (in `use` items, grouped
//! `crate::{a, b::c}` imports and inline paths in code, comments, doc
//! comments and string literals left out) and fails, listing each
//! `file:line imports crate::x (layer k) from layer j` where `k > j`.
//!
//! A path to something the crate root re-exports (`crate::NodeId`,
//! `crate::Error`) goes through `lib.rs`, which is layer 5 like every
//! facade, so it counts as an import of layer 5. A file whose top-level
//! module is not in [`LAYERS`] fails the check too: a new module must be
//! given a layer. Paths through `super::` are not followed; they stay
//! inside their own top-level module (a file directly under `src/` has no
//! `super::` outside its test module).
//!
//! The check is strict for test code as well: a `#[cfg(test)]` module may
//! not import upward either. None needs to (the codec's tests use their
//! own stand-in envelope rather than the wire's).

use std::fmt;
use std::path::{Path, PathBuf};

/// Every top-level module of the crate and its layer, lowest first.
pub const LAYERS: &[(&str, u8)] = &[
    // 0: ids, the error type, the codec.
    ("id", 0),
    ("error", 0),
    ("codec", 0),
    ("effect", 0),
    ("log", 0),
    // 1: the pure core.
    ("ring", 1),
    ("version", 1),
    ("crdt", 1),
    ("storage", 1),
    // 2: the protocol machines.
    ("membership", 2),
    ("replication", 2),
    // 3: the wire.
    ("message", 3),
    ("protocol", 3),
    ("net", 3),
    // 4: the node's machines and the client-op service; the simulator.
    ("roles", 4),
    ("sim", 4),
    // 5: actors, front doors, the composed configuration, the facade.
    ("node", 5),
    ("embedded", 5),
    ("client", 5),
    ("config", 5),
    ("bin", 5),
    ("lib", 5),
    ("layers", 5),
];

/// The layer of `lib.rs`, the facade: a path to a root re-export lands
/// there.
const FACADE: u8 = 5;

/// The layer of a top-level module, if it has one.
fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The top-level module of a file, from its path relative to `src/`:
/// `ring/claim.rs` is in `ring`, `codec.rs` in `codec`.
fn module_of(relative: &str) -> &str {
    let first = relative.split('/').next().unwrap_or(relative);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// One import from a layer above the importing file's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The importing file, relative to `src/`.
    pub file: String,
    /// The line of the path, from 1.
    pub line: usize,
    /// The imported top-level name (`crate::<name>`).
    pub imported: String,
    /// The imported name's layer.
    pub imported_layer: u8,
    /// The importing file's layer.
    pub layer: u8,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} imports crate::{} (layer {}) from layer {}",
            self.file, self.line, self.imported, self.imported_layer, self.layer
        )
    }
}

/// Replaces every comment, string literal and character literal of Rust
/// source `src` by spaces, keeping every newline, so that line numbers
/// stay right and no text inside them can look like a path.
fn code_only(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    // Blanks `chars[from..to]`, keeping newlines.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &c in &chars[from..to.min(chars.len())] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let at = |i: usize| chars.get(i).copied();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == Some('/') {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && at(i + 1) == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && at(j + 1) == Some('*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && at(j + 1) == Some('/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c == 'r'
            && matches!(at(i + 1), Some('"') | Some('#'))
            && (i == 0
                || !is_ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i == 1 || !is_ident(chars[i - 2]))))
        {
            // A raw string: r"..." or r#"..."#, any number of hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == Some('#') {
                hashes += 1;
                j += 1;
            }
            if at(j) != Some('"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match at(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|h| at(j + h) == Some('#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let end = if at(i + 1) == Some('\\') {
                (i + 3..chars.len()).find(|&j| chars[j] == '\'')
            } else if at(i + 2) == Some('\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end + 1);
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::<name>` in `code` (comments and literals already
/// blanked), with its line: one per item of a `crate::{..}` group.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let line_at = |i: usize| 1 + chars[..i].iter().filter(|&&c| c == '\n').count();
    let ident_at = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let start = j;
        while j < chars.len() && is_ident(chars[j]) {
            j += 1;
        }
        (chars[start..j].iter().collect::<String>(), j)
    };
    let mut found = Vec::new();
    let needle: Vec<char> = "crate::".chars().collect();
    let mut i = 0;
    while i + needle.len() <= chars.len() {
        let is_path = chars[i..i + needle.len()] == needle[..]
            && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '$'));
        if !is_path {
            i += 1;
            continue;
        }
        let after = i + needle.len();
        let mut j = after;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if chars.get(j) == Some(&'{') {
            // A group: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            while j < chars.len() {
                match chars[j] {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            item_start = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if depth == 1 && item_start && is_ident(c) => {
                        let (name, end) = ident_at(j);
                        found.push((line_at(j), name));
                        item_start = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            let (name, end) = ident_at(after);
            if !name.is_empty() {
                found.push((line_at(after), name));
            }
            i = end.max(after);
        }
    }
    found
}

/// The violations in one file: `relative` is its path under `src/`,
/// `src` its text. A file of a module with no layer is an error.
pub fn check_source(relative: &str, src: &str) -> Result<Vec<Violation>, String> {
    let module = module_of(relative);
    let layer = layer_of(module)
        .ok_or_else(|| format!("{relative}: module `{module}` has no layer in LAYERS"))?;
    let mut violations = Vec::new();
    for (line, name) in crate_paths(&code_only(src)) {
        // Not a module: a root re-export, reached through the facade.
        let imported_layer = layer_of(&name).unwrap_or(FACADE);
        if imported_layer > layer && name != module {
            violations.push(Violation {
                file: relative.to_string(),
                line,
                imported: name,
                imported_layer,
                layer,
            });
        }
    }
    Ok(violations)
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's layering: fails listing every upward import.
    #[test]
    fn every_import_points_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 50, "found only {} files", files.len());
        let mut problems = Vec::new();
        for path in &files {
            let relative = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            match check_source(&relative, &text) {
                Ok(found) => problems.extend(found.iter().map(|v| v.to_string())),
                Err(e) => problems.push(e),
            }
        }
        assert!(
            problems.is_empty(),
            "{} import(s) from a higher layer (see \"Layers\" in docs/architecture.md):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    /// The checker itself finds upward imports in every form, and only
    /// those: so the test above cannot pass by finding nothing.
    #[test]
    fn the_checker_reports_upward_imports_and_nothing_else() {
        let src = r##"//! Mentions crate::node in a doc comment.
use crate::id::NodeId;
use crate::{
    error::Error,
    message::{Envelope, Message},
};
// use crate::config::NodeConfig;
/// [`crate::embedded`] in a doc comment.
fn f() {
    let _ = crate::node::Node::spawn;
    let s = "crate::client in a string";
    let r = r#"crate::sim in a raw string"#;
    let c = '"'; let _ = crate::ring::key_token(b"k", b"b");
    /* crate::roles in a /* nested */ block comment */
    let _ = crate::Error::Shutdown;
}
"##;
        let found = check_source("ring/claim.rs", src).unwrap();
        let shown: Vec<String> = found.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "ring/claim.rs:5 imports crate::message (layer 3) from layer 1",
                "ring/claim.rs:10 imports crate::node (layer 5) from layer 1",
                "ring/claim.rs:15 imports crate::Error (layer 5) from layer 1",
            ]
        );
        // The same source is fine in a layer-5 file.
        assert_eq!(check_source("node/node.rs", src).unwrap(), vec![]);
        // Importing one's own module, or a lower layer, is fine.
        let own = "use crate::ring::Ring;\nuse crate::error::Result;\n";
        assert_eq!(check_source("ring/plan.rs", own).unwrap(), vec![]);
        // A module without a layer is refused.
        assert!(check_source("brand_new/mod.rs", own).is_err());
    }
}
