//! One run at a time per scope (the runbook's name) and state directory.
//!
//! The lock file is written complete under a temporary name and then hard-linked into place,
//! so it either exists with its holder's details or not at all. A lock whose holder process
//! is gone from this host is stale and taken over with a warning; a lock held from another
//! host needs `--break-lock`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
}

/// The warning a person reads when a run takes a lock its holder no longer holds.
fn taking_over(path: &Path, holder: Option<&LockInfo>, stale: bool) -> String {
    let whose = match holder {
        Some(h) if stale => {
            format!("run {} (pid {} on {}, since {}) is no longer running", h.run_id, h.pid, h.host, h.since)
        }
        Some(h) => format!("--break-lock: run {} (pid {} on {}, since {}) loses it", h.run_id, h.pid, h.host, h.since),
        None => "it cannot be read (a crash while it was written)".into(),
    };
    format!("taking over the run lock {}: {whose}", path.display())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("run {} of `{scope}` is in progress on host {} (pid {}) since {}", holder.run_id, holder.host, holder.pid, holder.since)]
    Held { scope: String, holder: Box<LockInfo>, path: PathBuf },
    #[error("cannot take the run lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl LockError {
    pub fn hint(&self) -> String {
        match self {
            LockError::Held { holder, path, .. } => format!(
                "wait for it (`drover status {}`), or if it is certainly dead, rerun with --break-lock (lock file: {})",
                holder.run_id,
                path.display()
            ),
            LockError::Io { .. } => "check permissions of the state directory (--state-dir)".into(),
        }
    }
}

/// Held while a run executes; removed on drop.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    run_id: String,
}

pub use drover_model::events::hostname;

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl RunLock {
    /// Take the lock for `scope`, reporting who holds it otherwise.
    pub fn acquire(locks_dir: &Path, scope: &str, run_id: &str, break_lock: bool) -> Result<RunLock, LockError> {
        let path = locks_dir.join(format!("{scope}.lock"));
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(locks_dir).map_err(io)?;
        let info = LockInfo {
            run_id: run_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            since: drover_model::events::now_rfc3339(),
        };
        let tmp = locks_dir.join(format!(".{scope}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&info).expect("serializes")).map_err(io)?;
        let result = (|| {
            for _ in 0..3 {
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {
                        return Ok(RunLock { path: path.clone(), run_id: run_id.to_string() });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let holder = read_holder(&path);
                        let stale = match &holder {
                            Some(h) => h.host == info.host && !pid_alive(h.pid),
                            None => true,
                        };
                        let ours = holder
                            .as_ref()
                            .is_some_and(|h| h.run_id == run_id && h.host == info.host && h.pid == info.pid);
                        if stale || break_lock || ours {
                            if !ours {
                                tracing::warn!("{}", taking_over(&path, holder.as_ref(), stale));
                            }
                            let _ = std::fs::remove_file(&path);
                            continue;
                        }
                        let holder = Box::new(holder.expect("not stale means readable"));
                        return Err(LockError::Held { scope: scope.to_string(), holder, path: path.clone() });
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(io(std::io::Error::other("the lock changed hands repeatedly while taking it")))
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_holder(path: &Path) -> Option<LockInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Who holds the lock of `scope`, if anyone alive does.
pub fn holder(locks_dir: &Path, scope: &str) -> Option<LockInfo> {
    let h = read_holder(&locks_dir.join(format!("{scope}.lock")))?;
    (h.host != hostname() || pid_alive(h.pid)).then_some(h)
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours (it may have been broken and retaken).
        if read_holder(&self.path).is_some_and(|h| h.run_id == self.run_id && h.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_details() {
        let dir = tempfile::tempdir().unwrap();
        let _a = RunLock::acquire(dir.path(), "failover", "run-a", false).unwrap();
        let err = RunLock::acquire(dir.path(), "failover", "run-b", false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("run run-a of `failover` is in progress on host"), "{text}");
        assert!(err.hint().contains("--break-lock"));
    }

    #[test]
    fn lock_of_a_dead_process_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockInfo { run_id: "old".into(), host: hostname(), pid: 999_999_999, since: "x".into() };
        std::fs::write(dir.path().join("failover.lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let lock = RunLock::acquire(dir.path(), "failover", "new", false).unwrap();
        assert_eq!(read_holder(lock.path()).unwrap().run_id, "new");
        drop(lock);
        assert!(!dir.path().join("failover.lock").exists());
    }

    #[test]
    fn lock_from_another_host_needs_break_lock() {
        let dir = tempfile::tempdir().unwrap();
        let other = LockInfo { run_id: "far".into(), host: "site-b-jumphost".into(), pid: 1, since: "x".into() };
        std::fs::write(dir.path().join("failover.lock"), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(RunLock::acquire(dir.path(), "failover", "new", false).is_err());
        assert!(RunLock::acquire(dir.path(), "failover", "new", true).is_ok());
    }
}
