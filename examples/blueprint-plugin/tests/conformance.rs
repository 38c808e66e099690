//! The Esper conformance suite on this crate's own built plugin library.
esper_conformance::conformance_test!();
