//! `esper`: the runtime's command line (see `esper --help`).
//!
//! * `commands`: one module per command family (`run`, `plugins`, `config`, `conformance`);
//! * `telemetry`: logs on stderr and `events.jsonl` (tracing);
//! * `progress`: the progress bars (the trainer's observer);
//! * `report`: the end-of-run table, `report.png` and the TensorBoard event files;
//! * `signals`: SIGINT and SIGTERM stop a run at the next step;
//! * `watch`: `esper watch`, the live view of a run from its folder.

#![forbid(unsafe_code)]

mod commands;
mod progress;
mod report;
mod signals;
mod telemetry;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
    match commands::Cli::parse().run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", readable(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error chain as `{:#}` prints it (`outer: inner: ...`), each cause without the C++
/// frame list a libtorch error carries; the full text goes to the debug log.
fn readable(e: &anyhow::Error) -> String {
    tracing::debug!(error = ?e, "error (full text)");
    let causes: Vec<String> = e.chain().map(|c| esper_runtime::torch_error::summary(&c.to_string())).collect();
    causes.join(": ")
}

#[cfg(test)]
mod tests {
    use super::readable;
    use anyhow::Context;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_libtorch_error_is_printed_as_its_reason_with_its_context() {
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let e = a.f_matmul(&Tensor::zeros([4, 5], (Kind::Float, Device::Cpu))).context("epoch 1: training failed");
        let Err(e) = e else { panic!("mismatched shapes must fail") };
        assert!(format!("{e:#}").contains("frame #"), "premise: libtorch's text has frames: {e:#}");
        let shown = readable(&e);
        assert!(shown.starts_with("epoch 1: training failed: "), "{shown}");
        assert!(shown.contains("shapes cannot be multiplied (2x3 and 4x5)"), "{shown}");
        assert!(!shown.contains("frame #") && !shown.contains("Exception raised from"), "{shown}");
    }
}
