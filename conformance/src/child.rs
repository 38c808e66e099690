//! A blueprint's own process under `esper conformance`: cap its memory, load the
//! library, run the blueprint's checks, and tell the parent each event as a line of the
//! [wire](crate::wire) protocol the moment it happens.

use super::{blueprint_report, default_move_target, wire::Line, CheckEvent, SuiteOptions};
use esper_runtime::plugin::BlueprintRegistry;
use std::{io::Write, path::Path};
use tch::Device;

/// The memory cap of a blueprint's process.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryCap {
    /// Its address space (RLIMIT_AS, soft and hard) is capped at `bytes`.
    Applied { bytes: u64 },
    /// No cap, and why.
    Skipped { why: String },
}

/// Caps this process's address space at what it holds now (the runtime and libtorch,
/// mapped at start) plus `gib` GiB, with RLIMIT_AS, soft and hard, so that the plugin
/// cannot raise it again. An allocation past it fails: in libtorch as an error the
/// plugin boundary reports, in Rust or C++ code as an abort. Skipped, saying why, when
/// `move_to` is a CUDA device: the CUDA driver reserves far more address space than it
/// uses, and a cap on address space breaks it.
pub fn apply_memory_cap(gib: f64, move_to: Device) -> MemoryCap {
    if move_to.is_cuda() {
        return MemoryCap::Skipped {
            why: "no memory cap: this run uses CUDA, whose driver reserves more address space than any cap on \
                  address space (RLIMIT_AS) allows"
                .into(),
        };
    }
    if !(gib.is_finite() && gib > 0.0) {
        return MemoryCap::Skipped { why: format!("no memory cap: {gib} GiB is not a positive size") };
    }
    let held = match address_space_now() {
        Ok(bytes) => bytes,
        Err(e) => return MemoryCap::Skipped { why: format!("no memory cap: cannot read this process's size: {e}") },
    };
    let bytes = held.saturating_add((gib * (1u64 << 30) as f64) as u64);
    match rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
        Ok(()) => MemoryCap::Applied { bytes },
        Err(e) => MemoryCap::Skipped { why: format!("no memory cap: setting RLIMIT_AS failed: {e}") },
    }
}

/// The address space this process holds, in bytes (`VmSize` of /proc/self/status).
fn address_space_now() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no VmSize line in /proc/self/status")?;
    Ok(kib * 1024)
}

/// The process side: caps the memory (`memory_gib`, see [`apply_memory_cap`]; `None`:
/// no cap), loads `library` and runs the checks of blueprint `blueprint`, writing each
/// event to `out` as a line of the wire protocol, flushed. The error (the library does
/// not load) is for the process's stderr and exit status.
pub fn serve_blueprint(
    library: &Path,
    blueprint: &str,
    options: &SuiteOptions,
    memory_gib: Option<f64>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let target = options.move_to.unwrap_or_else(default_move_target);
    let cap = memory_gib.map(|gib| apply_memory_cap(gib, target));
    let (memory_cap, note) = match cap {
        Some(MemoryCap::Applied { bytes }) => (Some(bytes), None),
        Some(MemoryCap::Skipped { why }) => (None, Some(why)),
        None => (None, None),
    };
    send(out, &Line::Ready { memory_cap, note });
    let mut registry = BlueprintRegistry::new();
    registry.load(library).map_err(|e| esper_runtime::error::chain(&e))?;
    blueprint_report(&registry, blueprint, target, &mut |event| match event {
        CheckEvent::Started(check) => send(out, &Line::Started { check }),
        CheckEvent::Finished(result) => send(out, &Line::finished(result)),
    });
    send(out, &Line::Done);
    Ok(())
}

/// Writes one line and flushes it. A parent gone away stops reading: nothing to do.
fn send(out: &mut dyn Write, line: &Line) {
    // A newline first ends any line the plugin left unfinished on the same stdout.
    let _ = out.write_all(format!("\n{}\n", line.to_text()).as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_skipped_on_cuda_and_for_a_nonsense_size() {
        let cuda = apply_memory_cap(2.0, Device::Cuda(0));
        assert!(matches!(&cuda, MemoryCap::Skipped { why } if why.contains("CUDA")), "{cuda:?}");
        let zero = apply_memory_cap(0.0, Device::Cpu);
        assert!(matches!(&zero, MemoryCap::Skipped { why } if why.contains("0 GiB")), "{zero:?}");
        assert!(address_space_now().is_ok_and(|b| b > 0));
    }
}
