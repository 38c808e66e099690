//! The plain text view of `esper watch --plain` (and of any watch whose stdout is not a
//! terminal): a status line, the epoch table as `esper run` prints it, the slot grid
//! and the latest events.

use super::view::RunView;
use crate::report;
use std::fmt::Write as _;

/// The view as text. `last_epochs` keeps only the latest rows of the table (the
/// refreshed view of a live run); `None` prints every epoch.
pub fn text(view: &RunView, last_epochs: Option<usize>, last_events: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "esper watch {}: {}", view.dir.display(), view.status.label());
    if let Some(last) = view.epochs.last() {
        let _ = write!(out, ", epoch {}", last.epoch);
    }
    out.push('\n');
    if view.epochs.is_empty() {
        out.push_str("no epoch done yet\n");
        return out;
    }
    let shown = last_epochs.map_or(0, |n| view.epochs.len().saturating_sub(n));
    out.push_str(&report::table(&view.epochs[shown..]));
    out.push_str("slots:\n");
    for s in view.slots() {
        let _ = write!(out, "  {:<6} {:<10} alpha {:.2}", s.slot, s.stage.to_string(), s.alpha);
        if let Some(seed) = &s.seed {
            let _ = write!(
                out,
                "  {} ({} parameters, {} epochs in stage)",
                seed.blueprint, seed.parameters, seed.epochs_in_stage
            );
        }
        if let Some(c) = s.contribution {
            let _ = write!(out, "  contribution {c:+.2}");
        }
        out.push('\n');
    }
    let events = &view.log[view.log.len().saturating_sub(last_events)..];
    if !events.is_empty() {
        out.push_str("events:\n");
        for e in events {
            let _ = writeln!(out, "  {:>3} {}", e.epoch, esper_runtime::plugin::text::sanitize(&e.text()));
        }
    }
    out
}
