//! The process's log: `tracing` events from the core and this binary,
//! filtered by level and target, one line each on stderr.
//!
//! The filter is `--log-level` if given, else `$SCOUTFS_LOG`, else `info`,
//! in `tracing`'s directive syntax: a level (`debug`), or targets with
//! levels (`info,scoutfs_core::cluster::lock=debug`). Targets are module
//! paths: the core's layers (`scoutfs_core::store`, `scoutfs_core::cluster`,
//! `scoutfs_core::cluster::lock`, `scoutfs_core::mount`, ...) and this
//! binary's (`scoutfs::fuse`, `scoutfs::mount`, ...).
//!
//! A line reads
//! `2026-12-06T13:16:22.123Z INFO scoutfs_core::cluster::elected rid=964bca0ad8c895e7 term=3: message key=value`:
//! the time (UTC), the level, the target, the mount's id and the server
//! term it last saw (once it has them), the message and the event's fields.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The filter when neither `--log-level` nor `SCOUTFS_LOG` gives one.
pub const DEFAULT_FILTER: &str = "info";

/// Sets up the log for this process. A filter that does not parse is an
/// error for the user (nothing is logged yet).
pub fn init(level: Option<&str>) -> Result<(), String> {
    let spec = match level {
        Some(l) => l.to_string(),
        None => std::env::var("SCOUTFS_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string()),
    };
    let filter = EnvFilter::builder()
        .parse(&spec)
        .map_err(|e| format!("log filter {spec:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line)
        .try_init()
        .map_err(|e| format!("setting up the log: {e}"))
}

/// The format of one line (see the module comment).
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(w, "{} {} {}", Utc::now(), meta.level(), meta.target())?;
        let (rid, term) = (scoutfs_core::log::rid(), scoutfs_core::log::term());
        if rid != 0 {
            write!(w, " rid={rid:016x}")?;
        }
        if term != 0 {
            write!(w, " term={term}")?;
        }
        w.write_str(": ")?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A UTC time to the millisecond, as RFC 3339.
struct Utc {
    secs: i64,
    millis: u32,
}

impl Utc {
    fn now() -> Utc {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Utc {
            secs: d.as_secs() as i64,
            millis: d.subsec_millis(),
        }
    }
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, rem) = (self.secs.div_euclid(86_400), self.secs.rem_euclid(86_400));
        let (y, m, d) = scoutfs_core::clock::civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            self.millis
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        let t = |secs, millis| Utc { secs, millis }.to_string();
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(t(1_796_563_916, 536), "2026-12-06T13:31:56.536Z");
        assert_eq!(t(-1, 999), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_bad_filter_is_a_clear_error() {
        let e = init(Some("info,scoutfs_core=loud")).unwrap_err();
        assert!(e.contains("log filter"), "{e}");
    }
}
