//! Progress of long offline work, reported to whoever shows it (the CLI
//! draws a bar when stdout is a terminal; tests pass [`NoProgress`]).

pub trait Progress {
    /// A new stage of `total` units (0 when unknown).
    fn begin(&mut self, stage: &str, total: u64);
    /// `n` more units of the current stage are done.
    fn advance(&mut self, n: u64);
    /// The current stage is finished.
    fn finish(&mut self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}
