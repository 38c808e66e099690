//! In-memory rollback of named tensors: the copies are made once and refreshed in place
//! (`copy_`, no allocation) for as long as the set of tensors stays the same.

use tch::{TchError, Tensor};

#[derive(Debug, Default)]
pub struct TensorCopy {
    names: Vec<String>,
    live: Vec<Tensor>,
    saved: Vec<Tensor>,
}

impl TensorCopy {
    /// Copies `named` (sorted by name by the caller, so the order is stable).
    pub fn save(&mut self, named: Vec<(String, Tensor)>) -> Result<(), TchError> {
        let same = self.names.len() == named.len()
            && self.names.iter().zip(&named).all(|(a, (b, _))| a == b)
            && self.saved.iter().zip(&named).all(|(s, (_, t))| s.size() == t.size() && s.kind() == t.kind());
        if !same {
            self.names = named.iter().map(|(n, _)| n.clone()).collect();
            self.saved = named.iter().map(|(_, t)| t.f_detach_copy()).collect::<Result<_, _>>()?;
            self.live = named.into_iter().map(|(_, t)| t).collect();
            return Ok(());
        }
        self.live = named.into_iter().map(|(_, t)| t).collect();
        self.refresh()
    }

    /// Copies the live tensors of the last [`TensorCopy::save`] again, in place.
    pub fn refresh(&mut self) -> Result<(), TchError> {
        tch::no_grad(|| {
            for (s, l) in self.saved.iter_mut().zip(&self.live) {
                s.f_copy_(l)?;
            }
            Ok(())
        })
    }

    /// Copies the saved values back into the live tensors.
    pub fn restore(&self) -> Result<(), TchError> {
        tch::no_grad(|| {
            for (l, s) in self.live.iter().zip(&self.saved) {
                l.shallow_clone().f_copy_(s)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn restore_brings_back_the_saved_values_and_saving_again_reuses_the_copies() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        let mut copy = TensorCopy::default();
        copy.save(vec![("a".into(), a.shallow_clone())]).unwrap();
        let _ = a.shallow_clone().fill_(7.0);
        copy.restore().unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![1.0, 2.0]);
        let ptr = copy.saved[0].data_ptr();
        let _ = a.shallow_clone().fill_(3.0);
        copy.save(vec![("a".into(), a.shallow_clone())]).unwrap();
        assert_eq!(copy.saved[0].data_ptr(), ptr, "refreshed in place");
        let _ = a.shallow_clone().fill_(0.0);
        copy.restore().unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![3.0, 3.0]);
        let b = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        copy.save(vec![("b".into(), b)]).unwrap();
        assert_eq!(copy.saved[0].size(), vec![3], "a new set of tensors is copied anew");
    }
}
