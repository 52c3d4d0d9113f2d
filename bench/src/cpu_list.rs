//! CPU lists in the syntax of `taskset -c` and of the kernel's
//! `Cpus_allowed_list` (`0`, `0-1`, `0,2-3`), and the affinity calls that
//! pin a process to one: how the cluster benchmark runs its servers, and
//! optionally itself, on chosen CPUs, so that one run per CPU list shows
//! how throughput grows with cores.
//!
//! Pinning is `sched_setaffinity(2)`, which is what `taskset` calls; the
//! benchmark calls it in each server's child process between fork and
//! exec, so no `taskset` binary is needed and no extra process sits
//! between the benchmark and the server it watches. What the kernel then
//! allows each process is read back from `/proc/PID/status`, so a report
//! states the CPUs the servers really had.
//!
//! Not supported: taskset's hexadecimal masks and strides (`0-7:2`).

use std::fmt;

/// The most CPUs a `cpu_set_t` holds (glibc's `CPU_SETSIZE`).
pub const MAX_CPUS: usize = 1024;

/// A non-empty set of CPU numbers, in ascending order without repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// Parses `taskset -c` syntax: comma-separated CPU numbers and
    /// inclusive ranges `a-b` with `a <= b`, each CPU at most once, below
    /// [`MAX_CPUS`]; no spaces.
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let bad = |why: String| format!("bad CPU list {s:?}: {why}");
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        let number = |n: &str| -> Result<usize, String> {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{n:?} is not a CPU number")));
            }
            match n.parse::<usize>() {
                Ok(cpu) if cpu < MAX_CPUS => Ok(cpu),
                _ => Err(bad(format!("CPU {n} is not below {MAX_CPUS}"))),
            }
        };
        let mut cpus = Vec::new();
        for item in s.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let cpu = number(item)?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return Err(bad(format!("range {item} runs backwards")));
            }
            for cpu in first..=last {
                if cpus.contains(&cpu) {
                    return Err(bad(format!("CPU {cpu} is listed twice")));
                }
                cpus.push(cpu);
            }
        }
        cpus.sort_unstable();
        Ok(CpuList(cpus))
    }

    /// The CPU numbers, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// An error naming the first CPU of this list that is not in
    /// `allowed` (the CPUs this process may run on): the kernel would
    /// silently drop it, and a run meant for two cores would measure one.
    pub fn check_within(&self, allowed: &CpuList) -> Result<(), String> {
        match self.0.iter().find(|c| !allowed.0.contains(c)) {
            None => Ok(()),
            Some(cpu) => Err(format!(
                "CPU {cpu} of {self} is not one this process may run on (allowed: {allowed})"
            )),
        }
    }

    /// The list as a `cpu_set_t`, for `sched_setaffinity`.
    pub fn to_cpu_set(&self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty
        // set, and CPU_SET only writes bits below CPU_SETSIZE, which
        // `parse` guarantees.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in &self.0 {
                libc::CPU_SET(cpu, &mut set);
            }
            set
        }
    }

    /// The CPUs set in `set`; `None` when there are none.
    pub fn from_cpu_set(set: &libc::cpu_set_t) -> Option<CpuList> {
        // SAFETY: CPU_ISSET only reads bits below CPU_SETSIZE.
        let cpus: Vec<usize> = (0..MAX_CPUS)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
            .collect();
        (!cpus.is_empty()).then_some(CpuList(cpus))
    }

    /// The CPUs the calling thread may run on.
    pub fn of_this_thread() -> std::io::Result<CpuList> {
        // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()`
        // bytes into `set`, which is that large.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            CpuList::from_cpu_set(&set)
                .ok_or_else(|| std::io::Error::other("sched_getaffinity returned no CPU"))
        }
    }

    /// Restricts the calling thread, and every thread and process it
    /// creates afterwards, to these CPUs.
    pub fn pin_this_thread(&self) -> std::io::Result<()> {
        pin_to(&self.to_cpu_set())
    }
}

/// `sched_setaffinity` of the calling thread to `set`. Async-signal-safe
/// (one system call, no allocation), so it may run in a child between
/// fork and exec.
pub fn pin_to(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes from `set`.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ranges where they save digits: `0-3,8,10-11`.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let first = self.0[i];
            let mut last = first;
            while i + 1 < self.0.len() && self.0[i + 1] == last + 1 {
                i += 1;
                last = self.0[i];
            }
            if first != self.0[0] {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// The `Cpus_allowed_list:` of a `/proc/PID/status` text, as the kernel
/// wrote it.
pub fn status_cpus_allowed(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_like_taskset_and_print_compactly() {
        let list = |s: &str| CpuList::parse(s).unwrap();
        assert_eq!(list("0").cpus(), [0]);
        assert_eq!(list("0-1").cpus(), [0, 1]);
        assert_eq!(list("3,0-1").cpus(), [0, 1, 3]);
        assert_eq!(list("1-1").cpus(), [1]);
        assert_eq!(list("1023").cpus(), [1023]);
        for (s, shown) in [
            ("0", "0"),
            ("0-1", "0-1"),
            ("0,1,2,3", "0-3"),
            ("11,10,8,0-3", "0-3,8,10-11"),
            ("5,7", "5,7"),
        ] {
            assert_eq!(list(s).to_string(), shown, "{s}");
            assert_eq!(list(shown), list(s));
        }
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        for (s, why) in [
            ("", "empty"),
            ("1-0", "runs backwards"),
            ("0,,1", "\"\" is not a CPU number"),
            ("0,", "\"\" is not a CPU number"),
            ("-1", "\"\" is not a CPU number"),
            ("a", "\"a\" is not a CPU number"),
            ("0 ,1", "\"0 \" is not a CPU number"),
            ("+1", "\"+1\" is not a CPU number"),
            ("0-7:2", "\"7:2\" is not a CPU number"),
            ("0x3", "\"0x3\" is not a CPU number"),
            ("1024", "not below 1024"),
            ("99999999999999999999999", "not below 1024"),
            ("0-1,1", "CPU 1 is listed twice"),
            ("0-2,1-3", "CPU 1 is listed twice"),
            ("1-2-3", "\"2-3\" is not a CPU number"),
        ] {
            let err = CpuList::parse(s).unwrap_err();
            assert!(err.contains(why), "{s:?}: {err}");
        }
    }

    #[test]
    fn a_list_must_lie_within_the_allowed_cpus() {
        let list = |s: &str| CpuList::parse(s).unwrap();
        assert!(list("0").check_within(&list("0-1")).is_ok());
        assert!(list("0-1").check_within(&list("0-1")).is_ok());
        let err = list("0-2").check_within(&list("0-1")).unwrap_err();
        assert_eq!(
            err,
            "CPU 2 of 0-2 is not one this process may run on (allowed: 0-1)"
        );
        assert!(list("3").check_within(&list("0-1,4")).is_err());
    }

    #[test]
    fn cpu_sets_round_trip() {
        let list = CpuList::parse("0,5,64-65,1023").unwrap();
        assert_eq!(CpuList::from_cpu_set(&list.to_cpu_set()), Some(list));
        // SAFETY: all zeroes is the empty set.
        let empty: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(CpuList::from_cpu_set(&empty), None);
    }

    #[test]
    fn pinning_a_thread_takes_and_reads_back() {
        // On a thread of its own, so that no other test is pinned.
        std::thread::spawn(|| {
            let allowed = CpuList::of_this_thread().unwrap();
            let first = CpuList::parse(&allowed.cpus()[0].to_string()).unwrap();
            first.pin_this_thread().unwrap();
            assert_eq!(CpuList::of_this_thread().unwrap(), first);
            // The kernel's own view of this thread agrees.
            let tid = unsafe { libc::gettid() };
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
            assert_eq!(
                status_cpus_allowed(&status),
                Some(first.to_string().as_str())
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn status_lines_give_the_allowed_list() {
        let status = "Name:\tredis-server\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(status_cpus_allowed(status), Some("0-1"));
        assert_eq!(status_cpus_allowed("Name:\tx\n"), None);
    }
}
