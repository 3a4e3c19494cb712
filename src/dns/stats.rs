//! What DNS was asked and what it answered, counted on the answer path without contention: each
//! thread counts into a tally of its own, with no lock and no locked instruction, and a scrape
//! sums the tallies (`metrics.rs` exposes them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Counts summed over every thread: what a scrape reads.
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

/// Services per chunk of a thread's per-service counters: a chunk is allocated the first time
/// the thread counts a service in it.
const CHUNK: usize = 1024;

#[derive(Debug, Default)]
struct ServiceCounts {
    queries: AtomicU64,
    unhealthy: AtomicU64,
}

/// One thread's counts. Only that thread writes them, so a count is a plain load and store (no
/// locked instruction); a scrape reads them with relaxed loads, a count or two behind at most.
#[derive(Debug)]
struct ThreadTally {
    queries: [[[AtomicU64; 16]; QTYPES.len() + 1]; 2],
    services: Box<[OnceLock<Box<[ServiceCounts]>>]>,
    untracked: AtomicU64,
    untracked_unhealthy: AtomicU64,
}

impl Default for ThreadTally {
    fn default() -> Self {
        Self {
            queries: Default::default(),
            services: (0..MAX_TRACKED_SERVICES.div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            untracked: AtomicU64::new(0),
            untracked_unhealthy: AtomicU64::new(0),
        }
    }
}

/// Adds one to a counter that only this thread writes.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// The index of a query type in [`QTYPES`] (the last one: other).
fn qtype_index(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        28 => 1,
        33 => 2,
        12 => 3,
        16 => 4,
        255 => 5,
        6 => 6,
        2 => 7,
        252 => 8,
        251 => 9,
        _ => QTYPES.len(),
    }
}

impl ThreadTally {
    fn count(&self, transport: Transport, qtype: u16, rcode: u8, hit: Option<ServiceHit>) {
        let t = usize::from(transport == Transport::Tcp);
        bump(&self.queries[t][qtype_index(qtype)][usize::from(rcode & 0x0F)], 1);
        let Some(hit) = hit else {
            return;
        };
        if hit.id == UNTRACKED {
            bump(&self.untracked, 1);
            bump(&self.untracked_unhealthy, u64::from(hit.unhealthy));
            return;
        }
        let id = hit.id as usize;
        let chunk = self.services[id / CHUNK].get_or_init(|| (0..CHUNK).map(|_| ServiceCounts::default()).collect());
        let counts = &chunk[id % CHUNK];
        bump(&counts.queries, 1);
        if hit.unhealthy {
            bump(&counts.unhealthy, 1);
        }
    }

    fn add_to(&self, total: &mut Tally) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (sum, counter) in total
            .queries
            .iter_mut()
            .flatten()
            .flatten()
            .zip(self.queries.iter().flatten().flatten())
        {
            *sum += load(counter);
        }
        for (c, chunk) in self.services.iter().enumerate() {
            let Some(chunk) = chunk.get() else { continue };
            let end = (c + 1) * CHUNK;
            if total.by_service.len() < end {
                total.by_service.resize(end, 0);
                total.unhealthy.resize(end, 0);
            }
            for (i, counts) in chunk.iter().enumerate() {
                total.by_service[c * CHUNK + i] += load(&counts.queries);
                total.unhealthy[c * CHUNK + i] += load(&counts.unhealthy);
            }
        }
        total.untracked += load(&self.untracked);
        total.untracked_unhealthy += load(&self.untracked_unhealthy);
    }
}

/// One thread's own tally ([`DnsStats::counter`]): only the thread that holds it counts into it.
#[derive(Debug)]
pub struct Counter(Arc<ThreadTally>);

impl Counter {
    pub fn count(&self, transport: Transport, qtype: u16, rcode: u8, hit: Option<ServiceHit>) {
        self.0.count(transport, qtype, rcode, hit);
    }
}

/// The counts of one DNS server: one tally per thread that has answered for it.
#[derive(Debug)]
pub struct DnsStats {
    /// Tells this server's tallies apart from another's in a thread that answers for both (tests).
    id: usize,
    /// UDP responses not sent whole ([`super::reflection`]): slipped (sent truncated past the
    /// rate limit), dropped, and truncated for the amplification bound.
    pub slipped: AtomicU64,
    pub dropped: AtomicU64,
    pub bounded: AtomicU64,
    tallies: Mutex<Vec<Arc<ThreadTally>>>,
    ids: Arc<ServiceIds>,
}

thread_local! {
    /// This thread's tally for each DNS server it has answered for (one, but in tests).
    static MINE: RefCell<Vec<(usize, Arc<ThreadTally>)>> = const { RefCell::new(Vec::new()) };
}

impl DnsStats {
    pub fn new(ids: Arc<ServiceIds>) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            slipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bounded: AtomicU64::new(0),
            tallies: Mutex::default(),
            ids,
        }
    }

    /// Counts one response: the question's type, the response's code, and the service it was
    /// for, if a registry name.
    pub fn count(&self, transport: Transport, qtype: u16, rcode: u8, hit: Option<ServiceHit>) {
        MINE.with_borrow_mut(|mine| {
            let tally = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(at) => &mine[at].1,
                None => {
                    // The first count by this thread: its tally joins the server's (and stays
                    // after the thread ends, so counters never go down).
                    let tally = Arc::new(ThreadTally::default());
                    self.tallies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(tally.clone());
                    mine.push((self.id, tally));
                    &mine[mine.len() - 1].1
                }
            };
            tally.count(transport, qtype, rcode, hit);
        });
    }

    /// A tally of its own for one thread that answers many queries (a UDP worker), counted into
    /// without the lookup of [`count`](Self::count).
    pub fn counter(&self) -> Counter {
        let tally = Arc::new(ThreadTally::default());
        self.tallies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tally.clone());
        Counter(tally)
    }

    /// Every thread's counts added up, and the service names by number.
    pub fn sum(&self) -> (Tally, Vec<CompactString>) {
        let tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut total = Tally::default();
        for tally in &tallies {
            tally.add_to(&mut total);
        }
        (total, self.ids.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads count apart, and a sum adds them all, also after a thread has ended.
    #[test]
    fn threads_count_apart_and_the_sum_adds_them() {
        let stats = Arc::new(DnsStats::new(Arc::default()));
        let web = stats.ids.id_for("web");
        let down = stats.ids.id_for("down");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        stats.count(
                            Transport::Udp,
                            1,
                            0,
                            Some(ServiceHit {
                                id: web,
                                unhealthy: false,
                            }),
                        );
                    }
                    stats.count(
                        Transport::Tcp,
                        33,
                        0,
                        Some(ServiceHit {
                            id: down,
                            unhealthy: true,
                        }),
                    );
                    stats.count(Transport::Udp, 99, 3, None);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let (tally, names) = stats.sum();
        assert_eq!(tally.queries[0][0][0], 4_000, "UDP A NOERROR");
        assert_eq!(tally.queries[1][2][0], 4, "TCP SRV NOERROR");
        assert_eq!(tally.queries[0][QTYPES.len()][3], 4, "UDP other NXDOMAIN");
        assert_eq!(
            (tally.by_service[web as usize], tally.unhealthy[web as usize]),
            (4_000, 0)
        );
        assert_eq!(
            (tally.by_service[down as usize], tally.unhealthy[down as usize]),
            (4, 4)
        );
        assert_eq!(names, ["web", "down"]);
    }
}
