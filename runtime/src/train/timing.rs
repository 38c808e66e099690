//! Timing the training step as a run takes it (the contained step: forward, loss,
//! backward, the gradient capture every `gradient_every` steps, both optimizers), for
//! the side-by-side benchmark against PyTorch (`scripts/bench-vs-pytorch.sh`); on CUDA
//! with the run's `cuda_graph` setting (replays once captured).

use super::{seeds::germinate, TrainError, Trainer};
use crate::{data::Shard, lifecycle::SeedStage, Result};
use std::time::Instant;
use tch::Device;

impl Trainer {
    /// Germinates `blueprint` into `slot` and brings it to TRAINING through gate G1, with
    /// its optimizer, as the controller would.
    pub fn seed_in_training(&mut self, slot: &str, blueprint: &str) -> Result<()> {
        germinate(&mut self.model, &self.registry, slot, blueprint, "timing", &serde_json::Value::Null)?;
        let gates = self.config.lifecycle.gates.clone();
        let result = self.model.slot_mut(slot)?.advance(&gates)?;
        let stage = self.model.slot(slot)?.stage();
        if stage != SeedStage::Training {
            return Err(TrainError::NotTraining { slot: slot.into(), stage, result: result.to_string() }.into());
        }
        self.sync_seed_optimizers();
        let _ = self.model.slot_mut(slot)?.take_events();
        Ok(())
    }

    /// Times `warmup + steps` training steps on one batch of `batch` training examples
    /// and returns the last `steps` times in milliseconds, each step ending with the
    /// device idle.
    pub fn time_steps(&mut self, batch: i64, warmup: usize, steps: usize) -> Result<Vec<f64>> {
        let first = self.data.train_batches(batch, 0, (Default::default(), Shard::WHOLE), self.device).next();
        let (x, y) = first.ok_or(TrainError::Internal("the training set is empty"))?;
        let every = self.config.training.gradient_every;
        let mut totals = self.graphs.epoch_totals(self.device)?;
        let mut events = Vec::new();
        let mut times = Vec::with_capacity(steps);
        let side = self.graphs.side_stream()?;
        for i in 0..warmup + steps {
            let started = Instant::now();
            self.train_step(&x, &y, i % every == 0, &mut totals, &mut events)?;
            if let Device::Cuda(index) = self.device {
                tch::Cuda::synchronize(index as i64);
            }
            if i >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        if let Some(side) = side {
            side.exit()?;
        }
        if !events.is_empty() {
            return Err(TrainError::LifecycleChanged { events }.into());
        }
        Ok(times)
    }
}
