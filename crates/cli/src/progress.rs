//! Progress bars for long offline work, drawn on standard error only when a
//! person is watching: when stdout is a terminal (mkfs, check), or for
//! `print`, when its output is redirected and stderr is a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use scoutfs_core::progress::Progress;
use std::io::IsTerminal;

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn for_stdout() -> Bar {
        Bar::new(std::io::stdout().is_terminal())
    }

    pub fn for_redirected_stdout() -> Bar {
        Bar::new(!std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
    }

    fn new(show: bool) -> Bar {
        Bar {
            bar: show.then(ProgressBar::hidden),
        }
    }

    pub fn spin(&mut self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(what.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
        }
    }

    pub fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn begin(&mut self, stage: &str, total: u64) {
        let Some(b) = &self.bar else { return };
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        b.reset();
        b.set_length(total);
        let tmpl = if total > 0 {
            "{msg} [{bar:40}] {pos}/{len} blocks {elapsed}"
        } else {
            "{spinner} {msg} {pos} blocks {elapsed}"
        };
        b.set_style(
            ProgressStyle::with_template(tmpl).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(stage.to_string());
    }

    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
