//! Faults injected into a simulator's answers: which requests they hit (server, method, a
//! substring of the path), how many, and what share. What a fault does (`K`) is each
//! simulator's own: a latency, a dropped connection, an error in its API's dialect.

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault<K> {
    /// For a simulator of several servers, which one (by name); `None`: all.
    pub server: Option<String>,
    pub method: Option<String>,
    /// A substring of the request path.
    pub path: Option<String>,
    pub kind: K,
    /// For this many matching requests (`None`: all).
    pub remaining: Option<u32>,
    /// For this share of matching requests (1.0: each).
    pub share: f64,
}

impl<K> Fault<K> {
    /// Every request of every server, every time.
    pub fn always(kind: K) -> Fault<K> {
        Fault { server: None, method: None, path: None, kind, remaining: None, share: 1.0 }
    }

    fn hits(&self, server: &str, method: &str, path: &str) -> bool {
        self.server.as_deref().is_none_or(|s| s == server)
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|p| path.contains(p))
            && self.remaining != Some(0)
            && (self.share >= 1.0 || rand::random::<f64>() < self.share)
    }
}

/// The first fault hitting this request, counted against its `remaining`.
pub fn take<K: Clone>(faults: &mut [Fault<K>], server: &str, method: &str, path: &str) -> Option<K> {
    let f = faults.iter_mut().find(|f| f.hits(server, method, path))?;
    if let Some(n) = f.remaining.as_mut() {
        *n -= 1;
    }
    Some(f.kind.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_hits_its_server_method_and_path_as_many_times_as_asked() {
        let mut faults = vec![Fault {
            server: Some("west".into()),
            method: Some("PATCH".into()),
            path: Some("/relationships/".into()),
            kind: "boom",
            remaining: Some(2),
            share: 1.0,
        }];
        assert_eq!(take(&mut faults, "east", "PATCH", "/api/snapmirror/relationships/1"), None);
        assert_eq!(take(&mut faults, "west", "GET", "/api/snapmirror/relationships/1"), None);
        assert_eq!(take(&mut faults, "west", "patch", "/api/snapmirror/relationships/1"), Some("boom"));
        assert_eq!(take(&mut faults, "west", "PATCH", "/api/snapmirror/relationships/1"), Some("boom"));
        assert_eq!(take(&mut faults, "west", "PATCH", "/api/snapmirror/relationships/1"), None);
        assert_eq!(take(&mut [Fault::always(1)], "any", "GET", "/"), Some(1));
    }
}
