//! The workspace's integration tests but for whole training jobs (`tests/jobs`): each
//! module is one area, run with `cargo test -p esper-tests --test all -- MODULE::` (e.g.
//! `runtime_core::`).

mod cli;
mod config_limits;
mod conformance;
mod controller;
mod custom_host;
mod decisions;
mod example_plugin;
mod gpu;
mod host_seam;
mod layering;
mod parity;
mod plugin_loader;
mod portable;
mod runtime_core;
mod transformer_blueprint_parity;
mod transformer_parity;
