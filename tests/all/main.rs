//! The workspace's integration tests, one binary: each module is one area, run with
//! `cargo test -p esper-tests --test all -- MODULE::` (e.g. `run_job::`).

mod cli;
mod config_limits;
mod conformance;
mod containment;
mod controller;
mod example_plugin;
mod gpu;
mod layering;
mod parity;
mod plugin_loader;
mod portable;
mod run_job;
mod runtime_core;
mod transformer_blueprint_parity;
mod transformer_parity;
