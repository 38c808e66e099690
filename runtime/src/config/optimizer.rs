//! The ranges the optimizers' hyper-parameters are held to before a run starts. A value
//! outside them can only make the host's loss non-finite (or its update meaningless), so
//! it is refused naming its key, e.g. `[training.host_optimizer] momentum = NaN must be
//! in [0, 1)`, by `esper config check` and by `esper run` before anything is written.

use super::OptimizerConfig;

/// The largest learning rate accepted. SGD and Adam on these hosts diverge at the first
/// steps far below it, so a larger one is a typo (`lr = 1e3` for `1e-3`), refused rather
/// than warned about: a warning scrolls past while the run fails at epoch 1.
pub const MAX_LR: f64 = 10.0;

/// Adam's default `eps`.
pub const DEFAULT_ADAM_EPS: f64 = 1e-8;

/// Where a value must lie.
#[derive(Debug, Clone, Copy)]
enum Range {
    /// `(0, max]`.
    Positive { max: Option<f64> },
    /// `[0, +inf)`.
    NonNegative,
    /// `[0, 1)`.
    Fraction,
}

impl Range {
    fn holds(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Positive { max } => v > 0.0 && max.is_none_or(|m| v <= m),
                Range::NonNegative => v >= 0.0,
                Range::Fraction => (0.0..1.0).contains(&v),
            }
    }

    fn describe(self, v: f64) -> String {
        match self {
            Range::Positive { max: Some(max) } if v.is_finite() && v > max => format!(
                "is over {max:?}, far beyond a learning rate that trains (SGD and Adam diverge at once): \
                 a typo such as 1e3 for 1e-3?"
            ),
            Range::Positive { .. } => "must be > 0 and finite".into(),
            Range::NonNegative => "must be >= 0 and finite".into(),
            Range::Fraction => "must be in [0, 1)".into(),
        }
    }
}

impl OptimizerConfig {
    /// Every hyper-parameter in its range: `lr` in (0, [`MAX_LR`]], SGD `momentum` in
    /// [0, 1), `weight_decay` >= 0, Adam's `beta1` and `beta2` in [0, 1) and `eps` > 0,
    /// all finite. `key` is the config table (`training.host_optimizer`), named in the
    /// message.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let lr = Range::Positive { max: Some(MAX_LR) };
        let values: &[(&str, f64, Range)] = match *self {
            OptimizerConfig::Sgd { lr: l, momentum, weight_decay } => &[
                ("lr", l, lr),
                ("momentum", momentum, Range::Fraction),
                ("weight_decay", weight_decay, Range::NonNegative),
            ],
            OptimizerConfig::Adam { lr: l, beta1, beta2, weight_decay, eps } => &[
                ("lr", l, lr),
                ("beta1", beta1, Range::Fraction),
                ("beta2", beta2, Range::Fraction),
                ("weight_decay", weight_decay, Range::NonNegative),
                ("eps", eps, Range::Positive { max: None }),
            ],
        };
        match values.iter().find(|(_, v, range)| !range.holds(*v)) {
            Some(&(name, v, range)) => Err(format!("[{key}] {name} = {v:?} {}", range.describe(v))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Result<(), String> {
        OptimizerConfig::Sgd { lr, momentum, weight_decay }.check("training.host_optimizer")
    }

    fn adam(beta1: f64, beta2: f64, eps: f64) -> Result<(), String> {
        OptimizerConfig::Adam { lr: 1e-3, beta1, beta2, weight_decay: 0.0, eps }.check("training.seed_optimizer")
    }

    #[test]
    fn every_hyper_parameter_is_held_to_its_range_naming_key_and_value() {
        sgd(0.05, 0.9, 5e-4).unwrap();
        sgd(MAX_LR, 0.0, 0.0).unwrap();
        let cases = [
            (sgd(0.05, f64::NAN, 0.0), "[training.host_optimizer] momentum = NaN must be in [0, 1)"),
            (sgd(0.05, 1.0, 0.0), "[training.host_optimizer] momentum = 1.0 must be in [0, 1)"),
            (sgd(0.05, -0.1, 0.0), "[training.host_optimizer] momentum = -0.1 must be in [0, 1)"),
            (sgd(0.05, 0.9, f64::INFINITY), "[training.host_optimizer] weight_decay = inf must be >= 0 and finite"),
            (sgd(0.05, 0.9, -1e-4), "[training.host_optimizer] weight_decay = -0.0001 must be >= 0 and finite"),
            (sgd(0.0, 0.9, 0.0), "[training.host_optimizer] lr = 0.0 must be > 0 and finite"),
            (sgd(f64::NAN, 0.9, 0.0), "[training.host_optimizer] lr = NaN must be > 0 and finite"),
            (adam(f64::NAN, 0.999, 1e-8), "[training.seed_optimizer] beta1 = NaN must be in [0, 1)"),
            (adam(0.9, 1.0, 1e-8), "[training.seed_optimizer] beta2 = 1.0 must be in [0, 1)"),
            (adam(0.9, 0.999, 0.0), "[training.seed_optimizer] eps = 0.0 must be > 0 and finite"),
            (adam(0.9, 0.999, f64::INFINITY), "[training.seed_optimizer] eps = inf must be > 0 and finite"),
        ];
        for (got, want) in cases {
            assert_eq!(got.unwrap_err(), want);
        }
        adam(0.0, 0.0, 1e-12).unwrap();
    }

    #[test]
    fn an_absurd_learning_rate_is_refused_with_a_hint() {
        let e = sgd(1e300, 0.9, 0.0).unwrap_err();
        assert!(e.starts_with("[training.host_optimizer] lr = 1e300 is over 10.0"), "{e}");
        assert!(e.contains("diverge"), "{e}");
    }
}
