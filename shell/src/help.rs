//! The shell's help: one entry per API function, shown by `help()` and
//! `help("name")`, and the names the REPL completes. `docs/shell.md` is the
//! long form of the same list.

/// One API function: its name, its forms, and what it does.
pub struct Entry {
    /// The function's name.
    pub name: &'static str,
    /// How it is called.
    pub usage: &'static str,
    /// What it does and returns.
    pub about: &'static str,
}

/// Every API function, in the order `help()` lists them.
pub const ENTRIES: &[Entry] = &[
    Entry { name: "cluster", usage: "cluster(n) | cluster(#{ nodes, n, r, w, engine, vnodes, transport, dir, seed, gossip_ms })",
        about: "Starts nodes in this process and makes them the current target. engine: \"memory\" (default), \"lsm\", \"btree\"; transport: \"memory\" (default) or \"tcp\" (127.0.0.1, with client ports); every fault works on both. n defaults to min(nodes, 3). Returns a Cluster handle." },
    Entry { name: "sim", usage: "sim(nodes, seed) | sim(#{ nodes, seed, n, r, w, vnodes })",
        about: "Starts a deterministic simulation of a cluster (every node's real protocol machines, on virtual time, over a seeded in-process network) and makes it the current target. It takes the same functions as cluster(): data ops, buckets, policies, faults, views, waits, workload(). Requests, sleep() and the waits advance its virtual time, never the wall clock (the ms the waits return are virtual), so a minute of cluster time passes in well under a second and the same script on the same seed prints the same bytes. Not on a simulation: ring changes (join, decommission, leave, remove: its ring is fixed), client ports (client_addrs, connect to it), workload_start, and the options engine, transport, dir, gossip_ms. n defaults to min(nodes, 3), vnodes to 16. Returns a Cluster handle." },
    Entry { name: "connect", usage: "connect(\"host:port\") | connect(\"host:port\", #{ user, password, tls_ca, server_name })",
        about: "Connects to a running cluster's client port and makes it the current target; user and password authenticate (a ringkv-node requires them unless started with --no-client-auth, and refuses ops beyond the user's role: read, readwrite, admin). tls_ca, the path of a PEM file of the certificates to trust, connects over TLS to a node started with --client-tls-cert; server_name is the name its certificate must carry when not the host dialed. Data ops, buckets and views work; faults need cluster(). The nodes know none of this shell's policies: a get from a \"script:NAME\" bucket gets the siblings and the shell resolves them (resolved_by: \"shell\")." },
    Entry { name: "select", usage: "select(handle)", about: "Makes a handle from cluster(), sim() or connect() the current target again." },
    Entry { name: "nodes", usage: "nodes()", about: "The ids of every node of the embedded cluster or simulation, killed ones included (not those that left or were removed)." },
    Entry { name: "live_nodes", usage: "live_nodes()", about: "The ids of the running nodes (paused ones included, killed ones not)." },
    Entry { name: "client_addrs", usage: "client_addrs()", about: "The client port of each node of a tcp cluster, as a map from id to \"host:port\" (what connect() takes). A simulation has no client ports: it fails there." },
    Entry { name: "put", usage: "put(key, value) | put(key, value, #{ bucket, w, context, via, sloppy, timeout_ms })",
        about: "Writes a value. With the context of an earlier get the write replaces what that get saw; without one it is a blind write, kept beside concurrent values. Returns #{ context, receipt }." },
    Entry { name: "get", usage: "get(key) | get(key, #{ bucket, r, repair, via, sloppy, timeout_ms })",
        about: "Reads a key. Returns #{ found, value, siblings, context, receipt }: value is () when absent or when there are siblings (each #{ value, timestamp_ms, node }). repair: \"async\" (default), \"before\", \"off\". policy_error is set when a script policy failed and the siblings were kept; resolved_by is \"shell\" when, on a connection, the shell ran the bucket's script policy. Put with the result's context to replace what it saw." },
    Entry { name: "delete", usage: "delete(key) | delete(key, #{ bucket, w, context, via })", about: "Deletes a key (a tombstone). Returns #{ context, receipt }." },
    Entry { name: "local_get", usage: "local_get(node, key) | local_get(node, key, #{ bucket })",
        about: "What one node's own store holds for a key: no quorum, no repair. Shows replication, hinted handoff and read repair at work." },
    Entry { name: "holders", usage: "holders(key) | holders(key, #{ bucket })",
        about: "The running nodes whose own store holds the key (a value or siblings; a tombstone does not count), by asking each with local_get. Shows where replicas are, e.g. that every key is on exactly n nodes after a ring change. Needs an embedded cluster or a simulation." },
    Entry { name: "counter_add", usage: "counter_add(key, by) | counter_add(key, by, #{ bucket, w, via })",
        about: "Adds to a counter in a bucket whose policy is \"pncounter\" or \"gcounter\"; returns the new value." },
    Entry { name: "counter_get", usage: "counter_get(key) | counter_get(key, #{ bucket, r, via })", about: "Reads a counter." },
    Entry { name: "set_add", usage: "set_add(key, [members]) | set_add(key, [members], #{ bucket, via })",
        about: "Adds members to a set in a bucket whose policy is \"orset\", \"gset\" or \"2pset\"; returns the members." },
    Entry { name: "set_remove", usage: "set_remove(key, [members]) | set_remove(key, [members], #{ .. })", about: "Removes members from an \"orset\" or \"2pset\" set; returns the members." },
    Entry { name: "set_members", usage: "set_members(key) | set_members(key, #{ bucket, r, via })", about: "Reads a set's members." },
    Entry { name: "bucket", usage: "bucket(name)", about: "A bucket's properties: #{ n, r, w, policy, sloppy_quorum, timeout_ms }." },
    Entry { name: "set_bucket", usage: "set_bucket(name, #{ n, r, w, policy, sloppy_quorum, timeout_ms })",
        about: "Changes the given properties cluster-wide (on an embedded cluster it waits until every node knows). policy: \"lww\", \"siblings\", \"pncounter\", \"gcounter\", \"orset\", \"gset\", \"2pset\", \"lwwregister\" or \"script:NAME\"." },
    Entry { name: "policy", usage: "policy(name, |siblings| ...) | policy(name, Fn(\"fn_name\"))",
        about: "Defines a conflict policy: a function from the siblings (#{ value, timestamp_ms, node } each) to one value (() deletes). A bucket uses it with policy \"script:NAME\": embedded nodes run it on reads; on a connection the shell runs it on the siblings a get returns. It runs sandboxed (operation, call depth and size limits, no eval, no modules); if it fails the read returns the siblings and the failure is reported. Returns \"script:NAME\"." },
    Entry { name: "policies", usage: "policies()", about: "The names of the policies defined." },
    Entry { name: "policy_failures", usage: "policy_failures()", about: "The last 100 policy failures, #{ policy, error } each." },
    Entry { name: "kill", usage: "kill(node)", about: "Crashes a node: no flush, no goodbye. On a simulation its store survives (as under sync = always)." },
    Entry { name: "restart", usage: "restart(node)", about: "Starts a killed node again with its data directory (empty with the memory engine); it rejoins through a running node. On a simulation it comes back with its store and returns once it sees a running peer ALIVE." },
    Entry { name: "pause", usage: "pause(node, ms)", about: "Freezes a node's thread for ms (like SIGSTOP or a GC pause); returns at once. On a simulation the node resumes ms of virtual time later (pausing it again moves that), and a request through it waits until then." },
    Entry { name: "partition", usage: "partition([nodes], [nodes])", about: "Cuts every link between the two sides, both ways. Adds to earlier partitions." },
    Entry { name: "partition_one_way", usage: "partition_one_way([from], [to])", about: "Cuts the links from one side to the other only: frames back still arrive. Adds to earlier partitions." },
    Entry { name: "heal", usage: "heal()", about: "Removes every partition, drop rate and delay." },
    Entry { name: "drop_rate", usage: "drop_rate(p)", about: "Loses each frame between nodes with probability p, 0 to 1 (seeded by the cluster's seed)." },
    Entry { name: "delay", usage: "delay(ms) | delay(min_ms, max_ms)", about: "Delays each frame between nodes by a time drawn from min..max; frames on one link stay in order." },
    Entry { name: "fault_counters", usage: "fault_counters()", about: "What the faults did since the cluster started: #{ blocked, dropped, delayed } frames (blocked: by partitions; dropped: by the drop rate). On a simulation every frame takes 0.1 to 1 ms even when healthy, so delayed counts nearly every frame." },
    Entry { name: "skew", usage: "skew(node, ms)", about: "On a simulation: sets the node's wall clock off by ms (either way), as a badly synchronised host's; last-writer-wins and sibling timestamps then follow the skewed clock. The nodes of an embedded cluster share this machine's clock, so it fails there." },
    Entry { name: "join", usage: "join() | join(id)",
        about: "Starts a new node (the next id never used, or the given one) that joins the embedded cluster through a running node; returns its id once every running node sees it ALIVE. It claims its share of the ring and pulls those ranges from their owners while requests go on; wait_rebalanced() waits for that. Needs an embedded cluster (a simulation's ring is fixed)." },
    Entry { name: "decommission", usage: "decommission(node)",
        about: "Asks the node to leave the ring: the nodes taking its ranges pull them, then the ring no longer holds it; the node keeps running. Returns at once (wait_rebalanced() waits). On a connection, only the node connected to can be asked. Not on a simulation (its ring is fixed)." },
    Entry { name: "leave", usage: "leave(node) | leave(node, ms)",
        about: "The node leaves gracefully: it decommissions, waits until its ranges moved, announces LEFT and stops. Waits up to ms (default 60000), else throws while the leave goes on. The node is then gone: nodes() no longer lists it and its id is never reused. Needs an embedded cluster (a simulation's ring is fixed)." },
    Entry { name: "remove", usage: "remove(node)",
        about: "Takes a dead (killed) node out of the ring: its ranges are copied again from the surviving replicas. Refused for a running node (use leave). On an embedded cluster it first waits (up to 30 s) until a running node sees the node DOWN and no other change is in progress; returns once the removal has begun. A killed node the ring no longer holds (decommissioned first) is only forgotten. Not on a simulation (its ring is fixed)." },
    Entry { name: "forget", usage: "forget(node)",
        about: "Forgets a node gone for good (a machine lost with its disk): it becomes LEFT in every node's membership, is dropped from their tables after left_grace (1 hour), and the lowest live node removes it from the ring, its ranges copied again from the surviving replicas (wait_rebalanced() waits). A node that is in fact running refutes it. Refused for the node connected to itself and for a node it does not know. On an embedded cluster the node must be killed first; returns once a running node has marked it LEFT. Needs admin on a connection. Not on a simulation (its ring is fixed)." },
    Entry { name: "transfers", usage: "transfers()",
        about: "A table of the range transfers into each running node (on a connection: into the node connected to): node, id, range, sources, state (queued, running, waiting_for_source, done, failed), keys, bytes, batches, elapsed_ms. Empty on a simulation, whose ring never changes." },
    Entry { name: "rebalance_status", usage: "rebalance_status()",
        about: "A table, one row per running node: its ring epoch and members, the change it has in progress (\"join 6\", \"leave 2\", \"remove 3\") with moves_done of moves, its incoming transfers still active, and keys_in, the copies it received by transfer since it started. The title says whether the ring is at rest." },
    Entry { name: "wait_rebalanced", usage: "wait_rebalanced() | wait_rebalanced(ms)",
        about: "Waits until no running node has a ring change in progress and all share one ring holding exactly the nodes expected (joined, not left or removed); on a connection, until the node connected to has no change in progress. Returns the ms waited; throws after ms (default 60000) with rebalance_status(). Old owners drop the ranges they gave away 5 s later." },
    Entry { name: "status", usage: "status() | status(observer)",
        about: "A table of the nodes: state and phi as the observer (default: the first running node) sees them, and each node's own keys and hints." },
    Entry { name: "ring", usage: "ring()", about: "A table of the ring: each node's virtual nodes and share of the token space." },
    Entry { name: "preference_list", usage: "preference_list(key) | preference_list(key, #{ bucket, via })",
        about: "A table of the nodes that hold a key now, in order, with the primary each fallback stands in for." },
    Entry { name: "views", usage: "views(node)",
        about: "How every other running node sees the node now: a map from observer id to \"Alive\", \"Suspect\", \"Down\" or \"Left\". Does not ask the node itself, so it answers while the node is paused." },
    Entry { name: "phi", usage: "phi(node) | phi(observer, node)",
        about: "The phi-accrual suspicion of the node now: as every other running node's detector rates it (a map from observer id to phi), or as one observer's does (a number). () when the observer has no entry for it; 0 while the observer holds it DOWN (its detector starts again when the node is back) and for a node it does not monitor. Asks the observers, not the node, so it answers while the node is paused. Sample it in a loop with now_ms() and draw the trace with plot_phi()." },
    Entry { name: "now_ms", usage: "now_ms()",
        about: "The current target's clock in ms: virtual time on a simulation, the wall clock (since the shell first read it) otherwise. For time axes: let t0 = now_ms(); ... #{ t_ms: now_ms() - t0, .. }." },
    Entry { name: "wait_state", usage: "wait_state(node, state, ms)",
        about: "Waits until every other running node sees the node in that state (\"Alive\", \"Suspect\", \"Down\", \"Left\", or an array of them); returns the ms waited, throws after ms." },
    Entry { name: "wait_seen", usage: "wait_seen(observer, node, state, ms)",
        about: "Waits until the observer sees the node in that state (\"Alive\", \"Suspect\", \"Down\", \"Left\", or an array of them); returns the ms waited, throws after ms." },
    Entry { name: "wait_settled", usage: "wait_settled(ms)", about: "Waits until every running node sees every other running node Alive; returns the ms waited (virtual on a simulation), throws after ms." },
    Entry { name: "wait_hints", usage: "wait_hints(ms)", about: "Waits until no running node holds hints (hinted handoff is done); returns the ms waited (virtual on a simulation), throws after ms." },
    Entry { name: "sleep", usage: "sleep(ms)", about: "Sleeps (Ctrl-C at the prompt ends it). On a simulation, ms of its virtual time pass instead, at once." },
    Entry { name: "check", usage: "check(condition, \"what it shows\")", about: "Prints \"ok: ...\" if the condition holds, else throws (a script then exits with status 1)." },
    Entry { name: "workload", usage: "workload(#{ ops, keys, read_ratio, clients, value_size, bucket, seed, interval_ms })",
        about: "Runs concurrent clients (a progress bar on a terminal; Ctrl-C at the prompt stops it); returns #{ ops, ok, errors, reads, writes_acked, seconds, throughput, p50_ms, p90_ms, p99_ms, max_ms, keys_checked, unverified, lost, lost_keys, first_error, histogram, timeline }: lost counts acknowledged writes that a read-back did not find; histogram is the latencies in about 30 bins of equal width on a log scale, each #{ from_ms, to_ms, count }; timeline is, per interval of interval_ms (default: about a twentieth of the run) in which requests ended, #{ t_s, ops, p50_ms, p90_ms, p99_ms, max_ms } (t_s the interval's end). plot_latency() and plot_percentiles() draw them. On a simulation the clients take turns, one request at a time, on virtual time (latencies, seconds and throughput are virtual), so the run replays." },
    Entry { name: "workload_start", usage: "workload_start(#{ ops, keys, read_ratio, clients, value_size, bucket, seed, interval_ms })",
        about: "Starts the same clients as workload() in the background and returns a Workload handle at once, so that a script can kill, partition or grow the cluster under load. They stop after ops requests or at workload_stop(). Not on a simulation: background clients would race the script on the wall clock (use workload() between faults)." },
    Entry { name: "workload_progress", usage: "workload_progress(w)", about: "The requests a background workload has done so far." },
    Entry { name: "workload_stop", usage: "workload_stop(w)",
        about: "Stops a background workload's clients after their current request, checks its history and returns the same map as workload() (ops is the requests done)." },
    Entry { name: "gossip_rounds", usage: "gossip_rounds() | gossip_rounds(#{ nodes, seeds, relay, push_pull })",
        about: "Measures how many gossip rounds a change (a graceful leave) takes to reach every node, for each cluster size in nodes (default [10, 20, 50, 100]; at most 1000), over seeds runs each (default 5), on the membership simulator: the real membership machines, synchronous rounds, a perfect network, virtual time. relay: the peers news is relayed to at once (default 0, rounds of gossip alone; nodes relay to 3, which reaches everyone within 2 rounds); push_pull (default true; false: push only). Returns a table: nodes, seeds, min, p50, max, and theory (log2 N + ln N, push to one peer per round). The same every run; 100 nodes take a fraction of a second per seed in a release build. Needs no cluster. plot_gossip() draws it." },
    Entry { name: "plot_series", usage: "plot_series(#{ name: #{ x: [..], y: [..] }, .. }, \"file.svg\") | plot_series(series, file, #{ title, x_label, y_label, width, height, log_x, log_y, marks, markers })",
        about: "Draws named lines into an SVG file and returns its path. Each series is #{ x: [..], y: [..] }, an array of [x, y] pairs, or an array of y values (x = 0, 1, ..); a () y is skipped. marks: #{ name: y } adds grey horizontal reference lines; markers: true dots every point. Options common to every plot: title, x_label, y_label, width and height (pixels, default 800 x 500), log_x, log_y. The file must end in .svg and its directory exist (relative paths are from the current directory; see plot_dir()). An empty data set, a value that is not a finite number, an unknown option: an error, and no file." },
    Entry { name: "plot_phi", usage: "plot_phi([#{ t_ms, phi }, ..], \"file.svg\") | plot_phi(trace, file, #{ threshold, title, .. })",
        about: "Draws phi against time: each sample's phi is a number (one line) or the map phi(node) returns (a line per observer). A grey line marks threshold (default 8, the detector's; () for none). Returns the path." },
    Entry { name: "plot_latency", usage: "plot_latency(w, \"file.svg\") | plot_latency(w, file, #{ title, log_x, .. })",
        about: "Draws the latency histogram of a workload result (w.histogram), on a logarithmic latency axis unless log_x: false; the default title gives the requests, p50 and p99. Returns the path." },
    Entry { name: "plot_percentiles", usage: "plot_percentiles(w, \"file.svg\") | plot_percentiles(w, file, #{ title, log_y, .. })",
        about: "Draws a workload's p50, p90, p99 and max latency per interval (w.timeline) against time: a stall, a join or a partition during workload_start()..workload_stop() shows as a bump. Returns the path." },
    Entry { name: "plot_ring", usage: "plot_ring(ring(), \"file.svg\") | plot_ring(ring(), file, #{ title, .. })",
        about: "Draws each node's share of the ring (the share_pct column of ring(), or a map from node to share in %) as bars, with the even share 100 / nodes as a grey line. Returns the path." },
    Entry { name: "plot_bars", usage: "plot_bars(#{ label: number, .. }, \"file.svg\") | plot_bars(table, file, #{ label, value, marks, title, .. })",
        about: "Draws bars: a map from label to number, or a table (or array of maps) with the columns named by label and value (e.g. plot_bars(status(), \"keys.svg\", #{ label: \"node\", value: \"keys\" })). marks: #{ name: y } adds grey reference lines. Returns the path." },
    Entry { name: "plot_gossip", usage: "plot_gossip(gossip_rounds(..), \"file.svg\") | plot_gossip(t, file, #{ title, log_x, .. })",
        about: "Draws what gossip_rounds() measured: p50 and max rounds against N (a logarithmic N axis unless log_x: false), with the theory log2 N + ln N as a grey line. Returns the path." },
    Entry { name: "plot_dir", usage: "plot_dir()",
        about: "A directory for plots, created if missing: $RINGKV_PLOT_DIR when set, else ringkv-plots in the system's temporary directory. The scripts in scripts/ write their plots there: plot_ring(ring(), plot_dir() + \"/ring.svg\")." },
    Entry { name: "table", usage: "table([#{..}, ..])", about: "Makes a table of maps, printed aligned. Tables have .rows, .len(), t[i] and .column(name)." },
    Entry { name: "help", usage: "help() | help(\"name\")", about: "This list, or one function." },
];

/// `help()`: every function with its usage.
pub fn overview() -> String {
    let mut s = String::from(
        "ringkv-shell: rhai with a cluster API. help(\"name\") for one function; docs/shell.md for more.\n\n",
    );
    for e in ENTRIES {
        s.push_str(&format!("  {}\n", e.usage));
    }
    s.push_str("\nAt the prompt: Tab completes, an unfinished input continues on the next line, Ctrl-C cancels a line or stops a running input, Ctrl-D exits.");
    s
}

/// `help("name")`.
pub fn topic(name: &str) -> String {
    match ENTRIES.iter().find(|e| e.name == name) {
        Some(e) => format!("{}\n\n{}", e.usage, e.about),
        None => {
            let near: Vec<&str> = ENTRIES
                .iter()
                .filter(|e| e.name.contains(name) || name.contains(e.name))
                .map(|e| e.name)
                .collect();
            if near.is_empty() {
                format!("no function {name:?}; help() lists them all")
            } else {
                format!("no function {name:?}; did you mean {}?", near.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_in_the_overview_and_findable() {
        let all = overview();
        for e in ENTRIES {
            assert!(all.contains(e.usage));
            assert!(topic(e.name).starts_with(e.usage));
        }
        assert!(topic("partitio").contains("partition"));
    }

    /// Every function the API registers has an entry, and docs/shell.md
    /// shows every entry being called.
    #[test]
    fn help_and_the_docs_cover_every_api_function() {
        let shell = crate::Shell::new(false);
        // The API's types' plumbing, not functions a person calls.
        let plumbing = [
            "to_string",
            "to_debug",
            "len",
            "column",
            "get$rows",
            "index$get$",
        ];
        let mut missing = Vec::new();
        for sig in shell.engine().gen_fn_signatures(false) {
            let name = sig.split('(').next().unwrap_or("").trim().to_string();
            if !plumbing.contains(&name.as_str()) && !ENTRIES.iter().any(|e| e.name == name) {
                missing.push(sig);
            }
        }
        assert!(missing.is_empty(), "no help entry for {missing:?}");
        let docs = include_str!("../../docs/shell.md");
        for e in ENTRIES {
            assert!(
                docs.contains(&format!("{}(", e.name)),
                "docs/shell.md never calls {}",
                e.name
            );
        }
    }
}
