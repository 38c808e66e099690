//! Paired timing for the benches: on a 2-core machine two criterion runs of two
//! variants move by 10-15% with the machine's noise, far more than the differences some
//! benches are meant to show. Alternating the two call by call and comparing medians
//! puts the noise on both sides alike.

use std::time::Instant;

/// Runs `a` and `b` alternately `rounds` times each (which goes first alternates too),
/// timing every call; returns the two medians in milliseconds.
pub fn paired(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let mut times = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
    for round in 0..rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let started = Instant::now();
            if i == 0 {
                a()
            } else {
                b()
            }
            times[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let [mut ta, mut tb] = times;
    (median(&mut ta), median(&mut tb))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

use esper_runtime::{
    host::{CnnHost, CnnHostConfig, Segment},
    isolation::{seed_input, straight_through},
};
use tch::{
    nn::{self, OptimizerConfig},
    Device, Kind, Tensor,
};

/// The default host on the CPU with a slot at `slot`, its SGD (momentum 0.9) and one
/// fixed batch: a training step with a seed in TRAINING there, the seed's forward and
/// optimizer given per call.
pub struct SeededStep {
    _vars: nn::VarStore,
    host: CnnHost,
    host_opt: nn::Optimizer,
    x: Tensor,
    labels: Tensor,
    to_slot: Segment,
    from_slot: Segment,
}

impl SeededStep {
    pub fn new(batch: i64, slot: &str) -> Self {
        let vars = nn::VarStore::new(Device::Cpu);
        let host = CnnHost::new(&vars.root(), CnnHostConfig::default()).unwrap();
        let host_opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vars, 0.01).unwrap();
        let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
        let (to_slot, from_slot) = (host.segment(None, Some(slot)).unwrap(), host.segment(Some(slot), None).unwrap());
        Self { _vars: vars, host, host_opt, x, labels, to_slot, from_slot }
    }

    /// One step: the host to the slot, `seed` on the isolated input (straight-through
    /// in TRAINING), the rest of the host, loss, backward, both optimizers.
    pub fn step(&mut self, seed: &dyn Fn(&Tensor) -> Tensor, seed_opt: &mut nn::Optimizer) {
        let h = self.host.run_segment(self.to_slot, &self.host.prepare_input(&self.x), true);
        let s = seed(&seed_input(&h, true));
        let logits = self.host.run_segment(self.from_slot, &straight_through(&h, &s).expect("same shapes"), true);
        let loss = logits.cross_entropy_for_logits(&self.labels);
        self.host_opt.zero_grad();
        seed_opt.zero_grad();
        loss.backward();
        self.host_opt.step();
        seed_opt.step();
    }

    /// The host alone (no slot).
    #[allow(dead_code)] // each bench compiles this module; only training_step uses it
    pub fn host_step(&mut self) {
        let loss = self.host.forward(&self.x, true).cross_entropy_for_logits(&self.labels);
        self.host_opt.backward_step(&loss);
    }
}
