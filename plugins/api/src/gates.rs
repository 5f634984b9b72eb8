//! Turns at a server, shared by every step of the process.
//!
//! A fleet's steps reach the same few servers at the same moment: hundreds of HAProxy runtime
//! commands, ONTAP requests, DNS queries. Servers serve a handful at a time and leave the rest
//! to wait out retransmits or drop them (HAProxy's stats socket, a DNS server's UDP receive
//! buffer). A plugin keeps one [`Gates`] per kind of turn; each server (by address) gets one
//! semaphore, with the fewest turns any site naming that server gives: two sites that reach
//! one cluster with different limits both get the stricter, whichever is used first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// A server's semaphore and the turns it was last set to.
struct Gate {
    semaphore: Arc<Semaphore>,
    turns: usize,
    /// Turns to drop as they come back, when no runtime could wait for them.
    owed: usize,
}

/// One semaphore per server address, made on first use.
pub struct Gates(Mutex<BTreeMap<String, Gate>>);

impl Gates {
    pub const fn new() -> Gates {
        Gates(Mutex::new(BTreeMap::new()))
    }

    /// The gate of `server`, with at most `turns` (at least one) — or fewer, if another site
    /// naming this server asked for fewer. Narrowing a gate whose turns are taken takes effect
    /// as they are given back.
    pub fn of(&self, server: &str, turns: usize) -> Arc<Semaphore> {
        let turns = turns.max(1);
        let mut gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let gate = gates.entry(server.to_string()).or_insert_with(|| Gate {
            semaphore: Arc::new(Semaphore::new(turns)),
            turns,
            owed: 0,
        });
        if gate.owed > 0 {
            gate.owed -= gate.semaphore.forget_permits(gate.owed);
        }
        if turns < gate.turns {
            let fewer = gate.turns - turns;
            gate.turns = turns;
            let owed = fewer - gate.semaphore.forget_permits(fewer);
            if owed > 0 {
                // Turns now in use: each is kept as it is given back, until the debt is paid.
                let semaphore = gate.semaphore.clone();
                let keep = async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(owed as u32).await {
                        permits.forget();
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(keep)),
                    Err(_) => gate.owed += owed,
                }
            }
        }
        gate.semaphore.clone()
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
    fn a_server_s_gate_has_the_fewest_turns_any_site_gives() {
        static GATES: Gates = Gates::new();
        let first = GATES.of("127.0.0.1:53", 4);
        let wider = GATES.of("127.0.0.1:53", 9);
        assert!(Arc::ptr_eq(&first, &wider));
        assert_eq!(wider.available_permits(), 4, "a wider limit never widens another site's");
        let narrower = GATES.of("127.0.0.1:53", 2);
        assert!(Arc::ptr_eq(&first, &narrower));
        assert_eq!(narrower.available_permits(), 2, "the stricter site's limit holds for both");
        assert_eq!(GATES.of("127.0.0.1:54", 0).available_permits(), 1, "never a gate no one passes");
    }

    #[tokio::test]
    async fn narrowing_a_busy_gate_takes_effect_as_turns_come_back() {
        static GATES: Gates = Gates::new();
        let gate = GATES.of("127.0.0.1:80", 4);
        let busy = gate.clone().acquire_many_owned(3).await.unwrap();
        // One turn free, three in use; the limit drops to one.
        GATES.of("127.0.0.1:80", 1);
        assert_eq!(gate.available_permits(), 0);
        drop(busy);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while gate.available_permits() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the gate settles at one turn");
        // And stays there.
        tokio::task::yield_now().await;
        assert_eq!(gate.available_permits(), 1);
    }
}
