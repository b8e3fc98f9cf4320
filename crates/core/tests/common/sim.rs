//! What every seeded simulation shares: which seeds to run (a fixed count
//! split into parts that run as parallel tests, or the one seed being
//! replayed), and what a failure prints.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Totals of a simulation's counters over the seeds of one part.
pub trait Totals: Default + std::fmt::Debug {
    fn add(&mut self, other: &Self);
}

/// `SCOUTFS_SIM_SEED=<n>`: the one seed to replay, with tracing.
pub fn replay_seed() -> Option<u64> {
    let s = std::env::var("SCOUTFS_SIM_SEED").ok()?;
    match s.parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("SCOUTFS_SIM_SEED={s} is not a number"),
    }
}

/// `SCOUTFS_SIM_SEEDS=<n>` runs more seeds (a longer soak), else `default`.
pub fn seed_count(default: u64) -> u64 {
    match std::env::var("SCOUTFS_SIM_SEEDS") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SCOUTFS_SIM_SEEDS={s} is not a number")),
        Err(_) => default,
    }
}

/// Runs part `part` of `parts` of simulation `name` (its test binary's
/// name): every `parts`-th of `seeds` seeds, or the replayed seed in part
/// 0. A failing seed prints itself and the command that replays it.
pub fn run_part<S: Totals>(
    name: &str,
    part: u64,
    parts: u64,
    seeds: u64,
    run_seed: impl Fn(u64, bool) -> S,
) {
    let replay = replay_seed();
    let list: Vec<u64> = match replay {
        Some(seed) if part == 0 => vec![seed],
        Some(_) => Vec::new(),
        None => (0..seed_count(seeds))
            .filter(|s| s % parts == part)
            .collect(),
    };
    let trace = replay.is_some();
    let mut totals = S::default();
    for seed in list {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, trace))) {
            Ok(st) => totals.add(&st),
            Err(e) => {
                eprintln!("{name}: seed {seed} failed");
                eprintln!(
                    "replay: SCOUTFS_SIM_SEED={seed} cargo test -p scoutfs-core --test {name}"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{name} part {part}: {totals:?}");
}
