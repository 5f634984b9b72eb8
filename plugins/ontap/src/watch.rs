//! One poll per cluster for every relationship being waited on.
//!
//! A fleet waits on a thousand SnapMirror transfers at once. Polled one by one, each wait
//! asks the cluster about its own relationship every few tens of milliseconds: thousands of
//! requests a second that ONTAP serves one at a time, and most of a drover's CPU. Here the
//! waits of one process on one cluster share a watcher: each wait keeps its own pace (a pause
//! of 1/64 of the time it has waited, 20 ms to 5 s), and the watcher reads together every
//! relationship whose turn has come — or comes within a quarter of its pause — in one
//! `GET /api/snapmirror/relationships?uuid=A|B|…` per [`CHUNK`] relationships, one request at a
//! time per cluster. A wait learns of a change no later than it would have alone.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::OntapError;
use crate::model::Relationship;

/// Relationships asked about in one request (about 2 KB of query).
const CHUNK: usize = 50;

/// What one wait last heard of its relationship.
type Reading = Option<Result<Relationship, OntapError>>;

struct Waiter {
    uuid: String,
    poll: drover_api::Poll,
    due: Instant,
    /// The pause before `due`: a reading this close to it is taken early, with the others.
    pause: Duration,
    tx: watch::Sender<Reading>,
}

#[derive(Default)]
struct State {
    waiters: HashMap<u64, Waiter>,
    next_id: u64,
    /// A task reads for the waiters; it ends when none is left.
    driving: bool,
}

/// The waits on one cluster (by URL and user).
struct Watcher {
    state: Mutex<State>,
    /// A new wait wants its first reading now.
    arrived: Notify,
}

static WATCHERS: LazyLock<Mutex<HashMap<String, Arc<Watcher>>>> = LazyLock::new(Default::default);

/// One wait's readings of one relationship; dropping it ends the wait.
pub(crate) struct Subscription {
    watcher: Arc<Watcher>,
    id: u64,
    rx: watch::Receiver<Reading>,
}

impl Subscription {
    /// Start waiting on the relationship `uuid` of `client`'s cluster: the first reading
    /// comes at once.
    pub(crate) fn new(client: &Client, uuid: &str) -> Subscription {
        let watcher = WATCHERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client.identity())
            .or_insert_with(|| Arc::new(Watcher { state: Mutex::default(), arrived: Notify::new() }))
            .clone();
        let (tx, rx) = watch::channel(None);
        let now = Instant::now();
        let (id, start) = {
            let mut st = watcher.state.lock().unwrap_or_else(|e| e.into_inner());
            st.next_id += 1;
            let id = st.next_id;
            let poll = drover_api::Poll::new(Duration::from_secs(5));
            st.waiters.insert(id, Waiter { uuid: uuid.to_string(), poll, due: now, pause: Duration::ZERO, tx });
            (id, !std::mem::replace(&mut st.driving, true))
        };
        if start {
            tokio::spawn(drive(watcher.clone(), client.clone()));
        }
        watcher.arrived.notify_one();
        Subscription { watcher, id, rx }
    }

    /// The next reading of the relationship.
    pub(crate) async fn next(&mut self) -> Result<Relationship, OntapError> {
        if self.rx.changed().await.is_err() {
            // The reader is gone (its task ended by a panic): nothing more will come.
            return Err(OntapError::Unexpected {
                cluster: "ONTAP".into(),
                path: "/api/snapmirror/relationships".into(),
                cause: "the relationship watcher stopped".into(),
            });
        }
        self.rx.borrow_and_update().clone().expect("a change is a reading")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watcher.state.lock().unwrap_or_else(|e| e.into_inner()).waiters.remove(&self.id);
    }
}

/// Marks the watcher driverless if its task is dropped unfinished (its runtime shut down),
/// so that the next wait starts another.
struct Driving {
    watcher: Arc<Watcher>,
    finished: bool,
}

impl Drop for Driving {
    fn drop(&mut self) {
        if !self.finished {
            self.watcher.state.lock().unwrap_or_else(|e| e.into_inner()).driving = false;
        }
    }
}

/// Read, round after round, the relationships whose turn has come, until no wait is left.
async fn drive(watcher: Arc<Watcher>, client: Client) {
    let mut driving = Driving { watcher: watcher.clone(), finished: false };
    loop {
        let now = Instant::now();
        let (due, wake) = {
            let mut st = watcher.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.waiters.is_empty() {
                st.driving = false;
                driving.finished = true;
                return;
            }
            let early = |w: &Waiter| w.due.checked_sub(w.pause / 4).unwrap_or(w.due);
            let mut due: Vec<String> =
                st.waiters.values().filter(|w| early(w) <= now).map(|w| w.uuid.clone()).collect();
            due.sort_unstable();
            due.dedup();
            (due, st.waiters.values().map(early).min().unwrap_or(now))
        };
        if due.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = watcher.arrived.notified() => {}
            }
            continue;
        }
        for chunk in due.chunks(CHUNK) {
            let read = client.relationships_by_uuid(chunk).await;
            let at = Instant::now();
            let mut st = watcher.state.lock().unwrap_or_else(|e| e.into_inner());
            for w in st.waiters.values_mut().filter(|w| chunk.contains(&w.uuid)) {
                let reading = match &read {
                    Ok(found) => match found.iter().find(|r| r.uuid == w.uuid) {
                        Some(rel) => Ok(rel.clone()),
                        None => Err(client.gone(&w.uuid)),
                    },
                    Err(e) => Err(e.clone()),
                };
                w.pause = w.poll.next_delay();
                w.due = at + w.pause;
                w.tx.send_replace(Some(reading));
            }
        }
    }
}
