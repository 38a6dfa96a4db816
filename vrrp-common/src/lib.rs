//! The contract between the xvrrp XDP program and its daemon.
//!
//! Everything here is `no_std` and allocation free so that the eBPF crate can use it: map names
//! and capacities, the `#[repr(C)]` key and value types of every map (fixed-width integers and
//! byte arrays only, no implicit padding, sizes asserted at compile time), and the pure packet
//! decisions the data plane takes. The decisions are unit-tested on the host; the eBPF program
//! only bounds-checks, looks up and rewrites.
#![cfg_attr(not(test), no_std)]

pub mod arp;
pub mod ip;
pub mod jiffies;
pub mod maps;
pub mod nd;
pub mod vrrp;

pub use maps::*;
