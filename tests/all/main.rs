//! The workspace's integration tests, one binary: each module is one area, run with
//! `cargo test -p esper-tests --test all -- MODULE::` (e.g. `run_job::`).

mod cli;
mod config_limits;
mod conformance;
mod containment;
mod controller;
mod custom_host;
mod example_plugin;
mod gpu;
mod host_seam;
mod layering;
mod parity;
mod plugin_loader;
mod portable;
mod run_job;
mod runtime_core;
