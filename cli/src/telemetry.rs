//! Telemetry through `tracing`: readable logs on stderr, optionally every event as a
//! JSON line in a file, and progress bars on a terminal (none otherwise).
//!
//! Lifecycle events carry an `event` field (`germinated`, `germination_failed`,
//! `gate_evaluated`, `stage_changed`, `pruned`, `seed_fault`, `quarantined`,
//! `action_failed`, `release_failed`: see `esper_runtime::lifecycle::LifecycleEvent`),
//! their `slot`, and the event as JSON in `record`; `epoch` is each epoch's summary.

use indicatif::{MultiProgress, ProgressDrawTarget};
use std::{
    io::{IsTerminal, Write},
    path::Path,
    sync::Mutex,
};
use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Writes log lines to stderr with the progress bars moved out of the way.
#[derive(Clone)]
struct BarAwareStderr(MultiProgress);

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarAwareStderr {
    type Writer = BarAwareStderr;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber at `level` (`RUST_LOG` overrides it). Returns the
/// progress-bar container: drawing on a terminal, hidden when stderr is not one.
pub fn init(level: &str, jsonl: Option<&Path>) -> anyhow::Result<MultiProgress> {
    let progress = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only for a terminal: redirected logs stay free of escape codes.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(BarAwareStderr(progress.clone()))
        .with_filter(filter());
    let json = match jsonl {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Never through a link: a symlinked events.jsonl is refused, its target left alone.
            let file = esper_runtime::run_folder::files::open_append(path)?;
            // The file is the run's record: it keeps every info event whatever the console shows.
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(Mutex::new(file))
                    .with_filter(EnvFilter::new("info")),
            )
        }
        None => None,
    };
    // A second init (tests running several jobs in one process) keeps the first.
    let _ = tracing_subscriber::registry().with(stderr).with(json).try_init();
    Ok(progress)
}
