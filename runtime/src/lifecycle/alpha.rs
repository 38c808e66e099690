//! The alpha schedule: easing curves and a controller that moves alpha from its
//! current value to a target over a fixed number of ticks (one tick per epoch).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::LifecycleError;

/// Steepness of the sigmoid curve.
pub const SIGMOID_STEEPNESS: f64 = 12.0;
/// Alpha values closer than this are equal (target reached, full amplitude).
pub const ALPHA_EPSILON: f64 = 1e-6;

/// Easing curve from linear progress `t` in [0, 1] to eased progress in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlphaCurve {
    Linear,
    /// `0.5 * (1 - cos(pi t))`: zero slope at both ends.
    Cosine,
    /// Logistic with steepness [`SIGMOID_STEEPNESS`], rescaled to hit 0 and 1 exactly.
    Sigmoid,
}

fn logistic(x: f64) -> f64 {
    // Written so that neither branch can overflow `exp`.
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let z = x.exp();
        z / (1.0 + z)
    }
}

impl AlphaCurve {
    /// Eased progress for linear progress `t` (clamped to [0, 1]).
    /// Every curve maps 0 to exactly 0 and 1 to exactly 1 and never decreases.
    pub fn progress(self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        if t <= 0.0 {
            return 0.0;
        }
        if t >= 1.0 {
            return 1.0;
        }
        match self {
            AlphaCurve::Linear => t,
            AlphaCurve::Cosine => 0.5 * (1.0 - (std::f64::consts::PI * t).cos()),
            AlphaCurve::Sigmoid => {
                let lo = logistic(-0.5 * SIGMOID_STEEPNESS);
                let hi = logistic(0.5 * SIGMOID_STEEPNESS);
                let raw = logistic(SIGMOID_STEEPNESS * (t - 0.5));
                ((raw - lo) / (hi - lo)).clamp(0.0, 1.0)
            }
        }
    }

    /// The lower-case name (as serialized and parsed).
    pub fn name(self) -> &'static str {
        match self {
            AlphaCurve::Linear => "linear",
            AlphaCurve::Cosine => "cosine",
            AlphaCurve::Sigmoid => "sigmoid",
        }
    }
}

impl fmt::Display for AlphaCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AlphaCurve {
    type Err = LifecycleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(AlphaCurve::Linear),
            "cosine" => Ok(AlphaCurve::Cosine),
            "sigmoid" => Ok(AlphaCurve::Sigmoid),
            _ => Err(LifecycleError::UnknownCurve(s.to_string())),
        }
    }
}

/// Direction of the controller: moving up, moving down, or at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlphaMode {
    Hold,
    Up,
    Down,
}

impl fmt::Display for AlphaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlphaMode::Hold => "HOLD",
            AlphaMode::Up => "UP",
            AlphaMode::Down => "DOWN",
        })
    }
}

/// Moves alpha from `alpha_start` to `alpha_target` over `ramp_steps` ticks along a
/// curve (a blend ramp's steps are its tempo's, [`crate::blend::BlendTempo::ramp_steps`]).
/// Alpha always stays in [0, 1]; a new target may only be set while at rest (HOLD), so a
/// transition is never redirected half-way. Checkpoints name the ramp's steps
/// `steps_total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "AlphaControllerFields")]
pub struct AlphaController {
    alpha: f64,
    alpha_start: f64,
    alpha_target: f64,
    mode: AlphaMode,
    curve: AlphaCurve,
    #[serde(rename = "steps_total")]
    ramp_steps: u32,
    steps_done: u32,
}

/// What a checkpoint holds; normalised (clamped) on the way in.
#[derive(Deserialize)]
struct AlphaControllerFields {
    alpha: f64,
    alpha_start: f64,
    alpha_target: f64,
    mode: AlphaMode,
    curve: AlphaCurve,
    #[serde(rename = "steps_total")]
    ramp_steps: u32,
    steps_done: u32,
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

impl From<AlphaControllerFields> for AlphaController {
    fn from(f: AlphaControllerFields) -> Self {
        AlphaController {
            alpha: clamp01(f.alpha),
            alpha_start: clamp01(f.alpha_start),
            alpha_target: clamp01(f.alpha_target),
            mode: f.mode,
            curve: f.curve,
            ramp_steps: f.ramp_steps,
            steps_done: f.steps_done.min(f.ramp_steps),
        }
    }
}

impl Default for AlphaController {
    fn default() -> Self {
        AlphaController::new(0.0)
    }
}

impl AlphaController {
    /// A controller at rest at `alpha` (clamped to [0, 1]), linear curve.
    pub fn new(alpha: f64) -> Self {
        let alpha = clamp01(alpha);
        AlphaController {
            alpha,
            alpha_start: alpha,
            alpha_target: alpha,
            mode: AlphaMode::Hold,
            curve: AlphaCurve::Linear,
            ramp_steps: 0,
            steps_done: 0,
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn alpha_start(&self) -> f64 {
        self.alpha_start
    }
    pub fn alpha_target(&self) -> f64 {
        self.alpha_target
    }
    pub fn mode(&self) -> AlphaMode {
        self.mode
    }
    pub fn curve(&self) -> AlphaCurve {
        self.curve
    }
    pub fn ramp_steps(&self) -> u32 {
        self.ramp_steps
    }
    pub fn steps_done(&self) -> u32 {
        self.steps_done
    }
    /// Ticks left until the target (0 at rest).
    pub fn steps_remaining(&self) -> u32 {
        if self.mode == AlphaMode::Hold {
            0
        } else {
            self.ramp_steps - self.steps_done
        }
    }

    /// At rest, at the target.
    pub fn target_reached(&self) -> bool {
        self.mode == AlphaMode::Hold && (self.alpha - self.alpha_target).abs() <= ALPHA_EPSILON
    }

    /// Schedule a move from the current alpha to `target` (clamped to [0, 1]) over
    /// `steps` ticks along `curve`. Refused unless the controller is in HOLD.
    /// The mode becomes UP or DOWN, or stays HOLD when the target equals alpha;
    /// `steps == 0` jumps to the target at once.
    pub fn retarget(&mut self, target: f64, steps: u32, curve: AlphaCurve) -> Result<(), LifecycleError> {
        if self.mode != AlphaMode::Hold {
            return Err(LifecycleError::AlphaNotHolding { mode: self.mode });
        }
        if !target.is_finite() {
            return Err(LifecycleError::InvalidAlphaTarget(target));
        }
        let target = target.clamp(0.0, 1.0);
        self.alpha_start = self.alpha;
        self.alpha_target = target;
        self.curve = curve;
        self.ramp_steps = steps;
        self.steps_done = 0;
        self.mode = if target > self.alpha {
            AlphaMode::Up
        } else if target < self.alpha {
            AlphaMode::Down
        } else {
            AlphaMode::Hold
        };
        if steps == 0 || self.mode == AlphaMode::Hold {
            self.alpha = target;
            self.mode = AlphaMode::Hold;
        }
        Ok(())
    }

    /// Advance one tick. Returns `true` on the tick that reaches the target (alpha
    /// is then exactly the target and the mode HOLD); `false` otherwise, including
    /// every tick while at rest.
    pub fn step(&mut self) -> bool {
        if self.mode == AlphaMode::Hold || self.ramp_steps == 0 {
            return false;
        }
        self.steps_done += 1;
        if self.steps_done >= self.ramp_steps {
            self.steps_done = self.ramp_steps;
            self.alpha = self.alpha_target;
            self.mode = AlphaMode::Hold;
            return true;
        }
        let t = f64::from(self.steps_done) / f64::from(self.ramp_steps);
        let eased = self.curve.progress(t);
        let value = clamp01(self.alpha_start + (self.alpha_target - self.alpha_start) * eased);
        // Never overshoot either end of the move.
        let (lo, hi) = if self.alpha_start <= self.alpha_target {
            (self.alpha_start, self.alpha_target)
        } else {
            (self.alpha_target, self.alpha_start)
        };
        self.alpha = value.clamp(lo, hi);
        false
    }

    /// Force alpha to `target` (clamped to [0, 1]) and come to rest there, whatever
    /// the mode; the current schedule counts as finished. For lifecycle events that
    /// override the schedule (prune: 0, entering HOLDING: 1).
    pub fn snap_to(&mut self, target: f64) {
        let target = clamp01(target);
        self.alpha = target;
        self.alpha_start = target;
        self.alpha_target = target;
        self.mode = AlphaMode::Hold;
        self.steps_done = self.ramp_steps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURVES: [AlphaCurve; 3] = [AlphaCurve::Linear, AlphaCurve::Cosine, AlphaCurve::Sigmoid];

    #[test]
    fn curve_endpoints_are_exact() {
        for c in CURVES {
            assert_eq!(c.progress(0.0), 0.0, "{c} at 0");
            assert_eq!(c.progress(1.0), 1.0, "{c} at 1");
            assert_eq!(c.progress(-3.0), 0.0, "{c} below 0");
            assert_eq!(c.progress(7.0), 1.0, "{c} above 1");
        }
    }

    #[test]
    fn curves_are_monotonic_over_100_samples() {
        for c in CURVES {
            let mut prev = c.progress(0.0);
            for i in 1..=100 {
                let v = c.progress(f64::from(i) / 100.0);
                assert!(v >= prev, "{c} decreased at {i}: {prev} -> {v}");
                assert!((0.0..=1.0).contains(&v));
                prev = v;
            }
        }
    }

    #[test]
    fn curves_have_their_shapes() {
        // All pass through the midpoint.
        for c in CURVES {
            assert!((c.progress(0.5) - 0.5).abs() < 1e-12, "{c}");
        }
        assert!((AlphaCurve::Linear.progress(0.25) - 0.25).abs() < 1e-12);
        // Cosine and sigmoid start slower than linear.
        assert!(AlphaCurve::Cosine.progress(0.1) < 0.1);
        assert!(AlphaCurve::Sigmoid.progress(0.1) < AlphaCurve::Cosine.progress(0.1));
        // The sigmoid is normalised: the raw logistic at t=0.1 would be ~0.0083.
        let raw_lo = logistic(-6.0);
        let expected = (logistic(SIGMOID_STEEPNESS * (0.1 - 0.5)) - raw_lo) / (logistic(6.0) - raw_lo);
        assert!((AlphaCurve::Sigmoid.progress(0.1) - expected).abs() < 1e-12);
    }

    #[test]
    fn curve_names_parse_and_serialize() {
        for c in CURVES {
            assert_eq!(c.name().parse::<AlphaCurve>(), Ok(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert_eq!("SIGMOID".parse::<AlphaCurve>(), Ok(AlphaCurve::Sigmoid));
        assert!(matches!("gated".parse::<AlphaCurve>(), Err(LifecycleError::UnknownCurve(_))));
    }

    #[test]
    fn up_reaches_one_in_exactly_n_steps() {
        for c in CURVES {
            for n in [1u32, 3, 5, 8] {
                let mut ctl = AlphaController::new(0.0);
                ctl.retarget(1.0, n, c).unwrap();
                assert_eq!(ctl.mode(), AlphaMode::Up);
                let mut prev = ctl.alpha();
                for i in 1..n {
                    assert!(!ctl.step(), "{c}/{n}: reached early at step {i}");
                    assert!(ctl.alpha() >= prev && ctl.alpha() < 1.0);
                    assert_eq!(ctl.mode(), AlphaMode::Up);
                    prev = ctl.alpha();
                }
                assert!(ctl.step(), "{c}/{n}: not reached at step {n}");
                assert_eq!(ctl.alpha(), 1.0);
                assert_eq!(ctl.mode(), AlphaMode::Hold);
                assert!(ctl.target_reached());
                assert!(!ctl.step(), "a step at rest reports nothing");
                assert_eq!(ctl.alpha(), 1.0);
            }
        }
    }

    #[test]
    fn linear_up_takes_equal_steps() {
        let mut ctl = AlphaController::new(0.0);
        ctl.retarget(1.0, crate::blend::DEFAULT_TEMPO.ramp_steps(), AlphaCurve::Linear).unwrap();
        let mut seen = vec![];
        while !ctl.step() {
            seen.push(ctl.alpha());
        }
        seen.push(ctl.alpha());
        let expected = [0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(seen.len(), expected.len());
        for (got, want) in seen.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{seen:?}");
        }
    }

    #[test]
    fn down_reaches_target_and_never_rises() {
        let mut ctl = AlphaController::new(1.0);
        ctl.retarget(0.25, 4, AlphaCurve::Cosine).unwrap();
        assert_eq!(ctl.mode(), AlphaMode::Down);
        assert_eq!(ctl.steps_remaining(), 4);
        let mut prev = ctl.alpha();
        let mut ticks = 0;
        loop {
            ticks += 1;
            let done = ctl.step();
            assert!(ctl.alpha() <= prev && ctl.alpha() >= 0.25);
            prev = ctl.alpha();
            if done {
                break;
            }
        }
        assert_eq!(ticks, 4);
        assert_eq!(ctl.alpha(), 0.25);
        assert_eq!(ctl.mode(), AlphaMode::Hold);
        assert_eq!(ctl.steps_remaining(), 0);
    }

    #[test]
    fn retarget_is_refused_unless_holding() {
        let mut ctl = AlphaController::new(0.0);
        ctl.retarget(1.0, 5, AlphaCurve::Linear).unwrap();
        ctl.step();
        let before = ctl.clone();
        let err = ctl.retarget(0.0, 2, AlphaCurve::Linear).unwrap_err();
        assert_eq!(err, LifecycleError::AlphaNotHolding { mode: AlphaMode::Up });
        assert!(err.to_string().contains("HOLD"));
        assert_eq!(ctl, before, "a refused retarget changes nothing");
        // Once at rest it is allowed again.
        while !ctl.step() {}
        ctl.retarget(0.0, 2, AlphaCurve::Linear).unwrap();
        assert_eq!(ctl.mode(), AlphaMode::Down);
    }

    #[test]
    fn retarget_edge_cases() {
        // Same target: stays at rest.
        let mut ctl = AlphaController::new(0.5);
        ctl.retarget(0.5, 5, AlphaCurve::Sigmoid).unwrap();
        assert_eq!(ctl.mode(), AlphaMode::Hold);
        assert!(!ctl.step());
        // Zero steps: jumps.
        ctl.retarget(0.9, 0, AlphaCurve::Linear).unwrap();
        assert_eq!((ctl.alpha(), ctl.mode()), (0.9, AlphaMode::Hold));
        // Out of range targets are clamped.
        ctl.retarget(3.0, 0, AlphaCurve::Linear).unwrap();
        assert_eq!(ctl.alpha(), 1.0);
        ctl.retarget(-1.0, 2, AlphaCurve::Linear).unwrap();
        assert_eq!(ctl.alpha_target(), 0.0);
        assert_eq!(ctl.mode(), AlphaMode::Down);
        // Non-finite targets are refused.
        let mut ctl = AlphaController::new(0.0);
        assert!(matches!(ctl.retarget(f64::NAN, 2, AlphaCurve::Linear), Err(LifecycleError::InvalidAlphaTarget(_))));
        assert_eq!(ctl.mode(), AlphaMode::Hold);
    }

    #[test]
    fn snap_to_overrides_a_running_schedule() {
        let mut ctl = AlphaController::new(0.0);
        ctl.retarget(1.0, 10, AlphaCurve::Sigmoid).unwrap();
        ctl.step();
        ctl.snap_to(0.0);
        assert_eq!(ctl.alpha(), 0.0);
        assert_eq!(ctl.alpha_target(), 0.0);
        assert_eq!(ctl.mode(), AlphaMode::Hold);
        assert!(ctl.target_reached());
        ctl.snap_to(2.0);
        assert_eq!(ctl.alpha(), 1.0);
    }

    #[test]
    fn serde_round_trip_and_clamping() {
        let mut ctl = AlphaController::new(0.0);
        ctl.retarget(1.0, 5, AlphaCurve::Cosine).unwrap();
        ctl.step();
        let json = serde_json::to_string(&ctl).unwrap();
        assert!(json.contains(r#""steps_total":5"#), "the checkpoint's name for the ramp's steps: {json}");
        let back: AlphaController = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ctl);

        let bad = r#"{"alpha":1.7,"alpha_start":-2.0,"alpha_target":0.5,"mode":"DOWN",
                     "curve":"linear","steps_total":3,"steps_done":9}"#;
        let c: AlphaController = serde_json::from_str(bad).unwrap();
        assert_eq!((c.alpha(), c.alpha_start()), (1.0, 0.0));
        assert_eq!(c.steps_done(), 3);
    }
}
