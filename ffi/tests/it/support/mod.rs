//! What the C and C++ tests share: the system compilers (with the
//! sanitizers when they work here), the library the build produced, runs
//! with a timeout, and a cluster of real `ringkv-node` processes.
//!
//! Guarantee: no child outlives a test. Programs are killed when their
//! timeout passes; node processes are killed when the [`NodeCluster`]
//! drops, including while a failing test unwinds.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one compiler run may take.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long one example or test program may run. An embedded cluster
/// starts in well under a second; this allows for a machine busy building.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The crate's directory (`ffi/`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`, where cargo put this test and the libraries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The static library this build produced. `cargo test` builds the
/// library as the tests' dependency into `target/<profile>/deps` (a
/// library with a `staticlib` type gets no hash in its name); only a
/// `cargo build` copies it up to `target/<profile>`, which may then be an
/// older build, so the `deps` one comes first.
pub fn staticlib() -> PathBuf {
    built_library("libringkv_ffi.a")
}

/// The library file `name` of this build: `target/<profile>/deps` first
/// (see [`staticlib`]).
fn built_library(name: &str) -> PathBuf {
    let candidates = [
        profile_dir().join("deps").join(name),
        profile_dir().join(name),
    ];
    match candidates.iter().find(|p| p.exists()) {
        Some(lib) => lib.clone(),
        None => panic!(
            "{name} is missing from {} and its deps/: cargo builds it with the tests",
            profile_dir().display()
        ),
    }
}

/// Where C++ programs find `rust/cxx.h` and the bridge's header: the
/// stable copy the build script makes in `target/<profile>/include` (the
/// path `docs/ffi.md` tells C++ users), checked against cxx-build's own
/// output by `header::`.
pub fn cxx_include() -> PathBuf {
    profile_dir().join("include")
}

/// Runs `cmd` to completion within `limit`; kills it past that. Returns
/// its output, or why it could not run.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    // Drain both pipes on threads so that a chatty child never blocks.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default().into_bytes(),
        stderr: err.join().unwrap_or_default().into_bytes(),
    })
}

fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    })
}

/// The sanitizer flags to build with: `-fsanitize=address,undefined` when
/// the compiler builds and runs a program with them here, else none (with
/// a note on stderr).
pub fn sanitizer_flags() -> &'static [&'static str] {
    static FLAGS: OnceLock<Vec<&'static str>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let src = dir.path().join("probe.c");
        let exe = dir.path().join("probe");
        std::fs::write(&src, "int main(void) { return 0; }\n").expect("writing the probe");
        let flags = [
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
        ];
        let mut cc = Command::new("cc");
        cc.args(flags).arg(&src).arg("-o").arg(&exe);
        let built = run_with_timeout(cc, COMPILE_TIMEOUT).is_ok_and(|o| o.status.success());
        let ran = built
            && run_with_timeout(Command::new(&exe), RUN_TIMEOUT).is_ok_and(|o| o.status.success());
        if ran {
            flags.to_vec()
        } else {
            eprintln!("note: cc cannot build and run with ASan and UBSan here; building without");
            Vec::new()
        }
    })
}

/// The libraries a program linking the static library needs besides it.
pub const SYSTEM_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// The shared library this build produced (`libringkv_ffi.so`), found as
/// [`staticlib`] is: `deps` first.
pub fn shared_lib() -> PathBuf {
    built_library("libringkv_ffi.so")
}

/// How a test program links the library.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// `libringkv_ffi.a`, the way `docs/ffi.md` shows first: what the
    /// examples' tests use. Linking the 190 MB archive of a test build
    /// takes the linker about 2 s of CPU per program.
    Static,
    /// `libringkv_ffi.so`, found at run time through an rpath: 0.05 s to
    /// link, so the C tests that are not about linking use it.
    Shared,
}

/// The linker arguments for `link`.
fn library_args(link: Link) -> Vec<std::ffi::OsString> {
    match link {
        Link::Static => vec![staticlib().into()],
        Link::Shared => {
            let lib = shared_lib();
            let dir = lib.parent().expect("the library has a directory");
            let mut rpath = std::ffi::OsString::from("-Wl,-rpath,");
            rpath.push(dir);
            vec!["-L".into(), dir.into(), "-l:libringkv_ffi.so".into(), rpath]
        }
    }
}

/// Compiles the C file `src` against `include/ringkv.h` and the shared
/// library into `exe`, with warnings as errors and the sanitizers.
pub fn build_c(src: &Path, exe: &Path) {
    build_c_linked(src, exe, Link::Shared);
}

/// [`build_c`], linking the library as `link` says.
pub fn build_c_linked(src: &Path, exe: &Path, link: Link) {
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(sanitizer_flags())
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(src)
        .args(library_args(link))
        // The C++ bridge lives in the same library.
        .arg("-lstdc++")
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(exe);
    compile(cc);
}

/// Compiles the C file `src` as C++ (`-x c++`) against
/// `include/ringkv.h` and the shared library: the header must serve C++
/// programs that use the C ABI too.
pub fn build_c_as_cpp(src: &Path, exe: &Path) {
    let mut cxx = Command::new("c++");
    cxx.args(["-std=c++17", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(sanitizer_flags())
        .arg("-I")
        .arg(crate_dir().join("include"))
        .args(["-x", "c++"])
        .arg(src)
        .args(["-x", "none"])
        .args(library_args(Link::Shared))
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(exe);
    compile(cxx);
}

/// Compiles the C++ file `src` against the cxx bridge's header and the
/// static library into `exe` (the bridge's C++ side is in the archive
/// only, not in the shared library).
pub fn build_cpp(src: &Path, exe: &Path) {
    let mut cxx = Command::new("c++");
    cxx.args(["-std=c++17", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(sanitizer_flags())
        .arg("-I")
        .arg(cxx_include())
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(src)
        .arg(staticlib())
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(exe);
    compile(cxx);
}

fn compile(cmd: Command) {
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(cmd, COMPILE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "compiling failed: {shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a built program with `args`; returns its stdout after asserting
/// that it exited 0 (with its output in the failure message).
pub fn run_ok(exe: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    // Leak checking stays on (LSan is part of ASan on Linux): every handle
    // the programs create is freed and the library's threads are joined.
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    let out = run_with_timeout(cmd, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        exe.display(),
        out.status
    );
    stdout
}

/// Asserts that `output` has each of `lines` as a whole line.
pub fn assert_lines(output: &str, lines: &[&str]) {
    for want in lines {
        assert!(
            output.lines().any(|l| l == *want),
            "missing line {want:?} in:\n{output}"
        );
    }
}

/// The `ringkv-node` binary of this workspace, in the target directory
/// this test was built in (whatever CARGO_TARGET_DIR said): the one the
/// integration tests' package builds from `src/bin/ringkv-node.rs` under
/// the name `ringkv-node-under-test` (`tests/Cargo.toml`).
///
/// `cargo test --workspace` has just built it, with the features of the
/// whole workspace: then it is newer than every source file of the root
/// crate, and it is used as it is. Otherwise (`cargo test -p ringkv-ffi`,
/// or sources changed since) it is built, once per test binary, with
/// `cargo build --profile test -p ringkv-tests --bin
/// ringkv-node-under-test`. Building it again in the workspace case would
/// not be wrong, only slow: that build resolves features without the
/// workspace's dev-dependencies and so recompiles the library.
pub fn node_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = profile_dir()
            .parent()
            .expect("target/<profile> has a parent")
            .to_path_buf();
        let bin = target.join("debug").join("ringkv-node-under-test");
        let root = crate_dir()
            .parent()
            .expect("ffi/ is in the workspace")
            .to_path_buf();
        if is_newer_than_sources(&bin, &root) {
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--profile",
            "test",
            "-p",
            "ringkv-tests",
            "--bin",
            "ringkv-node-under-test",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target);
        let out = run_with_timeout(cmd, Duration::from_secs(900)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "building ringkv-node failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Whether `bin` exists and is newer than every file the root crate's
/// binary is built from (its `src/`, `Cargo.toml`, `Cargo.lock`).
fn is_newer_than_sources(bin: &Path, root: &Path) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        let mut latest = meta.modified().ok()?;
        for entry in std::fs::read_dir(path).ok()? {
            latest = latest.max(newest(&entry.ok()?.path())?);
        }
        Some(latest)
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return false;
    };
    ["src", "Cargo.toml", "Cargo.lock"]
        .iter()
        .all(|p| newest(&root.join(p)).is_some_and(|t| t <= built))
}

/// A cluster of `ringkv-node` processes on 127.0.0.1, ports picked by the
/// OS. Node 1 founds it; the others join through node 1.
pub struct NodeCluster {
    children: Vec<Child>,
    /// Each node's client address, node 1 first.
    pub client_addrs: Vec<String>,
    root: tempfile::TempDir,
}

/// The user and password of the admin every [`NodeCluster`] has.
pub const ADMIN: (&str, &str) = ("admin", "ffi test admin password");

impl NodeCluster {
    /// Starts `n` nodes and waits for each one's ready line.
    pub fn start(n: u64) -> NodeCluster {
        NodeCluster::start_with(n, &[])
    }

    /// As [`NodeCluster::start`]; when `client_port_names` is not empty,
    /// the client ports speak only TLS, with one certificate naming them
    /// (from `ringkv-node certs --client-port NAME ...`, issued by the
    /// cluster's CA, [`NodeCluster::ca_pem`]).
    pub fn start_with(n: u64, client_port_names: &[&str]) -> NodeCluster {
        let bin = node_bin();
        let root = tempfile::Builder::new()
            .prefix("ringkv-ffi-nodes-")
            .tempdir()
            .expect("a temporary directory");
        let secret = root.path().join("secret");
        std::fs::write(&secret, "ringkv ffi test cluster secret\n").expect("writing the secret");
        let mut cluster = NodeCluster {
            children: Vec::new(),
            client_addrs: Vec::new(),
            root,
        };
        // Links between the nodes are TLS, with certificates from the
        // binary's own `certs` command.
        let certs = cluster.root.path().join("certs");
        let made = Command::new(&bin)
            .arg("certs")
            .arg("--dir")
            .arg(&certs)
            .args(["--cluster", "ringkv-ffi-test"])
            .args((1..=n).map(|id| id.to_string()))
            .args(
                client_port_names
                    .iter()
                    .flat_map(|name| ["--client-port", name]),
            )
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        assert!(
            made.status.success(),
            "ringkv-node certs failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        // The client ports require users: one admin, made by the binary's
        // own `users add` (at a test's argon2 cost).
        let users = cluster.root.path().join("users.toml");
        let mut add = Command::new(&bin)
            .args(["users", "add", "--file"])
            .arg(&users)
            .args([
                "--name",
                ADMIN.0,
                "--role",
                "admin",
                "--memory-kib",
                "64",
                "--passes",
                "1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        {
            use std::io::Write;
            let mut stdin = add.stdin.take().expect("stdin is piped");
            writeln!(stdin, "{}", ADMIN.1).expect("writing the password");
        }
        let added = add.wait_with_output().expect("users add ends");
        assert!(
            added.status.success(),
            "ringkv-node users add failed: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let mut first_peer = None;
        for id in 1..=n {
            let dir = cluster.root.path().join(format!("node-{id}"));
            let log = cluster.root.path().join(format!("node-{id}.stderr"));
            let mut cmd = Command::new(&bin);
            cmd.args(["--id", &id.to_string()])
                .args(["--listen", "127.0.0.1:0", "--client-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(&dir)
                .arg("--secret-file")
                .arg(&secret)
                .args(["--cluster", "ringkv-ffi-test"])
                .args(["--gossip-interval-ms", "100", "--vnodes", "16"])
                .arg("--peer-ca")
                .arg(certs.join("ca.pem"))
                .arg("--peer-cert")
                .arg(certs.join(format!("node-{id}.pem")))
                .arg("--peer-key")
                .arg(certs.join(format!("node-{id}.key")))
                .arg("--users-file")
                .arg(&users);
            if !client_port_names.is_empty() {
                cmd.arg("--client-tls-cert")
                    .arg(certs.join("client-port.pem"))
                    .arg("--client-tls-key")
                    .arg(certs.join("client-port.key"));
            }
            if let Some(peer) = &first_peer {
                cmd.args(["--seed", &format!("1@{peer}")]);
            }
            let stderr = std::fs::File::create(&log).expect("creating a node log");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let stdout = child.stdout.take();
            cluster.children.push(child);
            let line = first_line(stdout, READY_TIMEOUT).unwrap_or_else(|why| {
                panic!(
                    "node {id} did not become ready: {why}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            let (peer, client) = parse_ready(&line, id)
                .unwrap_or_else(|| panic!("node {id}: not a ready line: {line:?}"));
            first_peer.get_or_insert(peer);
            cluster.client_addrs.push(client);
        }
        cluster
    }

    /// The cluster CA's certificate (`ca.pem`), which issued the client
    /// port certificate of a cluster started with client port names.
    pub fn ca_pem(&self) -> PathBuf {
        self.root.path().join("certs").join("ca.pem")
    }

    /// Kills node `id` (1-based) with SIGKILL and reaps it: it gets no
    /// chance to close anything itself; the kernel closes its sockets.
    pub fn kill(&mut self, id: usize) {
        let child = &mut self.children[id - 1];
        child.kill().expect("killing a node");
        let _ = child.wait();
    }

    /// The node logs, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.children.len())
            .map(|id| {
                let log = self.root.path().join(format!("node-{id}.stderr"));
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- node {id} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first line of `stdout`, within `limit`.
fn first_line(
    stdout: Option<std::process::ChildStdout>,
    limit: Duration,
) -> Result<String, String> {
    let stdout = stdout.ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
        // The reader ends here; the node's later stdout (none expected) is
        // dropped with the pipe.
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => Err("stdout closed before a ready line".into()),
        Ok(Err(e)) => Err(format!("reading stdout: {e}")),
        Err(_) => Err(format!("no ready line within {limit:?}")),
    }
}

/// `ready node=<id> peer=<addr> client=<addr>` -> (peer, client).
fn parse_ready(line: &str, id: u64) -> Option<(String, String)> {
    let mut words = line.trim_end().split(' ');
    if words.next()? != "ready" || words.next()? != format!("node={id}") {
        return None;
    }
    let peer = words.next()?.strip_prefix("peer=")?.to_string();
    let client = words.next()?.strip_prefix("client=")?.to_string();
    Some((peer, client))
}
