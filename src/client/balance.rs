//! Load balancers over a [`ServiceView`](super::ServiceView): each pick takes the view's latest
//! list (so an instance that has left the view is never returned), chooses in constant time, and
//! counts the request as outstanding until the [`Picked`] is dropped.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::Result;
use super::load::Load;
use super::view::{Instance, Instances};

/// How a [`Balancer`] chooses among the healthy instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Each instance in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// At random in proportion to each instance's weight (Consul's `Weights.Passing`, or the SRV
    /// weight); instances of weight 0 only when every weight is 0.
    Weighted,
    /// The instance with the fewest requests outstanding from this balancer (taking turns among
    /// equals): slow instances get fewer.
    LeastOutstanding,
    /// Two instances at random, the one with fewer outstanding requests: nearly as even as
    /// least-outstanding, without every client herding onto the same instance.
    PowerOfTwoChoices,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::Weighted,
        Strategy::LeastOutstanding,
        Strategy::PowerOfTwoChoices,
    ];
}

/// Picks instances of one service; clones share their counts.
///
/// ```no_run
/// use sextant::client::{Client, Error, Strategy};
///
/// # async fn run() -> Result<(), Error> {
/// let mut prices = Client::from_env()?.watch("prices");
/// prices.ready().await?;
/// let balancer = prices.balancer(Strategy::PowerOfTwoChoices);
/// match balancer.pick() {
///     Ok(instance) => println!("GET http://{}/quote", instance.socket_addr()), // outstanding until dropped
///     Err(Error::NoHealthyInstance { service }) => eprintln!("every instance of {service} is failing"),
///     Err(error) => return Err(error),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Balancer {
    strategy: Strategy,
    state: Arc<Mutex<State>>,
}

/// The chosen instance; the request counts as outstanding until this is dropped.
pub struct Picked {
    instance: Arc<Instance>,
    slot: usize,
    generation: u64,
    state: Arc<Mutex<State>>,
}

struct State {
    latest: watch::Receiver<Arc<Instances>>,
    list: Arc<Instances>,
    slots: HashMap<String, usize>,
    load: Load,
    /// Requests still outstanding on instances that left the list: their count comes back with
    /// them, so a flapping slow instance does not look idle. Only IDs with a count are kept.
    departed: HashMap<String, u32>,
    alias: Option<Alias>,
    turn: usize,
}

impl Balancer {
    pub(crate) fn new(mut latest: watch::Receiver<Arc<Instances>>, strategy: Strategy) -> Self {
        let list = latest.borrow_and_update().clone();
        let mut state = State {
            latest,
            list: list.clone(),
            slots: HashMap::new(),
            load: Load::default(),
            departed: HashMap::new(),
            alias: None,
            turn: 0,
        };
        state.rebuild(list, strategy);
        Self {
            strategy,
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// An instance from the view's latest list, or why there is none
    /// ([`Error::NoHealthyInstance`](super::Error::NoHealthyInstance),
    /// [`Error::ServiceUnknown`](super::Error::ServiceUnknown), or not read yet).
    pub fn pick(&self) -> Result<Picked> {
        let mut state = lock(&self.state);
        state.follow(self.strategy);
        let count = state.list.instances().len();
        if count == 0 {
            return Err(state.list.empty_error());
        }
        let slot = match self.strategy {
            Strategy::RoundRobin => {
                state.turn = state.turn.wrapping_add(1);
                state.turn % count
            }
            Strategy::Random => rand::random_range(0..count),
            Strategy::Weighted => state.alias.as_ref().map_or(0, Alias::sample),
            Strategy::LeastOutstanding => state.load.least().unwrap_or(0),
            Strategy::PowerOfTwoChoices => {
                let first = rand::random_range(0..count);
                let second = (first + rand::random_range(1..count.max(2))) % count;
                if state.load.count(second) < state.load.count(first) {
                    second
                } else {
                    first
                }
            }
        };
        state.load.increment(slot);
        Ok(Picked {
            instance: state.list.instances()[slot].clone(),
            slot,
            generation: state.list.generation(),
            state: self.state.clone(),
        })
    }

    /// Requests outstanding on the instance with this ID (0 if it is not in the view).
    pub fn outstanding(&self, id: &str) -> u32 {
        let mut state = lock(&self.state);
        state.follow(self.strategy);
        state.slots.get(id).map_or(0, |&slot| state.load.count(slot))
    }
}

impl State {
    /// Takes the view's latest list if it changed: the one place a change costs O(n).
    fn follow(&mut self, strategy: Strategy) {
        if !self.latest.has_changed().unwrap_or(false) {
            return;
        }
        let latest = self.latest.borrow_and_update().clone();
        if latest.generation() == self.list.generation() {
            self.list = latest; // the same instances, read again after a failure
            return;
        }
        self.rebuild(latest, strategy);
    }

    fn rebuild(&mut self, list: Arc<Instances>, strategy: Strategy) {
        let mut counts: HashMap<&str, u32> = self
            .slots
            .iter()
            .map(|(id, &slot)| (id.as_str(), self.load.count(slot)))
            .collect();
        let counts: Vec<u32> = list
            .instances()
            .iter()
            .map(|i| {
                counts
                    .remove(i.id.as_str())
                    .or_else(|| self.departed.remove(&i.id))
                    .unwrap_or(0)
            })
            .collect();
        for (id, count) in counts_left_behind(&self.slots, &self.load, &list) {
            self.departed.insert(id, count);
        }
        self.load = Load::new(counts);
        self.slots = list
            .instances()
            .iter()
            .enumerate()
            .map(|(slot, i)| (i.id.clone(), slot))
            .collect();
        self.alias = (strategy == Strategy::Weighted)
            .then(|| Alias::new(&list.instances().iter().map(|i| i.weight).collect::<Vec<_>>()));
        self.list = list;
    }
}

/// The instances of the old list that are not in the new one and still have requests out.
fn counts_left_behind(slots: &HashMap<String, usize>, load: &Load, list: &Instances) -> Vec<(String, u32)> {
    let staying: std::collections::HashSet<&str> = list.instances().iter().map(|i| i.id.as_str()).collect();
    slots
        .iter()
        .filter(|(id, _)| !staying.contains(id.as_str()))
        .map(|(id, &slot)| (id.clone(), load.count(slot)))
        .filter(|&(_, count)| count > 0)
        .collect()
}

impl Picked {
    /// The instance, shared with the view.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }
}

impl Deref for Picked {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        let slot = if state.list.generation() == self.generation {
            Some(self.slot)
        } else {
            state.slots.get(&self.instance.id).copied()
        };
        match slot {
            Some(slot) => state.load.decrement(slot),
            None => {
                if let Some(count) = state.departed.get_mut(&self.instance.id) {
                    *count -= 1;
                    if *count == 0 {
                        state.departed.remove(&self.instance.id);
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Picked").field(&self.instance).finish()
    }
}

/// A counter update cannot leave the state half-changed, so a panic elsewhere while the lock was
/// held does not make it unusable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Vose's alias method: O(n) to build on a change, O(1) per weighted pick.
struct Alias {
    keep: Vec<f64>,
    alias: Vec<usize>,
}

impl Alias {
    fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut scaled: Vec<f64> = if total == 0.0 {
            vec![1.0; n]
        } else {
            weights.iter().map(|&w| f64::from(w) * n as f64 / total).collect()
        };
        let (mut keep, mut alias) = (vec![1.0; n], (0..n).collect::<Vec<_>>());
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s];
            alias[s] = l;
            scaled[l] += scaled[s] - 1.0;
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What is left (rounding) is kept with certainty.
        Self { keep, alias }
    }

    fn sample(&self) -> usize {
        let i = rand::random_range(0..self.keep.len());
        if rand::random::<f64>() < self.keep[i] {
            i
        } else {
            self.alias[i]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Error;
    use crate::client::view::Publisher;

    const PICKS: usize = 10_000;

    fn instance(id: &str, weight: u32) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            address: "192.0.2.1".into(),
            port: 80,
            tags: vec![],
            meta: Default::default(),
            weight,
        }
    }

    fn view_of(weights: &[u32]) -> (Publisher, crate::client::ServiceView) {
        let (mut publisher, view) = Publisher::new("web");
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| instance(&format!("web-{i}"), w))
            .collect();
        publisher.publish(Instances::read("web", list, 1, true));
        (publisher, view)
    }

    /// Picks `PICKS` times, releasing each at once (or holding every one: `hold`), and counts
    /// picks per instance in ID order.
    fn distribution(balancer: &Balancer, n: usize, hold: bool) -> Vec<usize> {
        let mut counts = vec![0; n];
        let mut held = Vec::new();
        for _ in 0..PICKS {
            let picked = balancer.pick().unwrap();
            counts[picked.id.trim_start_matches("web-").parse::<usize>().unwrap()] += 1;
            if hold {
                held.push(picked);
            }
        }
        counts
    }

    /// Pearson's chi-square statistic of `observed` against `expected` proportions.
    fn chi_square(observed: &[usize], expected: &[f64]) -> f64 {
        let total: usize = observed.iter().sum();
        observed
            .iter()
            .zip(expected)
            .map(|(&o, &p)| {
                let e = p * total as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// The chi-square value that 3 degrees of freedom exceed with probability 1e-6: a fair
    /// balancer fails this once in a million runs, a biased one every time.
    const CHI_SQUARE_3_DF: f64 = 30.66;

    #[test]
    fn round_robin_is_exact() {
        let (_p, view) = view_of(&[1, 1, 1, 1]);
        let counts = distribution(&view.balancer(Strategy::RoundRobin), 4, false);
        println!("round robin, 10,000 picks: {counts:?}");
        assert_eq!(counts, vec![2_500; 4]);
    }

    #[test]
    fn random_is_uniform() {
        let (_p, view) = view_of(&[1, 1, 1, 1]);
        let counts = distribution(&view.balancer(Strategy::Random), 4, false);
        let chi = chi_square(&counts, &[0.25; 4]);
        println!("random, 10,000 picks: {counts:?}, chi-square {chi:.2}");
        assert!(chi < CHI_SQUARE_3_DF, "{counts:?}: chi-square {chi:.1}");
    }

    #[test]
    fn weighted_follows_the_weights() {
        let (_p, view) = view_of(&[1, 2, 3, 4]);
        let counts = distribution(&view.balancer(Strategy::Weighted), 4, false);
        let chi = chi_square(&counts, &[0.1, 0.2, 0.3, 0.4]);
        println!("weighted 1:2:3:4, 10,000 picks: {counts:?}, chi-square {chi:.2}");
        assert!(chi < CHI_SQUARE_3_DF, "{counts:?}: chi-square {chi:.1}");
    }

    #[test]
    fn weighted_never_picks_weight_zero_beside_others() {
        let (_p, view) = view_of(&[0, 5, 0, 5]);
        let counts = distribution(&view.balancer(Strategy::Weighted), 4, false);
        assert_eq!((counts[0], counts[2]), (0, 0), "{counts:?}");
        let (_p, view) = view_of(&[0, 0]);
        let counts = distribution(&view.balancer(Strategy::Weighted), 2, false);
        assert!(
            counts.iter().all(|&c| c > 4_000),
            "all weights 0 is uniform: {counts:?}"
        );
    }

    /// Every request held: least-outstanding keeps the counts equal at every step.
    #[test]
    fn least_outstanding_keeps_counts_level() {
        let (_p, view) = view_of(&[1, 1, 1, 1]);
        let balancer = view.balancer(Strategy::LeastOutstanding);
        let counts = distribution(&balancer, 4, true);
        println!("least outstanding, 10,000 picks held: {counts:?}");
        assert_eq!(counts, vec![2_500; 4]);
    }

    /// Every request held: two choices keep the counts far more even than random choice, whose
    /// spread grows as √n (a standard deviation of 43 per instance here); the gap of two choices
    /// stays a few requests whatever the number of picks (seen: 1 to 3).
    #[test]
    fn two_choices_keep_counts_close() {
        let (_p, view) = view_of(&[1, 1, 1, 1]);
        let counts = distribution(&view.balancer(Strategy::PowerOfTwoChoices), 4, true);
        let deviation = counts.iter().map(|&c| c.abs_diff(2_500)).max().unwrap();
        println!("two choices, 10,000 picks held: {counts:?}, max deviation {deviation}");
        assert!(deviation <= 10, "{counts:?}: max deviation {deviation}");
        let (_p, view) = view_of(&[1, 1, 1, 1]);
        let counts = distribution(&view.balancer(Strategy::PowerOfTwoChoices), 4, false);
        let chi = chi_square(&counts, &[0.25; 4]);
        println!("two choices, 10,000 picks released: {counts:?}, chi-square {chi:.2}");
        assert!(
            chi < CHI_SQUARE_3_DF,
            "released at once it is uniform: {counts:?}: chi-square {chi:.1}"
        );
    }

    #[test]
    fn an_instance_that_left_is_never_picked() {
        for strategy in Strategy::ALL {
            let (mut publisher, view) = view_of(&[1, 1, 1]);
            let balancer = view.balancer(strategy);
            let held: Vec<Picked> = (0..30).map(|_| balancer.pick().unwrap()).collect();
            let remaining = vec![instance("web-0", 1), instance("web-2", 1)];
            publisher.publish(Instances::read("web", remaining, 2, true));
            for _ in 0..1_000 {
                assert_ne!(balancer.pick().unwrap().id, "web-1", "{strategy:?}");
            }
            // Requests picked before the change end; the counts of the instances that stayed
            // carry over, and none goes below zero.
            let before = balancer.outstanding("web-0");
            let from_web_0 = held.iter().filter(|p| p.id == "web-0").count() as u32;
            assert_eq!(before, from_web_0, "{strategy:?}");
            drop(held);
            assert_eq!((balancer.outstanding("web-0"), balancer.outstanding("web-2")), (0, 0));
        }
    }

    /// An instance that leaves with requests out and comes back has them counted still, and
    /// their ends bring it back to zero.
    #[test]
    fn outstanding_requests_follow_an_instance_that_leaves_and_returns() {
        let (mut publisher, view) = view_of(&[1, 1]);
        let balancer = view.balancer(Strategy::LeastOutstanding);
        let held: Vec<Picked> = (0..10).map(|_| balancer.pick().unwrap()).collect();
        publisher.publish(Instances::read("web", vec![instance("web-0", 1)], 2, true));
        let _ = balancer.pick().unwrap();
        publisher.publish(Instances::read(
            "web",
            vec![instance("web-0", 1), instance("web-1", 1)],
            3,
            true,
        ));
        assert_eq!((balancer.outstanding("web-0"), balancer.outstanding("web-1")), (5, 5));
        drop(held);
        assert_eq!((balancer.outstanding("web-0"), balancer.outstanding("web-1")), (0, 0));
    }

    #[test]
    fn empty_views_say_why() {
        let (mut publisher, view) = Publisher::new("web");
        let balancer = view.balancer(Strategy::RoundRobin);
        assert!(matches!(balancer.pick(), Err(Error::NotYetRead { .. })));
        publisher.publish(Instances::read("web", vec![], 3, true));
        assert!(matches!(balancer.pick(), Err(Error::NoHealthyInstance { .. })));
        publisher.publish(Instances::read("web", vec![], 4, false));
        assert!(matches!(balancer.pick(), Err(Error::ServiceUnknown { .. })));
    }
}
