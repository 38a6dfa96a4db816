//! The eBPF crate is a binary for the BPF target; this empty library only lets vrrp-user name
//! it as a build dependency, so that cargo rebuilds the daemon when the program changes.
#![no_std]
