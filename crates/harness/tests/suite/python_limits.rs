//! Python values and jobs at their limits: deep and cyclic values, late interrupts, actor threads that end before their nursery returns.

crate::tests!();
