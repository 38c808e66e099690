//! `esper watch [RUN_DIR]`: a live view of a run another process is writing, or a replay
//! of a finished one, from the run folder's files alone (it never takes the folder's
//! lock). On a terminal, a dashboard (ratatui); otherwise, or with `--plain`, a text
//! view printed again as each epoch ends.
//!
//! * `view`: the [`view::RunView`] read from the files, and the [`view::Follower`] that
//!   tails them;
//! * `ui`: the dashboard, drawn from a view alone;
//! * `plain`: the text view.

pub mod plain;
pub mod ui;
pub mod view;

use anyhow::{bail, Result};
use clap::Args;
use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};
use view::{Follower, RunStatus};

#[derive(Args)]
pub struct WatchArgs {
    /// The run folder (the `[output] dir` of the run).
    #[arg(default_value = "runs/default")]
    run_dir: PathBuf,
    /// Print a text view instead of the dashboard (the default when stdout is not a
    /// terminal): again after each epoch, then the whole table when the run ends.
    #[arg(long)]
    plain: bool,
    /// Print the text view once and exit.
    #[arg(long)]
    once: bool,
    /// How often to look for new output, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
}

/// Lines of the event log a text view shows.
const PLAIN_EVENTS: usize = 12;
/// Epoch rows of a live run's refreshed text view.
const PLAIN_LIVE_EPOCHS: usize = 8;

impl WatchArgs {
    pub fn run(self) -> Result<ExitCode> {
        if self.once {
            return self.once();
        }
        if self.plain || !std::io::stdout().is_terminal() {
            return self.plain();
        }
        self.dashboard()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// `--once`: the run as its files show it now.
    fn once(&self) -> Result<ExitCode> {
        let mut follower = Follower::new(&self.run_dir);
        follower.poll().map_err(anyhow::Error::msg)?;
        let view = follower.view();
        if view.status == RunStatus::Waiting && view.epochs.is_empty() {
            bail!(
                "{} holds no run yet (no events.jsonl, report.json or running esper); pass the run's folder \
                 (its [output] dir), or leave out --once to wait for the run",
                self.run_dir.display()
            );
        }
        print!("{}", plain::text(&view, None, PLAIN_EVENTS));
        Ok(ExitCode::SUCCESS)
    }

    /// The text view, printed when it changes, until the run is over; then the whole
    /// table.
    fn plain(&self) -> Result<ExitCode> {
        let mut follower = Follower::new(&self.run_dir);
        let mut shown: Option<(RunStatus, usize, usize)> = None;
        let mut out = std::io::stdout().lock();
        loop {
            let problem = follower.poll().err();
            let view = follower.view();
            let now = (view.status, view.epochs.len(), view.log.len());
            if shown != Some(now) {
                if view.status.is_over() {
                    writeln!(out, "{}", plain::text(&view, None, PLAIN_EVENTS))?;
                    return Ok(ExitCode::SUCCESS);
                }
                writeln!(out, "{}", plain::text(&view, Some(PLAIN_LIVE_EPOCHS), PLAIN_EVENTS))?;
                out.flush()?;
                shown = Some(now);
            }
            if let Some(problem) = problem {
                eprintln!("esper watch: {problem}");
            }
            std::thread::sleep(self.interval());
        }
    }

    /// The dashboard, until `q`; it stays on the final state when the run ends.
    fn dashboard(&self) -> Result<ExitCode> {
        use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
        let mut follower = Follower::new(&self.run_dir);
        let mut ui = ui::UiState::default();
        let mut terminal = ratatui::init();
        let outcome = (|| -> Result<()> {
            loop {
                // A read problem shows in the footer; the view keeps what was read before.
                let problem = follower.poll().err();
                let view = view::RunView { problem, ..follower.view() };
                terminal.draw(|frame| ui::draw(frame, &view, &ui))?;
                if !event::poll(self.interval())? {
                    continue;
                }
                let Event::Key(key) = event::read()? else { continue };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                match key.code {
                    KeyCode::Char('q') => return Ok(()),
                    KeyCode::Char('?') => ui.help = !ui.help,
                    KeyCode::Esc => (ui.help, ui.selected) = (false, None),
                    KeyCode::Down | KeyCode::Right => ui.select(1, view.slots().len()),
                    KeyCode::Up | KeyCode::Left => ui.select(-1, view.slots().len()),
                    _ => {}
                }
            }
        })();
        ratatui::restore();
        outcome.map(|()| ExitCode::SUCCESS)
    }
}
