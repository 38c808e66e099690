//! Empty: a build script makes cargo resolve `[build-dependencies]`, through which this
//! crate aligns the features of the crates that build scripts and procedural macros use.
fn main() {}
