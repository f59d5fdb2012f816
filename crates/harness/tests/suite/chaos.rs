//! Chaos: a child killed at every phase of its life, a killed middle actor, a killed forkserver; the nursery reports it, nothing hangs, nothing leaks.

crate::tests!();
