//! What the benches share: medians, and the resource usage of a child process measured so that
//! it is the child's own.
#![allow(dead_code, reason = "each bench uses the part it needs")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The median of samples (the upper one of an even count). Panics on no samples.
pub fn median<T: Copy + PartialOrd>(mut samples: Vec<T>) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("samples are ordered (no NaN)"));
    samples[samples.len() / 2]
}

/// CPU time (user + system) in a `rusage`.
pub fn cpu_of(u: &libc::rusage) -> Duration {
    let t = |tv: libc::timeval| Duration::from_micros(tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64);
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU time (user + system) a running process has used so far, from `/proc/PID/stat` (in clock
/// ticks: 10 ms on most kernels). None once it has ended.
pub fn cpu_of_pid(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// The resource usage of this process (`RUSAGE_SELF`) or of its waited-for children.
pub fn usage(who: libc::c_int) -> libc::rusage {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(who, &mut usage) };
    usage
}

/// How a child ended: its raw wait status, its own resource usage, and its peak RSS in KiB.
pub struct Ended {
    pub status: libc::c_int,
    pub usage: libc::rusage,
    pub peak_rss_kib: i64,
}

impl Ended {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// Wait for a spawned child (which must not be waited for otherwise) and measure it.
///
/// Peak RSS is the child's own `VmHWM`, read from `/proc` until it exits — not `wait4`'s
/// `ru_maxrss`, which also counts this process's memory at the moment it spawned the child (the
/// kernel keeps the high-water mark of the address space the child had before its exec: ours).
/// A bench that holds simulators or objects would otherwise report its own memory as drover's.
/// The usage is of this one child, not of every child waited for before.
pub fn wait_measured(child: &std::process::Child) -> Ended {
    let done = Arc::new(AtomicBool::new(false));
    let peak = {
        let (pid, done) = (child.id(), done.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { break };
                let hwm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok());
                peak = peak.max(hwm.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for this child only, writing into the two values given.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    done.store(true, Ordering::Relaxed);
    Ended { status, usage, peak_rss_kib: peak.join().expect("the RSS reader") }
}
