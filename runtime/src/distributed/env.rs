//! A rank's identity from the environment, as torchrun sets it: `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.

use thiserror::Error;

/// Who this process is in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this machine: its GPU (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// Where rank 0's store listens.
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent runs the store itself (`TORCHELASTIC_USE_AGENT_STORE=True`):
    /// every rank then connects to it, rank 0 included.
    pub agent_store: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RankEnvError {
    #[error("environment variable {name} = {value:?} is not {what}")]
    Invalid { name: &'static str, value: String, what: &'static str },
    #[error("environment variable {name} is not set, but WORLD_SIZE = {world_size} is (a multi-process run needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, as torchrun sets them)")]
    Missing { name: &'static str, world_size: usize },
    #[error("RANK = {rank} is not below WORLD_SIZE = {world_size}")]
    RankOutOfRange { rank: usize, world_size: usize },
}

impl RankEnv {
    /// This process's identity, or `None` for a single-process run (no `WORLD_SIZE`, or
    /// `WORLD_SIZE=1`).
    pub fn from_env() -> Result<Option<Self>, RankEnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`RankEnv::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, RankEnvError> {
        let number = |name: &'static str, what: &'static str| -> Result<Option<usize>, RankEnvError> {
            var(name)
                .map(|v| v.trim().parse::<usize>().map_err(|_| RankEnvError::Invalid { name, value: v, what }))
                .transpose()
        };
        let Some(world_size) = number("WORLD_SIZE", "a whole number of processes")? else { return Ok(None) };
        if world_size <= 1 {
            return Ok(None);
        }
        let required = |name: &'static str| var(name).ok_or(RankEnvError::Missing { name, world_size });
        let rank = number("RANK", "a whole number")?.ok_or(RankEnvError::Missing { name: "RANK", world_size })?;
        if rank >= world_size {
            return Err(RankEnvError::RankOutOfRange { rank, world_size });
        }
        let local_rank = number("LOCAL_RANK", "a whole number")?.unwrap_or(rank);
        let master_addr = required("MASTER_ADDR")?;
        let port = required("MASTER_PORT")?;
        let master_port = port.trim().parse::<u16>().map_err(|_| RankEnvError::Invalid {
            name: "MASTER_PORT",
            value: port,
            what: "a TCP port (1-65535)",
        })?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Some(RankEnv { rank, world_size, local_rank, master_addr, master_port, agent_store }))
    }

    /// The GPU this rank of a CUDA run takes, `cuda:LOCAL_RANK`, on a machine with `gpus`
    /// CUDA devices.
    pub fn gpu(&self, gpus: usize) -> Result<tch::Device, super::DistError> {
        if self.local_rank < gpus {
            return Ok(tch::Device::Cuda(self.local_rank));
        }
        Err(super::DistError::NoGpuForRank { rank: self.rank, local_rank: self.local_rank, gpus })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<RankEnv>, RankEnvError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RankEnv::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn torchruns_variables_make_a_rank_and_one_process_is_none() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let env = [("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1")];
        let e = read(&env).unwrap_err().to_string();
        assert!(e.starts_with("environment variable MASTER_PORT is not set, but WORLD_SIZE = 2 is"), "{e}");
        let full = [env.as_slice(), &[("MASTER_PORT", "29500"), ("TORCHELASTIC_USE_AGENT_STORE", "True")]].concat();
        let r = read(&full).unwrap().unwrap();
        assert_eq!((r.rank, r.world_size, r.local_rank, r.master_port, r.agent_store), (1, 2, 1, 29500, true));
        assert_eq!(r.master_addr, "127.0.0.1");
    }

    #[test]
    fn each_rank_of_a_cuda_run_takes_the_gpu_of_its_local_rank_if_there_is_one() {
        let env = [("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")];
        let r = read(&env).unwrap().unwrap();
        assert_eq!(r.gpu(2).unwrap(), tch::Device::Cuda(1));
        let e = r.gpu(1).unwrap_err().to_string();
        assert!(
            e.starts_with("rank 3 has LOCAL_RANK = 1, and each rank of a CUDA run takes the GPU cuda:LOCAL_RANK, but this machine has 1 CUDA device(s): start at most 1 rank(s)"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = read(&[("WORLD_SIZE", "two")]).unwrap_err().to_string();
        assert_eq!(e, "environment variable WORLD_SIZE = \"two\" is not a whole number of processes");
        let e = read(&[("WORLD_SIZE", "2"), ("RANK", "2")]).unwrap_err();
        assert_eq!(e, RankEnvError::RankOutOfRange { rank: 2, world_size: 2 });
        let port = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "70000")];
        assert!(read(&port).unwrap_err().to_string().contains("MASTER_PORT = \"70000\" is not a TCP port"));
    }
}
