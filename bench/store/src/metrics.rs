//! Measurements taken from inside the process: fsync calls, bytes written to
//! the block layer, peak RSS, disk space of a directory, the filesystem a path
//! lives on.
//!
//! fsync counting: this binary defines the C symbols `fsync` and `fdatasync`
//! itself. The Rust standard library (used by fjall, redb and the log) and the
//! statically linked RocksDB C++ code call these libc functions by name, and
//! the static linker resolves those references to the definitions in the
//! executable before looking at glibc, so every call made by any store (from
//! any thread, foreground or background) passes through here and is counted
//! before being forwarded to the kernel with a raw syscall. `sync_file_range`
//! (a write-back hint, not a durability barrier) is counted separately.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static FSYNCS: AtomicU64 = AtomicU64::new(0);
static RANGE_SYNCS: AtomicU64 = AtomicU64::new(0);

/// Counted replacement for libc `fsync`.
///
/// # Safety
/// Called by C and Rust code through the C ABI with a file descriptor; it only
/// forwards the descriptor to the kernel.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fsync(fd: libc::c_int) -> libc::c_int {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain syscall with an integer argument; errno is set by syscall().
    unsafe { libc::syscall(libc::SYS_fsync, fd as libc::c_long) as libc::c_int }
}

/// Counted replacement for libc `fdatasync`.
///
/// # Safety
/// As for [`fsync`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain syscall with an integer argument.
    unsafe { libc::syscall(libc::SYS_fdatasync, fd as libc::c_long) as libc::c_int }
}

/// Counted replacement for libc `sync_file_range`.
///
/// # Safety
/// As for [`fsync`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_file_range(
    fd: libc::c_int,
    offset: libc::off64_t,
    nbytes: libc::off64_t,
    flags: libc::c_uint,
) -> libc::c_int {
    RANGE_SYNCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain syscall with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_sync_file_range,
            fd as libc::c_long,
            offset as libc::c_long,
            nbytes as libc::c_long,
            flags as libc::c_long,
        ) as libc::c_int
    }
}

pub fn fsync_count() -> u64 {
    FSYNCS.load(Ordering::Relaxed)
}

pub fn range_sync_count() -> u64 {
    RANGE_SYNCS.load(Ordering::Relaxed)
}

/// Counters of /proc/self/io (whole process, all threads).
#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    /// Bytes this process caused to be sent to the block layer (page-cache
    /// pages dirtied by its writes, counted when dirtied).
    pub write_bytes: u64,
    pub read_bytes: u64,
    /// Dirty bytes that never reached disk because the file was truncated or
    /// deleted before write-back.
    pub cancelled_write_bytes: u64,
}

pub fn proc_io() -> Io {
    let mut io = Io::default();
    if let Ok(s) = std::fs::read_to_string("/proc/self/io") {
        for line in s.lines() {
            let mut it = line.split(':');
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k {
                "write_bytes" => io.write_bytes = v,
                "read_bytes" => io.read_bytes = v,
                "cancelled_write_bytes" => io.cancelled_write_bytes = v,
                _ => {}
            }
        }
    }
    io
}

/// Peak resident set size of this process in KiB (VmHWM).
pub fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Space a directory tree uses: (allocated bytes as `du` counts them, apparent
/// bytes as `ls` counts them, number of files).
pub fn disk_usage(path: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut alloc = 0;
    let mut apparent = 0;
    let mut files = 0;
    let mut stack = vec![path.to_path_buf()];
    // Bounded: a store directory holds at most a few thousand entries.
    let mut visited = 0u64;
    while let Some(p) = stack.pop() {
        visited += 1;
        if visited > 1_000_000 {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        } else {
            alloc += md.blocks() * 512;
            apparent += md.len();
            files += 1;
        }
    }
    (alloc, apparent, files)
}

/// Files under a directory with their sizes, largest first.
pub fn files_by_size(path: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if out.len() > 100_000 {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        } else if md.is_file() {
            out.push((p, md.len()));
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The mount a path lives on, from /proc/self/mounts: (mount point, fs type,
/// device, options). The longest mount-point prefix of the canonical path wins.
pub fn filesystem_of(path: &Path) -> (String, String, String, String) {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let canon = canon.to_string_lossy().to_string();
    let mut best = (
        String::new(),
        String::from("?"),
        String::from("?"),
        String::new(),
    );
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        for line in m.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let mp = f[1];
            let under = canon == mp
                || mp == "/"
                || canon.starts_with(&format!("{}/", mp.trim_end_matches('/')));
            if under && mp.len() >= best.0.len() {
                best = (
                    mp.to_string(),
                    f[2].to_string(),
                    f[0].to_string(),
                    f[3].to_string(),
                );
            }
        }
    }
    best
}

/// A measurement window: wall time, fsync calls, /proc/self/io deltas.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    t0: Instant,
    io0: Io,
    fs0: u64,
    rs0: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub secs: f64,
    pub fsyncs: u64,
    pub range_syncs: u64,
    pub write_bytes: u64,
    pub read_bytes: u64,
    pub cancelled_write_bytes: u64,
}

impl Meter {
    pub fn start() -> Self {
        Meter {
            t0: Instant::now(),
            io0: proc_io(),
            fs0: fsync_count(),
            rs0: range_sync_count(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn stop(&self) -> Delta {
        let secs = self.t0.elapsed().as_secs_f64();
        let io = proc_io();
        Delta {
            secs,
            fsyncs: fsync_count() - self.fs0,
            range_syncs: range_sync_count() - self.rs0,
            write_bytes: io.write_bytes.saturating_sub(self.io0.write_bytes),
            read_bytes: io.read_bytes.saturating_sub(self.io0.read_bytes),
            cancelled_write_bytes: io
                .cancelled_write_bytes
                .saturating_sub(self.io0.cancelled_write_bytes),
        }
    }
}

/// Drop a directory's files from the page cache (after making them durable),
/// so that a later open in a fresh process reads from disk ("cold" open).
/// Uses posix_fadvise(DONTNEED) per file, which touches nothing but these
/// files (no global drop_caches).
pub fn evict_from_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for (p, _) in files_by_size(dir) {
        if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) {
            let _ = f.sync_data();
            // SAFETY: valid open descriptor, whole-file range.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}
