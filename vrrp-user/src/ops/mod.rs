//! What operators see and hook into: the control socket and `xvrrp status`, the Prometheus
//! endpoint, notify scripts and the event stream.
pub mod control;
pub mod hooks;
pub mod metrics;
