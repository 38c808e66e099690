//! SIGINT and SIGTERM during `esper run`. The first asks the run to stop at the next
//! training-step boundary (the trainer's [`StopSignal`], with the signal's number as the
//! stop's code), so the report is written and the checkpoints kept; a second one ends
//! the process at once, as the signal would (exit 128 + its number).

use esper_runtime::train::StopSignal;
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    flag,
};
use std::{
    num::NonZeroUsize,
    sync::{atomic::AtomicBool, Arc},
};

/// The signals that stop a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (a supervisor, `kill`).
    Terminate,
}

impl StopCause {
    const ALL: [StopCause; 2] = [Self::Interrupt, Self::Terminate];

    fn signal(self) -> i32 {
        match self {
            Self::Interrupt => SIGINT,
            Self::Terminate => SIGTERM,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal ended.
    pub fn exit_code(self) -> u8 {
        128 + self.signal() as u8
    }

    /// The cause a stop's code names (the code [`install`] stores).
    pub fn of(code: NonZeroUsize) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.signal() as usize == code.get())
    }
}

/// Installs the handlers and returns the stop signal they set.
pub fn install() -> std::io::Result<StopSignal> {
    let stop = StopSignal::new();
    let signalled = Arc::new(AtomicBool::new(false));
    for cause in StopCause::ALL {
        let sig = cause.signal();
        // Handlers run in the order registered: the exit sees the flag as the previous
        // signal left it, so only a second signal exits at once.
        flag::register_conditional_shutdown(sig, i32::from(cause.exit_code()), Arc::clone(&signalled))?;
        flag::register(sig, Arc::clone(&signalled))?;
        flag::register_usize(sig, stop.flag(), sig as usize)?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_shell_exit_code_and_is_found_from_its_code() {
        assert_eq!(StopCause::Interrupt.exit_code(), 130);
        assert_eq!(StopCause::Terminate.exit_code(), 143);
        for cause in StopCause::ALL {
            let code = NonZeroUsize::new(cause.signal() as usize).unwrap();
            assert_eq!(StopCause::of(code), Some(cause));
        }
        assert_eq!(StopCause::of(NonZeroUsize::new(9).unwrap()), None);
    }
}
