//! `paddock bench --only pinned`: ingest with the consumer on a core of its own.
//!
//! By default the broker, the publisher and the consumer (the processor, or the
//! plain subscriber it is compared with) share every core, and on a 2-core machine
//! every nanosecond the consumer spends is taken from the broker's delivery. A
//! deployment gives the processor cores of its own; this mode measures that on one
//! machine: the broker and the publisher (this process) on core 0, the consumer
//! (the processor, or the plain subscriber `bench-sink`) on core 1.

#[cfg(target_os = "linux")]
use anyhow::Context;
use anyhow::bail;

/// The core the consumer gets; everything else runs on core 0.
pub(crate) const CONSUMER_CORE: usize = 1;

/// Restricts every thread of process `pid` to `cores` (Linux); threads it starts
/// later inherit it.
#[cfg(target_os = "linux")]
pub(crate) fn pin(pid: u32, cores: &[usize]) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cores {
        // SAFETY: `core` is below the machine's core count, well inside the set.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
        let tid: libc::pid_t = task?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("a task id that is not a number")?;
        // SAFETY: sched_setaffinity(2) with the size of the set it reads.
        let done = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        // A thread that ended since the listing is no failure.
        if done != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            bail!(
                "cannot pin thread {tid} of {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Pinning needs Linux's sched_setaffinity(2) and /proc: elsewhere this mode
/// says so rather than measure something else.
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin(_pid: u32, _cores: &[usize]) -> anyhow::Result<()> {
    bail!("--only pinned needs Linux (sched_setaffinity and /proc)")
}

/// Every core of the machine (elsewhere than Linux, as many as the process may use).
#[cfg(not(target_os = "linux"))]
pub(crate) fn all_cores() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
}

/// Every core of the machine that is online (not `available_parallelism`, which
/// answers the calling thread's own affinity, pinned or not).
#[cfg(target_os = "linux")]
pub(crate) fn all_cores() -> Vec<usize> {
    // SAFETY: sysconf(3) with a valid name.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..usize::try_from(online).unwrap_or(1).max(1)).collect()
}
