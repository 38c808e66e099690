//! The Esper seed runtime, as a library: no terminal, no command line, no drawing
//! (those are the `esper` binary's, crate `esper-cli`; the plugin conformance suite is
//! crate `esper-conformance`).
//!
//! * [`data`]: training data: the embedded synthetic image set, CIFAR-10, batching.
//! * [`host`]: host networks (the CNN backbone) and their injection points.
//! * [`blend`]: the blend settings (algorithm, alpha curve, tempo, target) and their defaults.
//! * [`isolation`]: the isolation layer every seed goes through, and the gradient monitor.
//! * [`lifecycle`]: seed stages, transitions, gates, alpha schedule and metrics.
//! * [`model`]: the morphogenetic model: host plus seed slots, germinate, prune, forward.
//! * [`config`]: the run config (TOML).
//! * [`control`]: who decides the lifecycle (the heuristic, a controller plugin, a
//!   caller's decision maker), the observation it sees and the validation of its decisions.
//! * [`train`]: the training job, controller, checkpoints and the run's record.
//! * [`run_folder`]: a run's output folder: its lock, and its files written safely.
//! * [`plugin`]: the plugin loader and blueprint registry (dynamic blueprint plugins
//!   through the stable ABI in `esper-plugin-api`).
//! * [`error`]: the library's [`Error`]: one variant per module's error, causes chained
//!   as sources.

#![forbid(unsafe_code)]

pub mod blend;
pub mod config;
pub mod control;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub mod host;
pub mod isolation;
pub mod lifecycle;
pub mod model;
pub mod plugin;
pub mod run_folder;
pub mod torch_error;
pub mod train;

pub use error::{Error, Result};

/// A fresh, empty folder under the temp folder for one unit test, unique to this process
/// and `name`.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("esper-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a unit test's temp folder");
    dir
}
