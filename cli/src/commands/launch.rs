//! `esper run --nproc N ...`: N local ranks of one run, each this same command as a child
//! process with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`). SIGINT and SIGTERM are passed on to every rank (each stops at its next
//! step, as a single run does). When a rank fails, the others are given the run's
//! `[distributed] timeout_s` to end by themselves (their next collective fails naming the
//! rank they waited for), then ended; the exit code is the first failing rank's.

use anyhow::{Context, Result};
use nix::{sys::signal::Signal, unistd::Pid};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::{
    ffi::OsString,
    process::{Child, Command, ExitCode, ExitStatus},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// This command's arguments without `--nproc N` (or `--nproc=N`), for the ranks.
pub fn without_nproc(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--nproc") => {
                it.next();
            }
            Some(s) if s.starts_with("--nproc=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// A free TCP port on the loopback for rank 0's store.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for the ranks' store")?;
    Ok(listener.local_addr()?.port())
}

/// libtorch's CPU threads for each of `nproc` ranks on `cores` cores: an equal share, so
/// the ranks do not oversubscribe the machine (torchrun gives each rank 1).
fn threads_per_rank(nproc: usize, cores: usize) -> usize {
    (cores / nproc.max(1)).max(1)
}

/// Runs `nproc` ranks of `args` (this command's, `--nproc` removed) and waits for them.
/// Unless `OMP_NUM_THREADS` is set, each rank gets its share of the cores for libtorch's
/// CPU threads.
pub fn launch(nproc: usize, args: Vec<OsString>, timeout: Duration) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot locate the esper binary")?;
    let port = free_port()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads =
        std::env::var_os("OMP_NUM_THREADS").unwrap_or_else(|| threads_per_rank(nproc, cores).to_string().into());
    let received = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&received), sig as usize)
            .context("installing the SIGINT and SIGTERM handlers")?;
    }
    let mut ranks: Vec<Child> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .args(&args)
            .env("WORLD_SIZE", nproc.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", &threads)
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .spawn()
            .with_context(|| format!("starting rank {rank} of {nproc}"));
        match child {
            Ok(c) => ranks.push(c),
            Err(e) => {
                end_all(&mut ranks);
                return Err(e);
            }
        }
    }
    Ok(wait_all(ranks, &received, timeout))
}

/// Waits for every rank, passing signals on; after the first failure, ends those still
/// running once `timeout` has passed.
fn wait_all(mut ranks: Vec<Child>, received: &AtomicUsize, timeout: Duration) -> ExitCode {
    let mut status: Vec<Option<ExitStatus>> = vec![None; ranks.len()];
    let mut first_failure: Option<(usize, ExitStatus, Instant)> = None;
    loop {
        let sig = received.swap(0, Ordering::SeqCst);
        if sig != 0 {
            let signal = if sig == SIGTERM as usize { Signal::SIGTERM } else { Signal::SIGINT };
            for (r, child) in ranks.iter().enumerate() {
                if status[r].is_none() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), signal);
                }
            }
        }
        for (r, child) in ranks.iter_mut().enumerate() {
            if status[r].is_none() {
                if let Ok(Some(s)) = child.try_wait() {
                    status[r] = Some(s);
                    if !s.success() && !stopped(s) && first_failure.is_none() {
                        eprintln!(
                            "esper: rank {r} exited with {s}; waiting up to {} s for the others",
                            timeout.as_secs()
                        );
                        first_failure = Some((r, s, Instant::now()));
                    }
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if let Some((_, _, since)) = first_failure {
            if since.elapsed() > timeout {
                eprintln!("esper: ending the ranks still running after the timeout");
                end_all(&mut ranks);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        // Ranks stopped by a signal (every rank stops at the same step): their exit code.
        None => status
            .iter()
            .flatten()
            .find(|s| stopped(**s))
            .and_then(|s| s.code())
            .map_or(ExitCode::SUCCESS, |c| ExitCode::from(u8::try_from(c).unwrap_or(1))),
        Some((rank, s, _)) => {
            eprintln!("esper: the run failed: rank {rank} exited with {s}");
            ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1))
        }
    }
}

/// A rank that ended as a run stopped by SIGINT or SIGTERM does (exit 130 or 143).
fn stopped(s: ExitStatus) -> bool {
    matches!(s.code(), Some(130 | 143))
}

fn end_all(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_gets_an_equal_share_of_the_cores_and_at_least_one() {
        assert_eq!(threads_per_rank(2, 16), 8);
        assert_eq!(threads_per_rank(3, 16), 5);
        assert_eq!(threads_per_rank(4, 2), 1);
        assert_eq!(threads_per_rank(1, 2), 2);
    }

    #[test]
    fn the_ranks_get_the_arguments_without_nproc() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(without_nproc(args(&["run", "--nproc", "2", "a.toml"])), args(&["run", "a.toml"]));
        assert_eq!(
            without_nproc(args(&["run", "a.toml", "--nproc=4", "--epochs", "3"])),
            args(&["run", "a.toml", "--epochs", "3"])
        );
    }
}
