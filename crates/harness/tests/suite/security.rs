//! Hostile peers: outsiders of the same user, lying windows, credit floods, idle and excess connections.

crate::tests!();
