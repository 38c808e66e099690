//! Channels-last as a stride pattern.
//!
//! tch 0.24 has no memory-format API, so channels-last is produced and checked from
//! strides: NCHW sizes with NHWC strides (`C` has stride 1).

use tch::Tensor;

/// The memory format the host runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// NHWC strides behind NCHW sizes (PyTorch's `torch.channels_last`).
    #[default]
    ChannelsLast,
    /// Plain contiguous NCHW.
    Contiguous,
}

/// Whether a 4-d tensor is laid out channels-last (size-1 dimensions may have any stride).
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    if size.len() != 4 {
        return false;
    }
    // Walk the NHWC order from the innermost dimension outwards.
    let mut expected = 1;
    for d in [1usize, 3, 2, 0] {
        if size[d] != 1 && stride[d] != expected {
            return false;
        }
        expected *= size[d];
    }
    true
}

/// A channels-last copy of `x` (or `x` itself, shallowly, if it already is).
pub fn to_channels_last(x: &Tensor) -> Tensor {
    if is_channels_last(x) {
        x.shallow_clone()
    } else {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    }
}

impl MemoryFormat {
    /// Puts `x` in this format (a shallow clone when it already is).
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            MemoryFormat::ChannelsLast => to_channels_last(x),
            MemoryFormat::Contiguous => x.contiguous(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn channels_last_round_trip() {
        let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&x));
        let y = to_channels_last(&x);
        assert!(is_channels_last(&y));
        assert_eq!(y.size(), x.size());
        assert_eq!(y.stride(), vec![60, 1, 15, 3]);
        assert!(y.equal(&x));
        assert!(!y.is_contiguous());
        // Already channels-last: no copy.
        assert_eq!(to_channels_last(&y).data_ptr(), y.data_ptr());
        assert!(MemoryFormat::Contiguous.apply(&y).is_contiguous());
    }
}
