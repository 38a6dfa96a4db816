//! xvrrp: keeps a virtual IP on exactly one healthy host, with ARP answered from XDP.
//!
//! - [`config`]: the TOML configuration, validated as a whole before anything is applied.
//! - [`engine`]: the VRRP state machine, pure (no sockets, no clocks).
//! - [`dataplane`]: loads, attaches and feeds the XDP program built from `vrrp-ebpf`.
//! - [`daemon`]: the event loop that wires them to the kernel, one data plane per interface.
//! - [`track`]: what instances follow: scripts, files, processes, MySQL targets.
//! - [`sys`]: sockets, rtnetlink, announcements, the timerfd.
//! - [`ops`]: status, metrics, notify hooks and the event stream.
//! - [`lease`]: the write lease of a MySQL pair; [`keeper`], [`split`], [`hold`]: VIP upkeep
//!   and split-brain judgement, pure.
//! - [`import`]: `xvrrp import-keepalived`.
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod hold;
pub mod import;
pub mod keeper;
pub mod lease;
pub mod ops;
pub mod split;
pub mod sys;
pub mod track;

pub use ops::{control, hooks, metrics};
pub use sys::{alarm, garp, netlink, wire};
pub use track::{mysql, process, scripts};
