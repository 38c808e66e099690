//! Parity with PyTorch: the Python that runs the reference scripts in `tests/parity/`,
//! the call that hands them the tensors, and the error measure the tests compare.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};
use tch::Tensor;

/// The Python with torch and safetensors: `$ESPER_PYTHON`, else the one `scripts/setup.sh` links.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ESPER_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let linked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.esper-python");
    assert!(
        linked.exists(),
        "no Python with torch and safetensors for the parity tests: run scripts/setup.sh (it links {}), or set \
         ESPER_PYTHON",
        linked.display()
    );
    // The link's own target (a venv's bin/python), not its final target: Python finds
    // its venv from the path it was started by.
    std::fs::read_link(&linked).unwrap_or(linked)
}

/// `max |ours - reference| / max |reference|` (absolute when the reference is all zeros).
pub fn relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    let diff = (ours - reference).abs().max().double_value(&[]);
    let scale = reference.abs().max().double_value(&[]);
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

/// Runs `tests/parity/{script}` on `cases` (written as JSON) and `tensors` (written as
/// safetensors) in a fresh folder named `name`, and returns the tensors it writes back.
pub fn pytorch_reference(
    script: &str,
    name: &str,
    cases: &serde_json::Value,
    tensors: &[(String, Tensor)],
) -> BTreeMap<String, Tensor> {
    let dir = crate::temp_dir(name);
    let (cases_json, input, output) = (dir.join("cases.json"), dir.join("in.safetensors"), dir.join("out.safetensors"));
    std::fs::write(&cases_json, serde_json::to_vec(cases).unwrap()).unwrap();
    Tensor::write_safetensors(tensors, &input).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity").join(script);
    let run = Command::new(python()).arg(&script).arg(&cases_json).arg(&input).arg(&output).output().unwrap();
    assert!(
        run.status.success(),
        "the PyTorch reference failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    Tensor::read_safetensors(&output).unwrap().into_iter().collect()
}
