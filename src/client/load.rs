//! Outstanding requests per instance, with the least loaded instance found in constant time.
//!
//! Instances sit in buckets by their count; a count moves by one, so an instance moves to the
//! next or previous bucket and the lowest non-empty bucket can be kept as it goes (the O(1)
//! structure of LFU caches). A heap would cost O(log n) per request and per completion.

/// Counts for instances `0..n` (indices into the balancer's list).
#[derive(Debug, Default)]
pub struct Load {
    count: Vec<u32>,
    /// Each instance's position in its bucket, for O(1) removal.
    position: Vec<usize>,
    buckets: Vec<Vec<usize>>,
    lowest: usize,
    /// Rotates the choice among equally loaded instances.
    turn: usize,
}

impl Load {
    /// `n` instances with the given counts (carried over from the previous list).
    pub fn new(counts: Vec<u32>) -> Self {
        let mut load = Load {
            position: vec![0; counts.len()],
            ..Load::default()
        };
        for (i, &count) in counts.iter().enumerate() {
            load.place(i, count as usize);
        }
        load.count = counts;
        load.lowest = load.buckets.iter().position(|b| !b.is_empty()).unwrap_or(0);
        load
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count.len()
    }

    pub fn count(&self, i: usize) -> u32 {
        self.count[i]
    }

    /// One of the least loaded instances, taking turns among equals.
    pub fn least(&mut self) -> Option<usize> {
        let bucket = self.buckets.get(self.lowest).filter(|b| !b.is_empty())?;
        self.turn = self.turn.wrapping_add(1);
        Some(bucket[self.turn % bucket.len()])
    }

    pub fn increment(&mut self, i: usize) {
        let count = self.count[i] as usize;
        self.take(i, count);
        self.place(i, count + 1);
        self.count[i] += 1;
        if count == self.lowest && self.buckets[count].is_empty() {
            self.lowest = count + 1;
        }
    }

    /// Never below zero: a request picked from an earlier list may end after its instance left
    /// and came back with a fresh count.
    pub fn decrement(&mut self, i: usize) {
        let count = self.count[i] as usize;
        if count == 0 {
            return;
        }
        self.take(i, count);
        self.place(i, count - 1);
        self.count[i] -= 1;
        self.lowest = self.lowest.min(count - 1);
    }

    fn place(&mut self, i: usize, count: usize) {
        if self.buckets.len() <= count {
            self.buckets.resize_with(count + 1, Vec::new);
        }
        self.position[i] = self.buckets[count].len();
        self.buckets[count].push(i);
    }

    fn take(&mut self, i: usize, count: usize) {
        let bucket = &mut self.buckets[count];
        let at = self.position[i];
        bucket.swap_remove(at);
        if let Some(&moved) = bucket.get(at) {
            self.position[moved] = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least loaded instance agrees with a scan after every step of a random walk.
    #[test]
    fn least_matches_a_scan() {
        let mut load = Load::new(vec![0, 3, 1, 0, 2]);
        for step in 0..10_000u32 {
            let i = rand::random_range(0..load.len());
            if rand::random_bool(0.5) {
                load.increment(i)
            } else {
                load.decrement(i)
            }
            let least = load.least().unwrap();
            let minimum = (0..load.len()).map(|i| load.count(i)).min().unwrap();
            assert_eq!(load.count(least), minimum, "step {step}");
        }
    }

    #[test]
    fn equals_take_turns() {
        let mut load = Load::new(vec![0; 4]);
        let mut seen: Vec<usize> = (0..4).map(|_| load.least().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[test]
    fn empty_has_no_least() {
        assert_eq!(Load::new(vec![]).least(), None);
    }
}
