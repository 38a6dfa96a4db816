//! xvrrp: keeps a virtual IP on exactly one healthy host, with ARP answered from XDP.
//!
//! - [`config`]: the TOML configuration, validated as a whole before anything is applied.
//! - [`dataplane`]: loads, attaches and feeds the XDP program built from `vrrp-ebpf`.
//! - [`daemon`]: the event loop that wires them to the kernel.
pub mod alarm;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod garp;
pub mod hold;
pub mod hooks;
pub mod import;
pub mod keeper;
pub mod lease;
pub mod metrics;
pub mod mysql;
pub mod netlink;
pub mod process;
pub mod scripts;
pub mod split;
pub mod track;
pub mod wire;
