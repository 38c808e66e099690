//! `[training] precision`: float32, or bfloat16 mixed precision (libtorch's autocast,
//! through `esper-torch-shim`) for the whole forward, seeds included.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    /// Autocast to bfloat16: convolutions and linear layers run in bfloat16, the ops
    /// autocast keeps in float32 stay there, the logits come back as float32 (the loss
    /// is computed in float32). A seed's float32 output for a bfloat16 input (what
    /// autocast's float32 ops return) is cast back to bfloat16 by the isolation layer
    /// where it is blended; in TRAINING the straight-through estimator, which uses no
    /// value of it, keeps it and hands the seed its gradient in float32.
    Bf16,
}
