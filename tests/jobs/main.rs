//! Whole training jobs, in process and through the `esper` binary: the run config, resume
//! equivalence, checkpoints, containment of misbehaving seeds in real runs. Run one area
//! with `cargo test -p esper-tests --test jobs -- MODULE::` (e.g. `run_job::`; `watch::`: `esper
//! watch` and the TensorBoard logs).
//!
//! Apart from `tests/all` because some of these compare two in-process runs bit for bit,
//! and libtorch's random generator is one per process: every in-process test here holds
//! [`esper_tests::one_job_at_a_time`], so no other test draws from the generator while a
//! job runs.

mod containment;
mod controllers;
mod distributed;
mod run_job;
mod transformer_job;
mod watch;
