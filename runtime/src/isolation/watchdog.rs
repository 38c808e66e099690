//! The seed watchdog (`[training] seed_timeout_s`): one thread per run that watches the
//! plugin call in flight and says so, while it still runs, when it takes too long.
//!
//! * **Per call**, the caller only stores what runs (the seed, the phase, when it started,
//!   its allowance) in a mutex and clears it afterwards: no allocation, no device sync.
//! * **The thread** wakes a few times per limit; once a call has run past its allowance
//!   it emits a [`LifecycleEvent::SeedOverdue`] (a WARN naming slot, seed, blueprint and
//!   plugin file, and a `seed_overdue` line in `events.jsonl`) and keeps the event for
//!   the epoch's record ([`SeedWatch::take_reported`]); while the call goes on it repeats
//!   a WARN every [`REMINDER`] (or every limit, if longer).
//! * **When the call returns**, [`CallGuard::finish`] says whether it was overdue: a seed
//!   forward that was is a fault of its seed ([`super::FaultKind::Timeout`]; pruned, the
//!   step redone without it).
//! * **What is watched.** Every seed forward (the germination probe's included), with
//!   [`FIRST_CALL_FACTOR`] times the limit for a seed's first call in train mode and its
//!   first in eval mode (plugins initialise lazily there). The backward pass while seeds
//!   run is watched as a whole and reported, never pinned on a seed: it runs no plugin
//!   code (a plugin cannot define a backward; the autograd engine runs libtorch's kernels
//!   for the ops the host and every seed recorded, together), so its time cannot be
//!   divided among them. A seed whose recorded ops make the backward slow made its own
//!   forward slow first.
//! * **What cannot be done.** A call that never returns cannot be stopped inside the
//!   process (a thread cannot be killed safely; the plugin's code holds libtorch's and
//!   its own state): the run stays blocked and the watchdog keeps saying so. End the
//!   process and resume from the last complete checkpoint.

use crate::lifecycle::LifecycleEvent;
use serde::{Deserialize, Serialize};
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// A seed's first call in each mode may take this many times the limit.
pub const FIRST_CALL_FACTOR: u32 = 5;

/// How often, at least, the watchdog repeats that an overdue call still runs.
pub const REMINDER: Duration = Duration::from_secs(30);

/// What a watched call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchPhase {
    /// One seed's forward.
    Forward,
    /// The backward pass of a step while seeds run (host and seeds together).
    Backward,
}

/// Who a seed is, for the watchdog's messages (made once per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedIdentity {
    pub slot: String,
    pub seed_id: String,
    pub blueprint: String,
    pub plugin: PathBuf,
}

/// A seed as its slot watches it: who it is, and which of its first calls (train mode,
/// eval mode) are done.
#[derive(Debug)]
pub struct WatchedSeed {
    identity: Arc<SeedIdentity>,
    first_done: [AtomicBool; 2],
}

impl WatchedSeed {
    pub fn new(identity: SeedIdentity) -> Self {
        Self { identity: Arc::new(identity), first_done: [AtomicBool::new(false), AtomicBool::new(false)] }
    }

    pub fn identity(&self) -> &SeedIdentity {
        &self.identity
    }
}

/// The call in flight.
struct Call {
    /// The seed of a forward; none for the backward (the live seeds are named then).
    seed: Option<Arc<SeedIdentity>>,
    phase: WatchPhase,
    started: Instant,
    allowance: Duration,
    /// Tells one call from the next.
    number: u64,
}

struct Shared {
    limit: Duration,
    call: Mutex<Option<Call>>,
    calls: AtomicU64,
    /// Seeds installed in a slot, for the backward's report.
    live: Mutex<Vec<Arc<SeedIdentity>>>,
    /// Events emitted and not yet taken into an epoch's record.
    reported: Mutex<Vec<LifecycleEvent>>,
    has_reported: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while it was held; the data (plain
    // values) is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle every slot holds: begins and ends watched calls.
#[derive(Clone)]
pub struct SeedWatch {
    shared: Arc<Shared>,
}

/// A call over its allowance, as seen when it returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overdue {
    pub phase: WatchPhase,
    pub took: Duration,
    pub allowance: Duration,
}

/// The watched call in flight; [`CallGuard::finish`] ends it (dropping it does too).
#[must_use = "finish the call to learn whether it was overdue"]
pub struct CallGuard<'a> {
    watch: &'a SeedWatch,
    number: u64,
    phase: WatchPhase,
    started: Instant,
    allowance: Duration,
}

impl CallGuard<'_> {
    /// Ends the call; `Some` when it ran past its allowance.
    pub fn finish(self) -> Option<Overdue> {
        let took = self.started.elapsed();
        (took > self.allowance).then_some(Overdue { phase: self.phase, took, allowance: self.allowance })
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let mut call = lock(&self.watch.shared.call);
        if call.as_ref().is_some_and(|c| c.number == self.number) {
            *call = None;
        }
    }
}

impl SeedWatch {
    /// The limit of a call (a first call's is [`FIRST_CALL_FACTOR`] times longer).
    pub fn limit(&self) -> Duration {
        self.shared.limit
    }

    fn begin(&self, seed: Option<Arc<SeedIdentity>>, phase: WatchPhase, allowance: Duration) -> CallGuard<'_> {
        let number = self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        *lock(&self.shared.call) = Some(Call { seed, phase, started, allowance, number });
        CallGuard { watch: self, number, phase, started, allowance }
    }

    /// Watches `seed`'s forward in `train` or eval mode (its first in that mode gets the
    /// larger allowance).
    pub fn forward(&self, seed: &WatchedSeed, train: bool) -> CallGuard<'_> {
        let first = !seed.first_done[usize::from(train)].swap(true, Ordering::Relaxed);
        let allowance = if first { self.shared.limit.saturating_mul(FIRST_CALL_FACTOR) } else { self.shared.limit };
        self.begin(Some(Arc::clone(&seed.identity)), WatchPhase::Forward, allowance)
    }

    /// Watches a backward pass (while seeds run).
    pub fn backward(&self) -> CallGuard<'_> {
        self.begin(None, WatchPhase::Backward, self.shared.limit)
    }

    /// Counts `seed` among the live seeds (named if a backward runs over).
    pub fn register(&self, seed: &WatchedSeed) {
        lock(&self.shared.live).push(Arc::clone(&seed.identity));
    }

    /// The seed is gone.
    pub fn unregister(&self, seed: &WatchedSeed) {
        lock(&self.shared.live).retain(|s| !Arc::ptr_eq(s, &seed.identity));
    }

    /// The events the watchdog emitted since the last call, for the epoch's record (they
    /// were emitted already: the caller records them without emitting them again).
    pub fn take_reported(&self) -> Vec<LifecycleEvent> {
        if !self.shared.has_reported.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.shared.reported))
    }
}

/// The run's watchdog: its thread, stopped when this is dropped.
pub struct Watchdog {
    watch: SeedWatch,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog thread for calls limited to `limit`.
    pub fn start(limit: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            limit,
            call: Mutex::new(None),
            calls: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            reported: Mutex::new(Vec::new()),
            has_reported: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread =
            std::thread::Builder::new().name("esper-seed-watchdog".into()).spawn(move || watch(&thread_shared))?;
        Ok(Self { watch: SeedWatch { shared }, thread: Some(thread) })
    }

    /// A handle for a slot to keep.
    pub fn handle(&self) -> SeedWatch {
        self.watch.clone()
    }

    /// The handle, borrowed.
    pub fn watch(&self) -> &SeedWatch {
        &self.watch
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *lock(&self.watch.shared.stop) = true;
        self.watch.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the thread looks: a tenth of the limit, between 20 ms and 1 s.
fn poll_interval(limit: Duration) -> Duration {
    (limit / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// What the thread knows of the call it reported last.
struct Told {
    number: u64,
    last: Instant,
}

/// The thread's loop: wake, look at the call in flight, report it once it is overdue,
/// remind while it goes on; return when told to stop.
fn watch(shared: &Shared) {
    let (poll, remind) = (poll_interval(shared.limit), REMINDER.max(shared.limit));
    let mut told: Option<Told> = None;
    loop {
        {
            let stop = lock(&shared.stop);
            let (stop, _) = shared.wake.wait_timeout(stop, poll).unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        let Some((seed, phase, started, allowance, number)) =
            lock(&shared.call).as_ref().map(|c| (c.seed.clone(), c.phase, c.started, c.allowance, c.number))
        else {
            continue;
        };
        let running = started.elapsed();
        if running <= allowance {
            continue;
        }
        match &mut told {
            Some(t) if t.number == number => {
                if t.last.elapsed() >= remind {
                    remind_still_running(seed.as_deref(), phase, running);
                    t.last = Instant::now();
                }
            }
            _ => {
                report(shared, seed, phase, running, allowance);
                told = Some(Told { number, last: Instant::now() });
            }
        }
    }
}

/// Emits the overdue call's event(s) (one per live seed for a backward) and keeps them
/// for the epoch's record.
fn report(shared: &Shared, seed: Option<Arc<SeedIdentity>>, phase: WatchPhase, running: Duration, allowance: Duration) {
    let seeds = match seed {
        Some(s) => vec![s],
        None => lock(&shared.live).clone(),
    };
    let events: Vec<LifecycleEvent> = seeds
        .iter()
        .map(|s| LifecycleEvent::SeedOverdue {
            slot: s.slot.clone(),
            seed_id: s.seed_id.clone(),
            blueprint: s.blueprint.clone(),
            plugin: s.plugin.display().to_string(),
            phase,
            seconds: running.as_secs_f64(),
            limit_s: allowance.as_secs_f64(),
        })
        .collect();
    for e in &events {
        e.emit();
    }
    lock(&shared.reported).extend(events);
    shared.has_reported.store(true, Ordering::Release);
}

fn remind_still_running(seed: Option<&SeedIdentity>, phase: WatchPhase, running: Duration) {
    let what = match (phase, seed) {
        (WatchPhase::Forward, Some(s)) => format!(
            "slot `{}`: the forward of seed `{}` (blueprint `{}`, plugin {})",
            s.slot,
            s.seed_id,
            s.blueprint,
            s.plugin.display()
        ),
        _ => "the backward pass".to_string(),
    };
    tracing::warn!(
        event = "seed_still_running",
        seconds = running.as_secs_f64(),
        "{what} is still running after {:.0} s; a call that never returns cannot be stopped inside the process: \
         end the run (Ctrl-C or kill) and resume it from its last checkpoint with `esper run --resume DIR`",
        running.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(slot: &str) -> WatchedSeed {
        WatchedSeed::new(SeedIdentity {
            slot: slot.into(),
            seed_id: format!("{slot}-seed"),
            blueprint: "cnn:sleepy".into(),
            plugin: PathBuf::from("/p/libx.so"),
        })
    }

    #[test]
    fn an_overdue_call_is_reported_while_it_runs_and_judged_when_it_returns() {
        let dog = Watchdog::start(Duration::from_millis(100)).unwrap();
        let watch = dog.handle();
        let s = seed("r0c1");
        // The first train-mode call has five times the limit.
        let call = watch.forward(&s, true);
        std::thread::sleep(Duration::from_millis(250));
        assert!(call.finish().is_none(), "the first call's allowance is 500 ms");
        assert!(watch.take_reported().is_empty());
        let call = watch.forward(&s, true);
        let started = Instant::now();
        let mut seen = Vec::new();
        while seen.is_empty() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            seen = watch.take_reported();
        }
        let while_running = started.elapsed();
        let overdue = call.finish().expect("overdue");
        assert!(while_running < Duration::from_secs(1), "reported while running, after {while_running:?}");
        assert_eq!((overdue.phase, overdue.allowance), (WatchPhase::Forward, Duration::from_millis(100)));
        match &seen[..] {
            [LifecycleEvent::SeedOverdue { slot, seed_id, phase: WatchPhase::Forward, seconds, limit_s, .. }] => {
                assert_eq!((slot.as_str(), seed_id.as_str(), *limit_s), ("r0c1", "r0c1-seed", 0.1));
                assert!(*seconds > 0.1, "{seconds}");
            }
            other => panic!("one forward event: {other:?}"),
        }
        // Reported once per call: the same call is not reported again.
        std::thread::sleep(Duration::from_millis(150));
        assert!(watch.take_reported().is_empty());
        // The first eval-mode call has its own larger allowance.
        let call = watch.forward(&s, false);
        std::thread::sleep(Duration::from_millis(150));
        assert!(call.finish().is_none());
    }

    #[test]
    fn an_overdue_backward_names_every_live_seed() {
        let dog = Watchdog::start(Duration::from_millis(50)).unwrap();
        let watch = dog.handle();
        let (a, b, gone) = (seed("r0c1"), seed("r1c1"), seed("r0c2"));
        for s in [&a, &b, &gone] {
            watch.register(s);
        }
        watch.unregister(&gone);
        let call = watch.backward();
        let started = Instant::now();
        let mut seen = Vec::new();
        while seen.len() < 2 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            seen.extend(watch.take_reported());
        }
        assert_eq!(call.finish().map(|o| o.phase), Some(WatchPhase::Backward));
        let slots: Vec<Option<&str>> = seen.iter().map(LifecycleEvent::slot).collect();
        assert_eq!(slots, vec![Some("r0c1"), Some("r1c1")]);
        assert!(seen[0].to_string().contains("reported only"), "{}", seen[0]);
    }

    #[test]
    fn a_call_within_its_limit_is_never_reported_and_the_thread_stops_with_the_watchdog() {
        let dog = Watchdog::start(Duration::from_secs(10)).unwrap();
        let watch = dog.handle();
        let s = seed("r0c1");
        for train in [true, false, true] {
            assert!(watch.forward(&s, train).finish().is_none());
        }
        let started = Instant::now();
        drop(dog);
        assert!(started.elapsed() < Duration::from_secs(2), "stopping does not wait for a poll of the limit");
        assert!(watch.take_reported().is_empty());
    }
}
