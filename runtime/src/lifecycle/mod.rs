//! The seed-slot lifecycle: stages, transitions, gates, alpha schedule, metrics.
