//! Regressions from outside acceptance tests: hangs, silent losses, threads that outlive their nursery.

crate::tests!();
