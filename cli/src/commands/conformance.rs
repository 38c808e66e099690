//! `esper conformance LIB [--blueprint NAME] [--json] [--timeout-s S] [--memory-limit-gib G]`:
//! the plugin conformance suite, each blueprint's checks in a process of their own.

use anyhow::{Context, Result};
use clap::Args;
use esper_conformance::{run_suite_isolated, serve_blueprint, Limits, Progress, SuiteOptions};
use std::{path::PathBuf, process::ExitCode, time::Duration};

#[derive(Args)]
#[command(after_long_help = "\
Each blueprint's checks run in a process of their own (this binary again), so that a \
blueprint that hangs, hoards memory or crashes fails its own checks and the others still run:

  * --timeout-s: a blueprint whose checks are not done in time is killed; its `time_limit` \
check fails, naming the check it was in.
  * --memory-limit-gib: the process may take that much address space (RLIMIT_AS) beyond what \
it holds at start (the runtime and libtorch). An allocation past it fails the check it \
happened in and `memory_limit`. Not applied when the device-move check uses CUDA: the CUDA \
driver reserves far more address space than it uses, and a cap on address space breaks it \
(a note says so).

Each check is printed on stderr as it finishes; the report follows on stdout.")]
pub struct ConformanceArgs {
    /// The plugin library to check (e.g. target/debug/libmy_plugin.so).
    pub library: PathBuf,
    /// Check only this blueprint (`topology:name`, or the bare name when unambiguous).
    #[arg(long, value_name = "NAME")]
    pub blueprint: Option<String>,
    /// Print the report as JSON on stdout instead of the readable report.
    #[arg(long)]
    pub json: bool,
    /// Seconds each blueprint's checks may take in all before its process is killed.
    #[arg(long, value_name = "S", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
    /// GiB of memory (address space) each blueprint's process may take beyond what it
    /// holds at start; not applied on CUDA (see below).
    #[arg(long, value_name = "G", default_value_t = 8.0, value_parser = positive_gib)]
    pub memory_limit_gib: f64,
    /// Run the checks of this one blueprint here and stream them on stdout (what each
    /// blueprint's process runs).
    #[arg(long, value_name = "KEY", hide = true)]
    pub child_blueprint: Option<String>,
}

fn positive_gib(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(g) if g.is_finite() && g > 0.0 => Ok(g),
        _ => Err(format!("`{text}` is not a positive number of GiB")),
    }
}

impl ConformanceArgs {
    /// Prints the report; the exit status is non-zero when any check failed (warnings
    /// and skips do not fail).
    pub fn run(self) -> Result<ExitCode> {
        if let Some(key) = &self.child_blueprint {
            return self.serve(key);
        }
        let exe = std::env::current_exe().context("cannot locate the esper binary to run each blueprint's checks")?;
        let limits = Limits { timeout: Duration::from_secs(self.timeout_s), memory_gib: Some(self.memory_limit_gib) };
        let launch = |key: &str| {
            let mut command = std::process::Command::new(&exe);
            command
                .arg("conformance")
                .arg(&self.library)
                .args(["--child-blueprint", key, "--memory-limit-gib"])
                .arg(self.memory_limit_gib.to_string());
            command
        };
        let options = SuiteOptions { blueprint: self.blueprint.clone(), move_to: None };
        let report = run_suite_isolated(&self.library, &options, &limits, &launch, &mut print_progress);
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

    /// A blueprint's process: its checks, streamed on stdout.
    fn serve(&self, key: &str) -> Result<ExitCode> {
        let options = SuiteOptions { blueprint: None, move_to: None };
        let mut out = std::io::stdout();
        serve_blueprint(&self.library, key, &options, Some(self.memory_limit_gib), &mut out)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("conformance checks of blueprint `{key}`"))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// One line on stderr per finished check (and per note), as it happens.
fn print_progress(progress: Progress<'_>) {
    match progress {
        Progress::Check { blueprint, result } => eprintln!(
            "conformance: {:<27} {:<4}  {:<20} {}",
            blueprint.unwrap_or("(library)"),
            result.status,
            result.check,
            result.reason
        ),
        Progress::Note { blueprint, text } => eprintln!("conformance: {blueprint:<27} note: {text}"),
    }
}
