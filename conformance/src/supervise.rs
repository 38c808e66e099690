//! `esper conformance`'s side of the isolation: each blueprint's checks run in a process
//! of their own ([`serve_blueprint`](crate::serve_blueprint)), under a time limit and a
//! memory cap. Each check is passed on as it finishes; a process that runs past the
//! limit is killed, and one that dies (a signal, an abort, a nonzero exit) ends its
//! blueprint there: either way a failed check names the blueprint and the cause, the
//! checks it did not finish are skipped, and the other blueprints still run.

use super::{
    report::{BlueprintReport, Check, CheckResult, Status, SuiteReport},
    wire::{is_allocation_failure, Line},
    Prepared, SuiteOptions,
};
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// The limits of each blueprint's process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock time for all of a blueprint's checks, from its process's start.
    pub timeout: Duration,
    /// GiB of address space the process may take beyond what it holds at start
    /// ([`apply_memory_cap`](crate::apply_memory_cap)); `None`: no cap.
    pub memory_gib: Option<f64>,
}

/// What the supervisor has to tell as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A check finished: a library-level one (`blueprint` `None`) or a blueprint's.
    Check { blueprint: Option<&'a str>, result: &'a CheckResult },
    /// A note from a blueprint's process (no memory cap, and why).
    Note { blueprint: &'a str, text: &'a str },
}

/// Lines of a process's stderr kept for the report of how it died.
const STDERR_TAIL_LINES: usize = 12;
/// How often a process that closed its stdout is polled for its exit.
const POLL: Duration = Duration::from_millis(20);

/// Runs the suite on `library`: the library-level checks here, each blueprint's in a
/// process `launch(key)` starts (which must run [`serve_blueprint`](crate::serve_blueprint)
/// for that blueprint; its stdin, stdout and stderr are set here), under `limits`.
/// `progress` hears of every check as it finishes.
pub fn run_suite_isolated(
    library: &Path,
    options: &SuiteOptions,
    limits: &Limits,
    launch: &dyn Fn(&str) -> Command,
    progress: &mut dyn FnMut(Progress<'_>),
) -> SuiteReport {
    let prepared = match Prepared::new(library, options) {
        Ok(prepared) => prepared,
        Err(report) => {
            for result in &report.checks {
                progress(Progress::Check { blueprint: None, result });
            }
            return *report;
        }
    };
    for result in &prepared.checks {
        progress(Progress::Check { blueprint: None, result });
    }
    let blueprints = prepared.selected.iter().map(|key| supervise(key, launch(key), limits, &mut *progress)).collect();
    prepared.finish(blueprints)
}

/// How a blueprint's process ended.
#[derive(Debug)]
enum Ending {
    /// Killed at the time limit.
    TimedOut,
    Exited(ExitStatus),
    /// It could not be started or waited for.
    Lost(String),
}

/// What a blueprint's process told and how it ended.
struct Run {
    key: String,
    results: Vec<CheckResult>,
    in_flight: Option<Check>,
    memory_cap: Option<u64>,
    /// It said it reported every check.
    done: bool,
    ending: Ending,
    stderr_tail: String,
}

/// Runs one blueprint's process to its end (or the time limit) and builds its report.
fn supervise(
    key: &str,
    mut command: Command,
    limits: &Limits,
    progress: &mut dyn FnMut(Progress<'_>),
) -> BlueprintReport {
    let started = Instant::now();
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut run = Run {
        key: key.to_string(),
        results: Vec::new(),
        in_flight: None,
        memory_cap: None,
        done: false,
        ending: Ending::Lost(String::new()),
        stderr_tail: String::new(),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            run.ending = Ending::Lost(format!("cannot start it: {e}"));
            return conclude(run, limits);
        }
    };
    let events = child.stdout.take().map(read_events);
    let tail = child.stderr.take().map(keep_tail).unwrap_or_default();
    let deadline = started + limits.timeout;
    let mut timed_out = false;
    if let Some(events) = events {
        timed_out = follow(&mut run, &events, deadline, progress);
    }
    run.ending = if timed_out { kill(&mut child) } else { wait_until(&mut child, deadline) };
    // The stderr reader ends with the process; a moment for its last lines.
    std::thread::sleep(POLL);
    run.stderr_tail = tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
    conclude(run, limits)
}

/// Takes in the process's events until its stdout closes (false) or the deadline (true).
fn follow(
    run: &mut Run,
    events: &mpsc::Receiver<Line>,
    deadline: Instant,
    progress: &mut dyn FnMut(Progress<'_>),
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Line::Ready { memory_cap, note }) => {
                run.memory_cap = memory_cap;
                if let Some(text) = note {
                    progress(Progress::Note { blueprint: &run.key, text: &text });
                }
            }
            Ok(Line::Started { check }) => run.in_flight = Some(check),
            Ok(Line::Finished { check, status, reason }) => {
                let result = CheckResult::new(check, status, reason);
                progress(Progress::Check { blueprint: Some(&run.key), result: &result });
                run.results.push(result);
                run.in_flight = None;
            }
            Ok(Line::Done) => run.done = true,
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Reads the process's stdout on a thread: the protocol's events into the channel,
/// anything else (the plugin's own printing) to this process's stderr.
fn read_events(stdout: impl Read + Send + 'static) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines(stdout) {
            match Line::parse(&line) {
                Some(event) => {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                None if line.trim().is_empty() => {}
                None => eprintln!("{line}"),
            }
        }
    });
    rx
}

/// Passes the process's stderr on to this process's stderr, on a thread, keeping its
/// last lines.
fn keep_tail(stderr: impl Read + Send + 'static) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let kept = tail.clone();
    std::thread::spawn(move || {
        for line in lines(stderr) {
            let _ = writeln!(std::io::stderr(), "{line}");
            if let Ok(mut t) = kept.lock() {
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    });
    tail
}

/// The lines of `r`, any bytes taken as UTF-8 (lossily), until it closes or fails.
fn lines(r: impl Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(r);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string()),
        }
    })
}

fn kill(child: &mut Child) -> Ending {
    let _ = child.kill();
    let _ = child.wait();
    Ending::TimedOut
}

/// Waits for a process that closed its stdout, killing it at the deadline.
fn wait_until(child: &mut Child, deadline: Instant) -> Ending {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ending::Exited(status),
            Ok(None) if Instant::now() >= deadline => return kill(child),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Ending::Lost(format!("cannot wait for it: {e}")),
        }
    }
}

/// The blueprint's report: the checks its process finished, the others skipped saying
/// why, and a failed `time_limit`, `memory_limit` or `child_process` when the process
/// broke a limit or died.
fn conclude(run: Run, limits: &Limits) -> BlueprintReport {
    let Run { key, mut results, in_flight, memory_cap, done, ending, stderr_tail } = run;
    let at = in_flight.map_or_else(String::new, |c| format!(" in check `{c}`"));
    let capped = memory_cap.is_some();
    let cap_text = limits.memory_gib.map_or_else(String::new, |g| format!("{g} GiB"));
    let last_words = last_line(&stderr_tail);
    let verdict = match &ending {
        Ending::TimedOut => Some(CheckResult::fail(
            Check::TimeLimit,
            format!(
                "blueprint `{key}` did not finish within the time limit of {} s (--timeout-s){at}; its process was \
                 killed",
                limits.timeout.as_secs_f64()
            ),
        )),
        Ending::Exited(status) if !status.success() => {
            let how = describe(status);
            Some(if capped && is_allocation_failure(&stderr_tail) {
                CheckResult::fail(
                    Check::MemoryLimit,
                    format!(
                        "blueprint `{key}` ran out of its memory cap of {cap_text} (--memory-limit-gib){at}: its \
                         process {how}{last_words}"
                    ),
                )
            } else {
                CheckResult::fail(Check::ChildProcess, format!("blueprint `{key}`: its process {how}{at}{last_words}"))
            })
        }
        Ending::Exited(_) => {
            let over_cap = results.iter().find(|r| r.status == Status::Fail && is_allocation_failure(&r.reason));
            match over_cap {
                Some(r) if capped => Some(CheckResult::fail(
                    Check::MemoryLimit,
                    format!(
                        "blueprint `{key}`: an allocation failed under its memory cap of {cap_text} \
                         (--memory-limit-gib) in check `{}`: {}",
                        r.check, r.reason
                    ),
                )),
                _ => None,
            }
        }
        Ending::Lost(why) => {
            Some(CheckResult::fail(Check::ChildProcess, format!("blueprint `{key}`'s process: {why}")))
        }
    };
    let verdict = verdict.or_else(|| {
        (!done).then(|| {
            CheckResult::fail(
                Check::ChildProcess,
                format!("blueprint `{key}`: its process ended before its last check"),
            )
        })
    });
    if !done {
        let why_not_run = match &ending {
            Ending::TimedOut => "its process was killed at the time limit".to_string(),
            Ending::Exited(status) => format!("its process {}", describe(status)),
            Ending::Lost(why) => why.clone(),
        };
        let missing: Vec<Check> = Check::blueprint().filter(|c| results.iter().all(|r| r.check != *c)).collect();
        for check in missing {
            let reason = if Some(check) == in_flight {
                format!("did not finish: {why_not_run}")
            } else {
                format!("not run: {why_not_run}")
            };
            results.push(CheckResult::skip(check, reason));
        }
    }
    results.extend(verdict);
    BlueprintReport::new(key, results)
}

/// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}{}", signal_name(signal));
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended without a status".into(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => " (SIGILL)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        8 => " (SIGFPE)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// `; it last said: ...` with the process's last non-empty stderr line, if any.
fn last_line(tail: &str) -> String {
    tail.lines().rev().find(|l| !l.trim().is_empty()).map_or_else(String::new, |l| format!("; it last said: {l}"))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::wire::Line;

    /// A stand-in for a blueprint's process: `sh -c script`, with the protocol's lines
    /// for `lines` written first.
    fn process(lines: &[Line], script: &str) -> Command {
        let quoted = |text: String| format!("'{}'", text.replace('\'', r"'\''"));
        let said: String = lines.iter().map(|l| format!("printf '%s\\n' {}; ", quoted(l.to_text()))).collect();
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("{said}{script}"));
        command
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits { timeout: Duration::from_millis(timeout_ms), memory_gib: Some(2.0) }
    }

    fn ready(capped: bool) -> Line {
        Line::Ready { memory_cap: capped.then_some(1 << 31), note: None }
    }

    fn finished(check: Check) -> Line {
        Line::finished(&CheckResult::pass(check, "fine"))
    }

    fn supervised(lines: &[Line], script: &str, timeout_ms: u64) -> (BlueprintReport, Vec<Check>) {
        let mut heard = Vec::new();
        let report = supervise("cnn:x", process(lines, script), &limits(timeout_ms), &mut |p| {
            if let Progress::Check { result, .. } = p {
                heard.push(result.check);
            }
        });
        (report, heard)
    }

    fn only_failure(report: &BlueprintReport) -> &CheckResult {
        let failed: Vec<&CheckResult> = report.failed().collect();
        assert_eq!(failed.len(), 1, "{report:#?}");
        failed[0]
    }

    #[test]
    fn a_process_that_reports_everything_gives_exactly_its_report() {
        let mut lines = vec![ready(true)];
        lines.extend(Check::blueprint().map(finished));
        lines.push(Line::Done);
        let (report, heard) = supervised(&lines, "echo the plugin prints this; exit 0", 20_000);
        assert!(report.passed, "{report:#?}");
        let checks: Vec<Check> = report.checks.iter().map(|c| c.check).collect();
        assert_eq!(checks, Check::blueprint().collect::<Vec<_>>());
        assert_eq!(heard, checks, "every check passed on as it finished");
    }

    #[test]
    fn a_hang_is_killed_at_the_time_limit_naming_the_blueprint_and_the_check() {
        let lines = [ready(true), finished(Check::Metadata), Line::Started { check: Check::Create }];
        let started = Instant::now();
        let (report, heard) = supervised(&lines, "exec sleep 30", 500);
        assert!(started.elapsed() < Duration::from_secs(10), "killed, not waited for: {:?}", started.elapsed());
        assert_eq!(heard, [Check::Metadata]);
        let fail = only_failure(&report);
        assert_eq!(fail.check, Check::TimeLimit);
        assert!(fail.reason.contains("`cnn:x`") && fail.reason.contains("0.5 s") && fail.reason.contains("`create`"));
        let create = report.check(Check::Create).unwrap();
        assert_eq!(create.status, Status::Skip);
        assert!(create.reason.starts_with("did not finish: its process was killed at the time limit"), "{create:?}");
        assert!(report.check(Check::NoPanic).is_some_and(|c| c.reason.starts_with("not run: ")));
    }

    #[test]
    fn a_death_by_allocation_failure_under_the_cap_is_a_memory_limit_failure() {
        let lines = [ready(true), Line::Started { check: Check::Create }];
        let script = "echo 'memory allocation of 17179869184 bytes failed' >&2; kill -ABRT $$";
        let (report, _) = supervised(&lines, script, 20_000);
        let fail = only_failure(&report);
        assert_eq!(fail.check, Check::MemoryLimit, "{report:#?}");
        for words in ["`cnn:x`", "memory cap of 2 GiB", "`create`", "signal 6 (SIGABRT)", "memory allocation of"] {
            assert!(fail.reason.contains(words), "{words:?}: {}", fail.reason);
        }
        // Without a cap the same death is the process's, not the cap's.
        let (report, _) = supervised(&[ready(false), Line::Started { check: Check::Create }], script, 20_000);
        assert_eq!(only_failure(&report).check, Check::ChildProcess);
    }

    #[test]
    fn an_allocation_error_reported_by_a_check_under_the_cap_is_a_memory_limit_failure() {
        let torch = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 17179869184 bytes";
        let mut lines = vec![ready(true)];
        lines.extend(Check::blueprint().map(|c| match c {
            Check::FiniteOutputs => Line::finished(&CheckResult::fail(c, format!("forward failed: {torch}"))),
            _ => finished(c),
        }));
        lines.push(Line::Done);
        let (report, _) = supervised(&lines, "exit 0", 20_000);
        let memory = report.check(Check::MemoryLimit).expect("memory_limit reported");
        assert_eq!(memory.status, Status::Fail);
        assert!(memory.reason.contains("`cnn:x`") && memory.reason.contains("`finite_outputs`"), "{memory:?}");
    }

    #[test]
    fn a_crash_or_an_early_exit_fails_the_blueprint_and_skips_the_rest() {
        let lines = [ready(true), finished(Check::Metadata), Line::Started { check: Check::Create }];
        let (report, _) = supervised(&lines, "echo 'Segmentation fault' >&2; kill -SEGV $$", 20_000);
        let fail = only_failure(&report);
        assert_eq!(fail.check, Check::ChildProcess);
        assert!(fail.reason.contains("signal 11 (SIGSEGV) in check `create`"), "{}", fail.reason);
        assert!(fail.reason.contains("it last said: Segmentation fault"), "{}", fail.reason);
        assert_eq!(report.check(Check::Metadata).map(|c| c.status), Some(Status::Pass));

        let (report, _) = supervised(&lines[..2], "exit 0", 20_000);
        let fail = only_failure(&report);
        assert_eq!(fail.check, Check::ChildProcess);
        assert!(fail.reason.contains("ended before its last check"), "{}", fail.reason);
        let (report, _) = supervised(&lines[..2], "exit 3", 20_000);
        assert!(only_failure(&report).reason.contains("exited with status 3"));
    }
}
