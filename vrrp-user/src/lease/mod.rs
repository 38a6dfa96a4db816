//! The write lease: a master enables writes on its MySQL server only while a majority of
//! {itself, its peer, the witness} grants it a time-bounded lease. [`wire`] is the
//! authenticated message format, [`voter`] one vote, [`node`] the pure logic of a node (its own
//! vote and its candidacy), and [`task`] the shell that runs them on a UDP socket, for the
//! daemon and for `xvrrp witness`.
pub mod node;
pub mod task;
pub mod voter;
pub mod wire;

#[cfg(test)]
mod tests;
