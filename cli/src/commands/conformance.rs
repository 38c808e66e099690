//! `esper conformance LIB [--blueprint NAME] [--json]`: the plugin conformance suite.

use anyhow::Result;
use clap::Args;
use esper_conformance::{run_suite, SuiteOptions};
use std::{path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct ConformanceArgs {
    /// The plugin library to check (e.g. target/debug/libmy_plugin.so).
    pub library: PathBuf,
    /// Check only this blueprint (`topology:name`, or the bare name when unambiguous).
    #[arg(long, value_name = "NAME")]
    pub blueprint: Option<String>,
    /// Print the report as JSON on stdout instead of the readable report.
    #[arg(long)]
    pub json: bool,
}

impl ConformanceArgs {
    /// Prints the report; the exit status is non-zero when any check failed (warnings
    /// and skips do not fail).
    pub fn run(self) -> Result<ExitCode> {
        let report = run_suite(&self.library, &SuiteOptions { blueprint: self.blueprint, move_to: None });
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.render());
        }
        if report.passed {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("error: {} is not conformant: {} check(s) failed", self.library.display(), report.summary.fail);
            Ok(ExitCode::FAILURE)
        }
    }
}
