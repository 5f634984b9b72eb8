//! The lab's built-in stand-ins for servers a machine may not have: an authoritative DNS server
//! taking RFC 2136 updates with TSIG (for BIND) and a TCP load balancer with HAProxy's runtime
//! API (for HAProxy). Each passes the same suites as the real server it stands in for. Not part
//! of the production binary (`cargo build --no-default-features`).

pub mod dns;
pub mod lb;
