//! One poll per cluster for every relationship — and every job — being waited on.
//!
//! A fleet waits on a thousand SnapMirror transfers at once, and on two thousand quiesce and
//! break jobs. Polled one by one, each wait asks the cluster about its own object every few
//! tens of milliseconds: thousands of requests a second that ONTAP serves one at a time, and
//! most of a drover's CPU. Here the waits of one process on one cluster share a watcher per
//! kind of object: each wait keeps its own pace (a pause of 1/64 of the time it has waited,
//! [`LEAST_PAUSE`] to 5 s — at least [`BUSY_PAUSE`] while the watcher reads many objects), and
//! the watcher reads together every object whose turn has come — or comes within a quarter of
//! its pause — in one `GET /api/snapmirror/relationships?uuid=A|B|…` (or
//! `/api/cluster/jobs?uuid=…`) per [`CHUNK`] objects, one request at a time per cluster. A
//! wait learns of a change no later than it would have alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::OntapError;
use crate::model::{Job, Relationship};

/// Objects asked about in one request (about 2 KB of query).
const CHUNK: usize = 50;

/// The shortest pause between two readings of one object, while the watcher reads few: one
/// application's failover waits on one relationship, then one job at a time.
pub(crate) const LEAST_PAUSE: Duration = Duration::from_millis(20);

/// The shortest pause while the watcher reads many. ONTAP jobs and transfers take a second or
/// more; at 20 ms a fleet's 1,000 transfers were read ~90 times each (a third of drover's CPU
/// in the 500-application bench), at 50 ms ~40 times — noticing an end 15 ms later on average.
pub(crate) const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// Object readings a second a watcher takes at [`LEAST_PAUSE`] before its pauses lengthen
/// toward [`BUSY_PAUSE`]: 40 objects at 20 ms, 100 or more at 50 ms.
const READINGS_PER_SECOND: u32 = 2_000;

/// The shortest pause for each of `objects` watched together.
fn least_pause(objects: usize) -> Duration {
    let objects = u32::try_from(objects).unwrap_or(u32::MAX).min(1_000_000);
    (Duration::from_secs(1) * objects / READINGS_PER_SECOND).clamp(LEAST_PAUSE, BUSY_PAUSE)
}

/// What a watcher reads: an ONTAP object with a uuid, read many at once.
pub(crate) trait Watched: Clone + Send + Sync + Sized + 'static {
    /// The collection, as ONTAP names it in a 404 for one of its objects.
    const COLLECTION: &'static str;
    fn uuid(&self) -> &str;
    /// The objects of these uuids that exist, in one request.
    fn read(client: &Client, uuids: &[String]) -> impl Future<Output = Result<Vec<Self>, OntapError>> + Send;
    /// The watchers of this kind, one per cluster (by URL and user).
    fn watchers() -> &'static Mutex<HashMap<String, Arc<Watcher<Self>>>>;
}

static RELATIONSHIPS: LazyLock<Mutex<HashMap<String, Arc<Watcher<Relationship>>>>> = LazyLock::new(Default::default);
static JOBS: LazyLock<Mutex<HashMap<String, Arc<Watcher<Job>>>>> = LazyLock::new(Default::default);

impl Watched for Relationship {
    const COLLECTION: &'static str = "/api/snapmirror/relationships";
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn read(client: &Client, uuids: &[String]) -> impl Future<Output = Result<Vec<Self>, OntapError>> + Send {
        client.relationships_by_uuid(uuids)
    }
    fn watchers() -> &'static Mutex<HashMap<String, Arc<Watcher<Self>>>> {
        &RELATIONSHIPS
    }
}

impl Watched for Job {
    const COLLECTION: &'static str = "/api/cluster/jobs";
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn read(client: &Client, uuids: &[String]) -> impl Future<Output = Result<Vec<Self>, OntapError>> + Send {
        client.jobs_by_uuid(uuids)
    }
    fn watchers() -> &'static Mutex<HashMap<String, Arc<Watcher<Self>>>> {
        &JOBS
    }
}

/// What one wait last heard of its object.
type Reading<T> = Option<Result<T, OntapError>>;

struct Waiter<T> {
    uuid: String,
    poll: drover_api::Poll,
    due: Instant,
    /// The pause before `due`: a reading this close to it is taken early, with the others.
    pause: Duration,
    tx: watch::Sender<Reading<T>>,
}

struct State<T> {
    waiters: HashMap<u64, Waiter<T>>,
    next_id: u64,
    /// A task reads for the waiters; it ends when none is left.
    driving: bool,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State { waiters: HashMap::new(), next_id: 0, driving: false }
    }
}

/// The waits on one cluster's objects of one kind.
pub(crate) struct Watcher<T> {
    state: Mutex<State<T>>,
    /// A new wait wants its first reading now.
    arrived: Notify,
}

/// One wait's readings of one object; dropping it ends the wait.
pub(crate) struct Subscription<T: Watched> {
    watcher: Arc<Watcher<T>>,
    id: u64,
    rx: watch::Receiver<Reading<T>>,
}

impl<T: Watched> Subscription<T> {
    /// Start waiting on the object `uuid` of `client`'s cluster: the first reading comes at
    /// once.
    pub(crate) fn new(client: &Client, uuid: &str) -> Subscription<T> {
        let watcher = T::watchers()
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
            let poll = drover_api::Poll::new(Duration::from_secs(5)).at_least(LEAST_PAUSE);
            st.waiters.insert(id, Waiter { uuid: uuid.to_string(), poll, due: now, pause: Duration::ZERO, tx });
            (id, !std::mem::replace(&mut st.driving, true))
        };
        if start {
            tokio::spawn(drive(watcher.clone(), client.clone()));
        }
        watcher.arrived.notify_one();
        Subscription { watcher, id, rx }
    }

    /// The next reading of the object.
    pub(crate) async fn next(&mut self) -> Result<T, OntapError> {
        if self.rx.changed().await.is_err() {
            // The reader is gone (its task ended by a panic): nothing more will come.
            return Err(OntapError::Unexpected {
                cluster: "ONTAP".into(),
                path: T::COLLECTION.into(),
                cause: "the watcher stopped".into(),
            });
        }
        self.rx.borrow_and_update().clone().expect("a change is a reading")
    }
}

impl<T: Watched> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.watcher.state.lock().unwrap_or_else(|e| e.into_inner()).waiters.remove(&self.id);
    }
}

/// Marks the watcher driverless if its task is dropped unfinished (its runtime shut down),
/// so that the next wait starts another.
struct Driving<T> {
    watcher: Arc<Watcher<T>>,
    finished: bool,
}

impl<T> Drop for Driving<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.watcher.state.lock().unwrap_or_else(|e| e.into_inner()).driving = false;
        }
    }
}

/// Read, round after round, the objects whose turn has come, until no wait is left.
async fn drive<T: Watched>(watcher: Arc<Watcher<T>>, client: Client) {
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
            let early = |w: &Waiter<T>| w.due.checked_sub(w.pause / 4).unwrap_or(w.due);
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
            let read = T::read(&client, chunk).await;
            let at = Instant::now();
            let asked: std::collections::HashSet<&str> = chunk.iter().map(String::as_str).collect();
            let found: HashMap<&str, &T> =
                read.as_ref().map(|found| found.iter().map(|o| (o.uuid(), o)).collect()).unwrap_or_default();
            let mut st = watcher.state.lock().unwrap_or_else(|e| e.into_inner());
            let least = least_pause(st.waiters.len());
            for w in st.waiters.values_mut().filter(|w| asked.contains(w.uuid.as_str())) {
                let reading = match &read {
                    Ok(_) => match found.get(w.uuid.as_str()) {
                        Some(one) => Ok((*one).clone()),
                        None => Err(client.gone(T::COLLECTION, &w.uuid)),
                    },
                    Err(e) => Err(e.clone()),
                };
                w.pause = w.poll.next_delay().max(least);
                w.due = at + w.pause;
                w.tx.send_replace(Some(reading));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_objects_are_read_often_and_many_at_the_busy_pace() {
        assert_eq!(least_pause(1), LEAST_PAUSE);
        assert_eq!(least_pause(40), LEAST_PAUSE);
        assert_eq!(least_pause(70), Duration::from_millis(35));
        assert_eq!(least_pause(100), BUSY_PAUSE);
        assert_eq!(least_pause(1_000), BUSY_PAUSE);
        assert_eq!(least_pause(usize::MAX), BUSY_PAUSE);
    }
}
