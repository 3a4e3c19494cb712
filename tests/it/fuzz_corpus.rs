//! The fuzz targets' bodies (`fuzz/src/lib.rs`, the same file libFuzzer runs) over their corpora
//! (`fuzz/corpus/<target>/`: seeds written from the tests' inputs, and every past finding) and
//! over inputs mutated from them by a fixed seed: the fuzzers' checks hold in every test run,
//! in seconds. `scripts/fuzz.sh <target> <seconds>` runs the coverage-guided fuzzer.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs mutated from each target's corpus.
const MUTATIONS: usize = 3000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files.iter().map(|path| std::fs::read(path).unwrap()).collect()
}

/// A corpus input changed as libFuzzer's simplest mutators do: bytes flipped, inserted,
/// removed, the input cut, or spliced with another.
fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..5) {
            0 if at < input.len() => input[at] ^= 1 << rng.random_range(0..8),
            1 => input.insert(at, rng.random()),
            2 if at < input.len() => {
                input.remove(at);
            }
            3 => input.truncate(at),
            _ => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let from = rng.random_range(0..=other.len());
                input.splice(at.., other[from..].iter().copied());
            }
        }
    }
    input
}

fn run(target: &str, body: fn(&[u8])) {
    let corpus = corpus(target);
    for input in &corpus {
        body(input);
    }
    let mut rng = StdRng::seed_from_u64(0x5e47a47);
    for _ in 0..MUTATIONS {
        let input = mutate(&mut rng, &corpus);
        let caught = std::panic::catch_unwind(|| body(&input));
        if let Err(panic) = caught {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{target} failed on an input mutated from its corpus (hex {hex}): {panic:?}");
        }
    }
}

#[test]
fn dns_query() {
    run("dns_query", targets::dns_query);
}

#[test]
fn forward_relay() {
    run("forward_relay", targets::forward_relay);
}

#[test]
fn consul_json() {
    run("consul_json", targets::consul_json);
}

#[test]
fn go_duration() {
    run("go_duration", targets::go_duration);
}

#[test]
fn zone_file() {
    run("zone_file", targets::zone_file);
}
