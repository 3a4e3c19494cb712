//! The last hour of each service, for the dashboard's charts: DNS queries per second and its
//! instances by health, sampled every [`STEP`] by a task of its own. Read from the counters DNS
//! keeps anyway ([`DnsStats`]) and the registry's snapshot: nothing on the answer path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dns::stats::DnsStats;
use crate::model::ServiceKey;
use crate::registry::Registry;

/// How often a point is taken.
pub const STEP: Duration = Duration::from_secs(30);
/// Points kept: an hour.
pub const POINTS: usize = 120;
/// Services with a history; past this many (a registry of tens of thousands of services), the
/// others have none, so the history's memory stays under ~12 MB (1.2 kB a service).
pub const MAX_SERVICES: usize = 10_000;

/// One service's points, in a ring indexed by the sample's number.
struct Series {
    /// DNS queries for the service in each step.
    queries: [u32; POINTS],
    /// Instances passing, warning and critical at each sample.
    health: [[u16; 3]; POINTS],
    /// The first sample the service was in: earlier points of the ring are not its own.
    first: u64,
}

#[derive(Default)]
struct Points {
    /// Samples taken; the next one is number `taken`.
    taken: u64,
    /// When the last one was taken (the live point counts from there).
    last: Option<Instant>,
    services: HashMap<ServiceKey, Box<Series>>,
    /// Each DNS service counter's value at the last sample, by its number.
    counted: Vec<u64>,
}

/// A service's last hour, oldest point first; the last point is the step in progress.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceHistory {
    /// DNS queries per second in each step (`None` before the service was registered).
    pub queries: Vec<Option<f64>>,
    /// Instances passing, warning and critical at the end of each step.
    pub passing: Vec<Option<u16>>,
    pub warning: Vec<Option<u16>>,
    pub critical: Vec<Option<u16>>,
}

impl ServiceHistory {
    fn push(&mut self, point: Option<(f64, [u16; 3])>) {
        self.queries.push(point.map(|(queries, _)| queries));
        self.passing.push(point.map(|(_, health)| health[0]));
        self.warning.push(point.map(|(_, health)| health[1]));
        self.critical.push(point.map(|(_, health)| health[2]));
    }
}

pub struct History {
    registry: Arc<Registry>,
    dns: Arc<DnsStats>,
    points: Mutex<Points>,
}

impl History {
    pub fn new(registry: Arc<Registry>, dns: Arc<DnsStats>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            dns,
            points: Mutex::default(),
        })
    }

    /// Takes a point every [`STEP`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.sample();
        let mut ticks = tokio::time::interval_at(Instant::now() + STEP, STEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sample(),
                () = stop.cancelled() => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Points> {
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a point: the queries since the last one, and each service's health now. Services
    /// that are gone lose their history.
    pub fn sample(&self) {
        let queries = self.queries_since_last(true);
        let services = self.registry.services();
        let mut points = self.lock();
        let slot = (points.taken % POINTS as u64) as usize;
        let taken = points.taken;
        let mut present = HashMap::with_capacity(services.len().min(MAX_SERVICES));
        for service in &services {
            let key = service.name.key();
            let tracked = points.services.len();
            let series = match points.services.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(_) if tracked >= MAX_SERVICES => continue,
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Box::new(Series {
                    queries: [0; POINTS],
                    health: [[0; 3]; POINTS],
                    first: taken,
                })),
            };
            series.queries[slot] = queries.get(&key).map_or(0, |&n| u32::try_from(n).unwrap_or(u32::MAX));
            series.health[slot] = health_counts(&service.instances);
            present.insert(key, ());
        }
        points.services.retain(|key, _| present.contains_key(key));
        points.taken += 1;
        points.last = Some(Instant::now());
    }

    /// DNS queries by service since the last sample; with `advance`, from now on counted from
    /// here.
    fn queries_since_last(&self, advance: bool) -> HashMap<ServiceKey, u64> {
        let (tally, names) = self.dns.sum();
        let mut points = self.lock();
        let mut since = HashMap::new();
        for (id, &count) in tally.by_service.iter().enumerate() {
            let before = points.counted.get(id).copied().unwrap_or(0);
            if count > before
                && let Some(name) = names.get(id)
            {
                since.insert(ServiceKey::new(name), count - before);
            }
        }
        if advance {
            points.counted = tally.by_service;
        }
        since
    }

    /// The last hour of `name`, if it has a history: the points taken, then the step in
    /// progress (queries per second so far, health now).
    pub fn of(&self, name: &str) -> Option<ServiceHistory> {
        self.of_each(&[name]).pop().map(|(_, history)| history)
    }

    /// The last hour of each of `names` that has one (the DNS counters are summed once).
    pub fn of_each<'n>(&self, names: &[&'n str]) -> Vec<(&'n str, ServiceHistory)> {
        let live = self.queries_since_last(false);
        names
            .iter()
            .filter_map(|&name| Some((name, self.history_of(name, &live)?)))
            .collect()
    }

    fn history_of(&self, name: &str, live: &HashMap<ServiceKey, u64>) -> Option<ServiceHistory> {
        let key = ServiceKey::new(name);
        let live_queries = live.get(&key).copied().unwrap_or(0);
        let live_health = self.registry.service_by_key(&key).map(|s| health_counts(&s.instances));
        let points = self.lock();
        // A service registered since the last sample has only the step in progress.
        let series = points.services.get(&key);
        if series.is_none() && live_health.is_none() {
            return None;
        }
        let step = STEP.as_secs_f64();
        let mut history = ServiceHistory {
            queries: Vec::with_capacity(POINTS + 1),
            passing: Vec::with_capacity(POINTS + 1),
            warning: Vec::with_capacity(POINTS + 1),
            critical: Vec::with_capacity(POINTS + 1),
        };
        // The oldest point first: sample numbers `taken - POINTS .. taken` (none before the
        // first sample, or before the service's own first).
        for number in points.taken as i128 - POINTS as i128..points.taken as i128 {
            let point = u64::try_from(number).ok().and_then(|number| {
                let series = series.filter(|s| number >= s.first)?;
                let slot = (number % POINTS as u64) as usize;
                Some((f64::from(series.queries[slot]) / step, series.health[slot]))
            });
            history.push(point);
        }
        let elapsed = points.last.map_or(step, |last| last.elapsed().as_secs_f64().max(1.0));
        history.push(Some((live_queries as f64 / elapsed, live_health.unwrap_or_default())));
        Some(history)
    }
}

/// Instances passing, warning and critical.
fn health_counts(instances: &[Arc<crate::model::Instance>]) -> [u16; 3] {
    let mut counts = [0u16; 3];
    for instance in instances {
        let count = &mut counts[instance.health() as usize];
        *count = count.saturating_add(1);
    }
    counts
}
