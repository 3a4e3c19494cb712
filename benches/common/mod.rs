//! What the benchmarks share: what they read of a process from /proc (its CPU time and, through
//! the tests' process helpers, its resident memory), the real binary, and the data folder of a run.
#![allow(dead_code)] // each benchmark uses its own part

/// The real binary as a child process, and what /proc says of a process's memory: the tests' own.
#[path = "../../tests/it/common/process.rs"]
pub mod process;

#[path = "../../tests/it/common/etcd.rs"]
pub mod etcd;
/// A real etcd cluster, and the tools it needs: the tests' own.
#[path = "../../tests/it/common/tools.rs"]
pub mod tools;

#[path = "../../tests/it/common/pki.rs"]
pub mod pki;

#[allow(unused_imports)] // not every benchmark reads memory
pub use process::resident_bytes;

use std::path::PathBuf;
use std::time::Duration;

use sextant::dns::Incoming;
use sextant::dns::message::Transport;

/// A query from a client on this machine, as the answer benchmarks send it.
pub fn incoming(packet: &[u8], transport: Transport, rotation: usize) -> Incoming<'_> {
    Incoming {
        packet,
        from: std::net::SocketAddr::from(([127, 0, 0, 1], 5353)),
        transport,
        rotation,
    }
}

/// The data folder of one benchmark run, removed when dropped: a run never finds the instances
/// of an earlier one.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new(bench: &str) -> Self {
        Self(std::env::temp_dir().join(format!("sextant-bench-{bench}-{}", std::process::id())))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// User + system CPU time of process `pid` ("self" for this one).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel reports in USER_HZ, 100 on Linux.
    Duration::from_millis(ticks * 10)
}
