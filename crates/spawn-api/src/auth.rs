//! Tree membership: the per-tree secret and the proofs a handshake exchanges.
//!
//! The kernel's peer credentials say *which user* is at the other end of a channel; they
//! cannot tell a member of this tree from any other process of the same user. So every
//! tree has a [`TreeSecret`] (the idea of Erlang's distribution cookie): the root makes
//! one, every child receives it at spawn through a path that is neither its command line
//! nor its environment, and both ends of every channel prove they know it. The secret
//! itself never crosses a channel: each side sends a fresh random [`Nonce`] and answers
//! the other's with a keyed BLAKE3 hash over both nonces, both actor ids and its role
//! ([`Proof`]), so a recorded exchange is worth nothing on the next connection.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::ActorId;

/// Domain separation for the handshake proofs (changes with the proof's layout).
const PROOF_CONTEXT: &str = "brood 2026-12 handshake proof v1";
/// Domain separation for secrets derived from a passphrase.
const DERIVE_CONTEXT: &str = "brood 2026-12 tree secret from passphrase v1";

/// The 32-byte secret that makes a process a member of one actor tree.
///
/// `Debug` never shows it. Comparing two secrets takes the same time wherever they
/// differ.
///
/// ```
/// use spawn_api::TreeSecret;
/// let a = TreeSecret::from_passphrase(b"shared by two programs");
/// let b = TreeSecret::from_passphrase(b"shared by two programs");
/// assert_eq!(a, b);
/// assert_ne!(a, TreeSecret::random());
/// assert_eq!(format!("{a:?}"), "TreeSecret(..)");
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct TreeSecret([u8; 32]);

impl TreeSecret {
    /// A fresh secret from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system has no random source (`getrandom` fails): a tree without
    /// a secret it could keep would be open to every process of the user.
    pub fn random() -> TreeSecret {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the OS random source is unavailable");
        TreeSecret(b)
    }

    /// A secret from raw bytes (shared with other programs by the caller's own means).
    pub fn from_bytes(bytes: [u8; 32]) -> TreeSecret {
        TreeSecret(bytes)
    }

    /// A secret derived from a passphrase: programs given the same passphrase share it.
    pub fn from_passphrase(passphrase: &[u8]) -> TreeSecret {
        TreeSecret(blake3::derive_key(DERIVE_CONTEXT, passphrase))
    }

    /// The raw bytes, for handing the secret to another program.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The proof that the side in `role` knows this secret, for the handshake between
    /// `connector` (who opened the channel, sent `connector_nonce`) and `acceptor`. For
    /// tools that speak brood's protocol themselves; actors do this on every channel.
    ///
    /// ```
    /// use spawn_api::{ActorId, Nonce, ProofRole, TreeSecret};
    /// let s = TreeSecret::random();
    /// let (c, a) = (ActorId::new("tool"), ActorId::new("root"));
    /// let (nc, na) = (Nonce::random(), Nonce::random());
    /// let p = s.prove(ProofRole::Connector, &c, &nc, &a, &na);
    /// assert!(s.verify(&p, ProofRole::Connector, &c, &nc, &a, &na));
    /// assert!(!s.verify(&p, ProofRole::Acceptor, &c, &nc, &a, &na));
    /// ```
    pub fn prove(
        &self,
        role: ProofRole,
        connector: &ActorId,
        connector_nonce: &Nonce,
        acceptor: &ActorId,
        acceptor_nonce: &Nonce,
    ) -> Proof {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(PROOF_CONTEXT.as_bytes());
        h.update(&[role as u8]);
        h.update(&connector_nonce.0);
        h.update(&acceptor_nonce.0);
        for id in [connector, acceptor] {
            let name = id.name().as_bytes();
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name);
            h.update(&id.uid().to_le_bytes());
        }
        Proof(*h.finalize().as_bytes())
    }

    /// Whether `proof` is what [`prove`](Self::prove) gives for these inputs; constant
    /// time in the proof's bytes.
    pub fn verify(
        &self,
        proof: &Proof,
        role: ProofRole,
        connector: &ActorId,
        connector_nonce: &Nonce,
        acceptor: &ActorId,
        acceptor_nonce: &Nonce,
    ) -> bool {
        let expected = self.prove(role, connector, connector_nonce, acceptor, acceptor_nonce);
        blake3::Hash::from_bytes(expected.0) == blake3::Hash::from_bytes(proof.0)
    }
}

/// Do once in this process what the first proof would otherwise start with: the hash's
/// detection of the CPU's vector instructions, by `cpuid`, which traps to the hypervisor
/// in a virtual machine (it was the forked child's costliest user-space function in a
/// profile of fork spawns here). A forkserver calls this before it forks, so that its
/// children inherit the answer instead of each asking again; anywhere else it only moves
/// the cost earlier.
///
/// ```
/// spawn_api::auth::warm_up();
/// ```
pub fn warm_up() {
    let _ = blake3::keyed_hash(&[0; 32], PROOF_CONTEXT.as_bytes());
}

impl PartialEq for TreeSecret {
    fn eq(&self, other: &TreeSecret) -> bool {
        // blake3's Hash compares in constant time.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for TreeSecret {}

impl fmt::Debug for TreeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TreeSecret(..)")
    }
}

/// Which end of a channel a handshake proof is from (a proof cannot be reflected back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProofRole {
    /// The side that connected and sent [`crate::Msg::Hello`].
    Connector = 1,
    /// The side that accepted and sent [`crate::Msg::Challenge`].
    Acceptor = 2,
}

/// 16 fresh random bytes one side of a handshake contributes.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    /// A fresh nonce.
    ///
    /// # Panics
    /// If the operating system has no random source.
    pub fn random() -> Nonce {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the OS random source is unavailable");
        Nonce(b)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A keyed hash proving knowledge of the tree's secret for one handshake.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof(pub [u8; 32]);

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_role_nonces_and_ids() {
        let s = TreeSecret::random();
        let (c, a) = (ActorId::new("child"), ActorId::new("parent"));
        let (nc, na) = (Nonce::random(), Nonce::random());
        let p = s.prove(ProofRole::Connector, &c, &nc, &a, &na);
        assert!(s.verify(&p, ProofRole::Connector, &c, &nc, &a, &na));
        assert!(
            !s.verify(&p, ProofRole::Acceptor, &c, &nc, &a, &na),
            "reflected"
        );
        assert!(
            !s.verify(&p, ProofRole::Connector, &c, &na, &a, &nc),
            "nonces swapped"
        );
        assert!(!s.verify(&p, ProofRole::Connector, &c, &nc, &a, &Nonce::random()));
        assert!(
            !s.verify(&p, ProofRole::Connector, &a, &nc, &c, &na),
            "ids swapped"
        );
        let other = TreeSecret::random();
        assert!(!other.verify(&p, ProofRole::Connector, &c, &nc, &a, &na));
    }

    #[test]
    fn secrets_never_print() {
        let s = TreeSecret::from_bytes([7; 32]);
        assert!(!format!("{s:?}").contains('7'));
        assert_eq!(s.to_bytes(), [7; 32]);
    }
}
