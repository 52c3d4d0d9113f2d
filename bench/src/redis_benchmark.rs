//! `redis-benchmark` (Debian's `redis-tools`) as a second driver of the
//! cluster benchmark: its command line for one test, and the parsing of
//! its `--csv` output and `--version` line.
//!
//! The cluster binary runs one `redis-benchmark` process per test
//! (`-t set`, then `-t get`, ...), so that the servers' CPU time can be
//! sampled around each test alone. Nothing here starts a process; the
//! binary does (`src/bin/cluster.rs`).

use std::fmt;

/// The tests of `redis-benchmark -t` the driver accepts: the ones whose
/// commands the RESP port serves (`docs/resp.md`). `SET key:__rand_int__
/// <value>`, `GET key:__rand_int__`, `INCR counter:__rand_int__` and `SADD
/// myset element:__rand_int__` (one set, a random member).
pub const TESTS: [&str; 4] = ["set", "get", "incr", "sadd"];

/// redis-benchmark 7 records latencies in a histogram that ends at 3 s
/// (`CONFIG_LATENCY_HISTOGRAM_MAX_VALUE`); a longer one is counted as the
/// last bucket, which prints as 3000.319 ms. A figure at or past this is
/// a lower bound.
pub const LATENCY_CAP_MS: f64 = 3000.0;

/// What one `redis-benchmark` run is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub host: String,
    pub port: u16,
    /// `-c`: parallel connections.
    pub clients: u64,
    /// `-n`: requests in all.
    pub requests: u64,
    /// `-d`: bytes of a SET's value.
    pub data_size: usize,
    /// `-r`: keys are `key:NNNNNNNNNNNN` with NNN uniform below this.
    pub keyspace: u64,
    /// `-P`: requests in flight per connection (1: none pipelined).
    pub pipeline: u64,
    /// `-t`: one of [`TESTS`].
    pub test: String,
}

impl Run {
    /// The arguments of `redis-benchmark` for this run, CSV output.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
            "-c".into(),
            self.clients.to_string(),
            "-n".into(),
            self.requests.to_string(),
            "-d".into(),
            self.data_size.to_string(),
            "-r".into(),
            self.keyspace.to_string(),
            "-P".into(),
            self.pipeline.to_string(),
            "-t".into(),
            self.test.clone(),
            "--csv".into(),
        ]
    }
}

/// Checks a list of tests against [`TESTS`].
pub fn check_tests(tests: &[String]) -> Result<(), String> {
    if tests.is_empty() {
        return Err("no redis-benchmark test given".into());
    }
    for (i, t) in tests.iter().enumerate() {
        if !TESTS.contains(&t.as_str()) {
            return Err(format!(
                "unknown redis-benchmark test {t:?}: expected some of {}",
                TESTS.join(",")
            ));
        }
        if tests[..i].contains(t) {
            return Err(format!("redis-benchmark test {t} named twice"));
        }
    }
    Ok(())
}

/// One row of `redis-benchmark --csv`: a test's throughput and, from
/// redis-benchmark 7 on, its latency figures (milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// As redis-benchmark names it: `SET`, `GET`, `INCR`, `SADD`.
    pub test: String,
    /// Requests per second.
    pub rps: f64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// What `redis-benchmark --csv` printed, split into rows and everything
/// else (error messages such as `Error from server: ...`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub rows: Vec<Row>,
    /// Non-empty lines that are neither the header nor a row.
    pub other: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The fields of one CSV line of redis-benchmark: every field is quoted,
/// none holds a quote or a comma. `None` when the line is not of that form.
fn fields(line: &str) -> Option<Vec<&str>> {
    line.split(',')
        .map(|f| f.strip_prefix('"')?.strip_suffix('"'))
        .collect()
}

/// Parses the output of `redis-benchmark --csv` (stdout, possibly with
/// stderr mixed in). The header (`"test","rps",...`) says which column is
/// which; redis-benchmark 6 has only `test` and `rps`, 7 adds
/// `avg_latency_ms`, `min_latency_ms`, `p50_latency_ms`,
/// `p95_latency_ms`, `p99_latency_ms`, `max_latency_ms`. A row before the
/// header, or one whose rps is not a number, is an error.
pub fn parse_csv(text: &str) -> Result<Output, ParseError> {
    let mut out = Output::default();
    let mut header: Option<Vec<String>> = None;
    for line in text.lines() {
        // A line may start with progress output overwritten by `\r`.
        let line = line.rsplit('\r').next().unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        let Some(cols) = fields(line) else {
            out.other.push(line.to_string());
            continue;
        };
        if cols.first() == Some(&"test") {
            if !cols.contains(&"rps") {
                return Err(ParseError(format!("a CSV header without rps: {line}")));
            }
            header = Some(cols.iter().map(|c| c.to_string()).collect());
            continue;
        }
        let names = header
            .as_ref()
            .ok_or_else(|| ParseError(format!("a CSV row before the header: {line}")))?;
        if cols.len() != names.len() {
            return Err(ParseError(format!(
                "a CSV row of {} fields under a header of {}: {line}",
                cols.len(),
                names.len()
            )));
        }
        let get = |name: &str| -> Result<Option<f64>, ParseError> {
            match names.iter().position(|n| n == name) {
                None => Ok(None),
                Some(i) => cols[i]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Some)
                    .ok_or_else(|| ParseError(format!("{name} is not a number: {line}"))),
            }
        };
        out.rows.push(Row {
            test: cols[0].to_string(),
            rps: get("rps")?.ok_or_else(|| ParseError("no rps column".into()))?,
            avg_ms: get("avg_latency_ms")?,
            p50_ms: get("p50_latency_ms")?,
            p95_ms: get("p95_latency_ms")?,
            p99_ms: get("p99_latency_ms")?,
            max_ms: get("max_latency_ms")?,
        });
    }
    Ok(out)
}

/// The version in `redis-benchmark --version` (`redis-benchmark 7.0.15`,
/// or `redis-benchmark 6.0.16` ...): (major, minor, patch).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let word = word.strip_prefix("v=").unwrap_or(word);
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The fraction of a key space of `keyspace` keys expected to hold a key
/// after `sets` SETs of uniformly random keys: `1 - (1 - 1/k)^sets`.
pub fn expected_coverage(keyspace: u64, sets: u64) -> f64 {
    if keyspace == 0 {
        return 0.0;
    }
    1.0 - (1.0 - 1.0 / keyspace as f64).powf(sets as f64)
}

/// The name redis-benchmark gives key number `i` under `-r`:
/// `key:` and 12 digits.
pub fn key_name(i: u64) -> String {
    format!("key:{i:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_name_every_option() {
        let run = Run {
            host: "127.0.0.1".into(),
            port: 6379,
            clients: 50,
            requests: 1000,
            data_size: 100,
            keyspace: 50_000,
            pipeline: 16,
            test: "set".into(),
        };
        assert_eq!(
            run.args().join(" "),
            "-h 127.0.0.1 -p 6379 -c 50 -n 1000 -d 100 -r 50000 -P 16 -t set --csv"
        );
    }

    #[test]
    fn tests_are_checked() {
        let v = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert!(check_tests(&v("set,get,incr,sadd")).is_ok());
        assert!(check_tests(&v("set,lpush")).is_err());
        assert!(check_tests(&v("set,set")).is_err());
        assert!(check_tests(&[]).is_err());
    }

    #[test]
    fn csv_of_version_7_parses() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                    \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"69686.41\",\"0.475\",\"0.128\",\"0.471\",\"0.671\",\"0.807\",\"2.311\"\n";
        let out = parse_csv(text).unwrap();
        assert_eq!(
            out.rows,
            [Row {
                test: "SET".into(),
                rps: 69686.41,
                avg_ms: Some(0.475),
                p50_ms: Some(0.471),
                p95_ms: Some(0.671),
                p99_ms: Some(0.807),
                max_ms: Some(2.311),
            }]
        );
        assert!(out.other.is_empty());
    }

    #[test]
    fn csv_of_version_6_and_other_lines_parse() {
        let text = "Error from server: ERR Unavailable\n\"test\",\"rps\"\n\"GET\",\"1000.00\"\n";
        let out = parse_csv(text).unwrap();
        assert_eq!(out.rows.len(), 1);
        assert_eq!((out.rows[0].rps, out.rows[0].p99_ms), (1000.0, None));
        assert_eq!(out.other, ["Error from server: ERR Unavailable"]);
        // The error may follow the header on the same line.
        let out = parse_csv("\"test\",\"rps\"Error from server: ERR x\n").unwrap();
        assert!(out.rows.is_empty());
        assert_eq!(out.other.len(), 1);
    }

    #[test]
    fn bad_csv_is_an_error() {
        assert!(parse_csv("\"SET\",\"1\"\n").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n\"SET\",\"x\"\n").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n\"SET\",\"1\",\"2\"\n").is_err());
        assert!(parse_csv("\"test\",\"x\"\n").is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("redis-benchmark 7.0.15\n"), Some((7, 0, 15)));
        assert_eq!(parse_version("redis-benchmark 6.0"), Some((6, 0, 0)));
        assert_eq!(parse_version("redis-benchmark"), None);
    }

    #[test]
    fn coverage_and_key_names() {
        assert_eq!(key_name(42), "key:000000000042");
        assert_eq!(expected_coverage(10, 0), 0.0);
        let c = expected_coverage(50_000, 100_000);
        assert!((c - (1.0 - (-2.0f64).exp())).abs() < 1e-3, "{c}");
    }
}
