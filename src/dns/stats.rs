//! What DNS was asked and what it answered, counted on the answer path without contention: each
//! thread counts into a shard of its own (a UDP worker's queries never meet another worker's
//! lock), and a scrape sums the shards (`metrics.rs` exposes them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use compact_str::CompactString;

use super::message::Transport;

/// The query types counted by name; the rest are counted as `other`.
pub const QTYPES: [(u16, &str); 10] = [
    (1, "A"),
    (28, "AAAA"),
    (33, "SRV"),
    (12, "PTR"),
    (16, "TXT"),
    (255, "ANY"),
    (6, "SOA"),
    (2, "NS"),
    (252, "AXFR"),
    (251, "IXFR"),
];

/// Names for the response codes a header can carry (4 bits); unassigned ones by number.
pub const RCODES: [&str; 16] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
    "NOTZONE", "11", "12", "13", "14", "15",
];

/// Services that get a counter of their own; past this many distinct names (a registry whose
/// names churn for months), the rest share one, so memory stays bounded.
pub const MAX_TRACKED_SERVICES: usize = 100_000;

/// The counter of the services past [`MAX_TRACKED_SERVICES`].
pub const UNTRACKED: u32 = u32::MAX;

/// A registry name's answer, as counted: which service (its [`ServiceIds`] number) and whether
/// it had no healthy instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHit {
    pub id: u32,
    pub unhealthy: bool,
}

/// A small number for each service name that DNS has compiled answers for, so counting a query
/// for it indexes an array instead of hashing its name.
#[derive(Debug, Default)]
pub struct ServiceIds {
    inner: Mutex<(HashMap<CompactString, u32>, Vec<CompactString>)>,
}

impl ServiceIds {
    /// The number of `lower_name` (the write side: when its answers are compiled).
    pub fn id_for(&self, lower_name: &str) -> u32 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (by_name, names) = &mut *inner;
        if let Some(&id) = by_name.get(lower_name) {
            return id;
        }
        if names.len() >= MAX_TRACKED_SERVICES {
            return UNTRACKED;
        }
        let id = names.len() as u32;
        names.push(CompactString::new(lower_name));
        by_name.insert(CompactString::new(lower_name), id);
        id
    }

    /// Every name, by number.
    pub fn names(&self) -> Vec<CompactString> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// One shard's counts.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// By transport (UDP, TCP), query type ([`QTYPES`] and other), response code.
    pub queries: [[[u64; 16]; QTYPES.len() + 1]; 2],
    /// Queries for each service, by number; and for the untracked ones.
    pub by_service: Vec<u64>,
    pub untracked: u64,
    /// Answers for a known service with no healthy instance, by number; and untracked.
    pub unhealthy: Vec<u64>,
    pub untracked_unhealthy: u64,
}

impl Tally {
    fn count(&mut self, transport: Transport, qtype: u16, rcode: u8, hit: Option<ServiceHit>) {
        let t = usize::from(transport == Transport::Tcp);
        let q = QTYPES
            .iter()
            .position(|&(code, _)| code == qtype)
            .unwrap_or(QTYPES.len());
        self.queries[t][q][usize::from(rcode & 0x0F)] += 1;
        let Some(hit) = hit else {
            return;
        };
        if hit.id == UNTRACKED {
            self.untracked += 1;
            self.untracked_unhealthy += u64::from(hit.unhealthy);
            return;
        }
        let id = hit.id as usize;
        if self.by_service.len() <= id {
            self.by_service.resize(id + 1, 0); // once per new service, per shard
            self.unhealthy.resize(id + 1, 0);
        }
        self.by_service[id] += 1;
        self.unhealthy[id] += u64::from(hit.unhealthy);
    }

    fn add(&mut self, other: &Tally) {
        for (mine, theirs) in self
            .queries
            .iter_mut()
            .flatten()
            .flatten()
            .zip(other.queries.iter().flatten().flatten())
        {
            *mine += theirs;
        }
        let len = self.by_service.len().max(other.by_service.len());
        self.by_service.resize(len, 0);
        self.unhealthy.resize(len, 0);
        for (i, n) in other.by_service.iter().enumerate() {
            self.by_service[i] += n;
            self.unhealthy[i] += other.unhealthy[i];
        }
        self.untracked += other.untracked;
        self.untracked_unhealthy += other.untracked_unhealthy;
    }
}

/// A shard on a cache line (two, for adjacent-line prefetch) of its own, so shards counted by
/// different cores do not invalidate each other.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Tally>);

/// The counts of one DNS server.
#[derive(Debug)]
pub struct DnsStats {
    shards: Box<[Shard]>,
    ids: Arc<ServiceIds>,
}

/// Shards: enough that the UDP workers and tokio's threads rarely share one.
const SHARDS: usize = 32;

thread_local! {
    /// This thread's shard, given out in turn as threads first count.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

impl DnsStats {
    pub fn new(ids: Arc<ServiceIds>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            ids,
        }
    }

    /// Counts one response: the question's type, the response's code, and the service it was
    /// for, if a registry name.
    pub fn count(&self, transport: Transport, qtype: u16, rcode: u8, hit: Option<ServiceHit>) {
        let shard = SHARD.with(|s| *s);
        lock(&self.shards[shard].0).count(transport, qtype, rcode, hit);
    }

    /// Every shard's counts added up, and the service names by number.
    pub fn sum(&self) -> (Tally, Vec<CompactString>) {
        let mut total = Tally::default();
        for shard in &self.shards {
            let tally = lock(&shard.0).clone();
            total.add(&tally);
        }
        (total, self.ids.names())
    }
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}
