//! The daemon's ways into the kernel besides the data plane: the timerfd, the advert sockets,
//! the packet socket for announcements, rtnetlink for addresses, routes, links and events.
pub mod alarm;
pub mod garp;
pub mod netlink;
pub mod wire;
