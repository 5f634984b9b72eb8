//! Relationships looked up by destination path at the same moment share one query.
//!
//! A fleet's steps ask for their relationship all at once: a tier's 334 volume steps, each
//! `GET /api/snapmirror/relationships?destination.path=P`, in the preflight and again when they
//! run. Per cluster and identity up to [`READERS`] queries are on their way at a time; the
//! lookups asked meanwhile go together in the next (`destination.path=A|B|…`, up to
//! [`PER_QUERY`]). A lone lookup is sent at once, as before. Whatever the shared query cannot settle — a path ONTAP's
//! query syntax would read as a pattern, a path it matched differently (say, in another case),
//! a query the cluster refused (4xx) — is looked up alone, so each caller gets the answer and
//! the error it would have had by itself. A cluster that cannot be reached, or refuses the
//! credentials, is that for every caller at once (after the query's own retries).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio::sync::oneshot;

use crate::client::Client;
use crate::error::OntapError;
use crate::model::Relationship;

/// Paths per query (the URL stays short).
const PER_QUERY: usize = 50;

/// Queries on their way at once per cluster and identity: while ONTAP answers one, drover
/// reads the answer of another.
const READERS: usize = 4;

type Answer = Option<Relationship>;

/// Where one path's outcome goes: `Ok(None)` when its caller must ask alone.
type Outcome = oneshot::Sender<Result<Option<Answer>, OntapError>>;

#[derive(Default)]
struct Waiting {
    paths: Vec<(String, Outcome)>,
    /// Tasks sending this identity's queries.
    readers: usize,
}

static WAITING: LazyLock<Mutex<HashMap<String, Waiting>>> = LazyLock::new(Default::default);

/// The relationship whose destination is `path`, as seen from `client`'s cluster.
pub(crate) async fn relationship(client: &Client, path: &str) -> Result<Answer, OntapError> {
    // `|`, `*`, `,`, `!`, `<`, `>`, `{`, `}` mean something in an ONTAP query.
    if path.contains(['|', '*', ',', '!', '<', '>', '{', '}']) {
        return client.relationship_alone(path).await;
    }
    let (tx, rx) = oneshot::channel();
    let identity = client.identity();
    let start = {
        let mut all = WAITING.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = all.entry(identity.clone()).or_default();
        waiting.paths.push((path.to_string(), tx));
        // Another reader once the waiting paths fill more queries than there are readers.
        let start = waiting.readers < READERS && waiting.paths.len() > waiting.readers * PER_QUERY;
        waiting.readers += usize::from(start);
        start
    };
    if start {
        // Its own task: a caller that gives up does not take the others' query with it.
        tokio::spawn(read(client.clone(), identity));
    }
    match rx.await {
        Ok(Ok(Some(answer))) => Ok(answer),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) | Err(_) => client.relationship_alone(path).await,
    }
}

/// Answer what waits for this identity, a query at a time, until nothing does.
async fn read(client: Client, identity: String) {
    loop {
        let batch: Vec<_> = {
            let mut all = WAITING.lock().unwrap_or_else(|e| e.into_inner());
            let Some(waiting) = all.get_mut(&identity) else { return };
            if waiting.paths.is_empty() {
                waiting.readers -= 1;
                if waiting.readers == 0 {
                    all.remove(&identity);
                }
                return;
            }
            let n = waiting.paths.len().min(PER_QUERY);
            waiting.paths.drain(..n).collect()
        };
        let mut paths: Vec<&str> = batch.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        let found = client.relationships(&[("destination.path", &paths.join("|"))]).await;
        for (path, tx) in batch {
            let outcome = match &found {
                Ok(rels) => Ok(rels.iter().find(|r| r.destination.path == path).cloned().map(Some)),
                Err(OntapError::Answered { status: 400..=499, .. } | OntapError::MissingField { .. }) => Ok(None),
                Err(e) => Err(e.clone()),
            };
            let _ = tx.send(outcome);
        }
    }
}
