//! Turns at a server, shared by every step of the process.
//!
//! A fleet's steps reach the same few servers at the same moment: hundreds of HAProxy runtime
//! commands, ONTAP requests, DNS queries. Servers serve a handful at a time and leave the rest
//! to wait out retransmits or drop them (HAProxy's stats socket, a DNS server's UDP receive
//! buffer). A plugin keeps one [`Gates`] per kind of turn; each server (by address) gets one
//! semaphore, made with the turns its first user's site settings give.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// One semaphore per server address, made on first use.
pub struct Gates(Mutex<BTreeMap<String, Arc<Semaphore>>>);

impl Gates {
    pub const fn new() -> Gates {
        Gates(Mutex::new(BTreeMap::new()))
    }

    /// The gate of `server`, made with `turns` (at least one) on first use; later callers get
    /// that gate whatever turns they ask for.
    pub fn of(&self, server: &str, turns: usize) -> Arc<Semaphore> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(server.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(turns.max(1))))
            .clone()
    }
}

impl Default for Gates {
    fn default() -> Gates {
        Gates::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_s_gate_is_made_once_with_its_first_user_s_turns() {
        static GATES: Gates = Gates::new();
        let first = GATES.of("127.0.0.1:53", 2);
        let again = GATES.of("127.0.0.1:53", 9);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.available_permits(), 2);
        assert_eq!(GATES.of("127.0.0.1:54", 0).available_permits(), 1, "never a gate no one passes");
    }
}
