//! The forkserver trusts no one it did not start: impersonation, forged replies, foreign descriptors.

crate::tests!();
