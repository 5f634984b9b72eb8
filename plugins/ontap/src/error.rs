//! Everything the ONTAP client can fail with, as data: HTTP status and ONTAP code stay
//! fields, so callers decide on them (`code() == Some("13303818")`) instead of searching the
//! text. It becomes an [`ActionError`] once, where an action returns.

use drover_api::ActionError;

/// ONTAP codes that mean "try again shortly" (ONTAP-REST.md §9).
pub const RETRYABLE_CODES: &[&str] =
    &["6619715", "6619720", "13303816", "13304159", "13303830", "13303812", "13434915", "13434916"];

/// `entry doesn't exist`.
pub const NOT_FOUND: &str = "4";

/// A state change to the state the relationship is in already (ONTAP answers either).
pub const ALREADY_IN_STATE: &[&str] = &["13303818", "13303832"];

/// What went wrong talking to one cluster. `cluster` reads "ONTAP `site` (url)".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OntapError {
    #[error("{cluster} {}: {cause}", if *.timeout { "did not answer in time" } else { "is unreachable" })]
    Unreachable { cluster: String, timeout: bool, cause: String },

    #[error("{cluster} {}: TLS certificate not trusted: {cause}", if *.timeout { "did not answer in time" } else { "is unreachable" })]
    Untrusted { cluster: String, timeout: bool, cause: String },

    #[error("{cluster}: reading the answer failed: {cause}")]
    Truncated { cluster: String, cause: String },

    #[error("{cluster} rejected the credentials of user `{user}` (from {credentials})")]
    Unauthorized { cluster: String, user: String, credentials: String },

    /// An error answer: status, ONTAP's code (when it sent one) and message.
    #[error("{cluster} answered {status} to {method} {path}: {message}{}", code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default())]
    Answered { cluster: String, status: u16, method: String, path: String, code: Option<String>, message: String },

    /// A 400 262197: drover asked for a field this release does not have.
    #[error("{cluster}: {release} has no field `{field}` (asked for in GET {path}); drover supports ONTAP {range}")]
    MissingField { cluster: String, release: String, field: String, path: String, range: String },

    /// An answer that does not decode into what drover reads of that object.
    #[error("{cluster}: the answer to GET {path} is not what drover expects: {cause}")]
    Unexpected { cluster: String, path: String, cause: String },

    #[error("{cluster}: job failed: {message} (code {code})")]
    JobFailed { cluster: String, code: String, message: String },

    #[error("{cluster}: job {href} did not finish before the step's deadline")]
    JobDeadline { cluster: String, href: String },

    #[error("{cluster}: the cluster's version `{full}` is not one drover can read")]
    UnreadableVersion { cluster: String, full: String },

    #[error("{cluster} runs ONTAP {version}, older than the releases drover supports ({range})")]
    TooOld { cluster: String, version: String, range: String },

    #[error("no SnapMirror relationship with destination `{path}` on {cluster}")]
    NoRelationship { cluster: String, path: String },
}

impl OntapError {
    /// ONTAP's error or job code.
    pub fn code(&self) -> Option<&str> {
        match self {
            OntapError::Answered { code, .. } => code.as_deref(),
            OntapError::JobFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            OntapError::Answered { status, .. } => Some(*status),
            OntapError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Whether trying again may succeed: no answer, a busy cluster, a server error.
    pub fn is_retryable(&self) -> bool {
        let busy = self.code().is_some_and(|c| RETRYABLE_CODES.contains(&c));
        match self {
            OntapError::Unreachable { .. } | OntapError::Truncated { .. } => true,
            OntapError::Answered { status, .. } => *status >= 500 || *status == 429 || busy,
            OntapError::JobFailed { .. } => busy,
            _ => false,
        }
    }

    /// What to do next.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            OntapError::Unreachable { .. } => "check the cluster management address and the network path; if the site is down, this step cannot succeed".into(),
            OntapError::Untrusted { .. } => "give the cluster's CA as `ca_file:` in the site's ontap settings (or, only for a lab, `insecure: true`)".into(),
            OntapError::Truncated { .. } => return None,
            OntapError::Unauthorized { credentials, .. } => {
                format!("check the password in {credentials} and the user name in the site's ontap settings")
            }
            OntapError::Answered { code: Some(c), .. } | OntapError::JobFailed { code: c, .. } => hint_for(c).into(),
            OntapError::Answered { code: None, .. } => "see the ONTAP message".into(),
            OntapError::MissingField { .. } => {
                "this is a gap in drover's definitions of that release: report it with the cluster's `version` output".into()
            }
            OntapError::Unexpected { .. } => {
                "the cluster answered in a shape drover does not read: report it with the cluster's `version` output".into()
            }
            OntapError::JobDeadline { .. } => {
                "the operation may still complete on the cluster; check it, then `drover resume`".into()
            }
            OntapError::UnreadableVersion { .. } => {
                "check the answer of GET /api/cluster?fields=version on that cluster, and report it".into()
            }
            OntapError::TooOld { .. } => "upgrade the cluster to a supported release (older ones lack fields drover reads), or run these steps by hand".into(),
            OntapError::NoRelationship { .. } => "relationships are listed on their destination cluster: check `site` and the path (`svm:` for SVM-DR, `svm:volume` for a volume)".into(),
        })
    }
}

impl From<OntapError> for ActionError {
    fn from(e: OntapError) -> ActionError {
        let hint = e.hint();
        let err = if e.is_retryable() {
            ActionError::retryable(e.to_string())
        } else {
            ActionError::permanent(e.to_string())
        };
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }
}

/// What to do about an ONTAP error code.
pub fn hint_for(code: &str) -> &'static str {
    match code {
        NOT_FOUND => {
            "the object does not exist on this cluster; check the names and that you address the right cluster"
        }
        "6619715" | "6619720" | "13303816" | "13304159" | "13303830" => {
            "ONTAP is busy with this object; the step retries"
        }
        "13303808" => {
            "the break failed; look for a running transfer or, for SVM-DR with identity preservation, stop the source SVM first"
        }
        "13303810" => "no common snapshot: the relationship needs a new baseline (initialize) instead of a resync",
        "13303818" | "13303833" => {
            "this state change is not possible from the relationship's current state; check it with `ontap.snapmirror.wait`"
        }
        "13303844" => {
            "updates fail while the relationship is broken off or quiesced, or when the source is unreachable"
        }
        "13434880" => "a dp-destination SVM starts only after its SVM-DR relationship is broken off",
        "524615" => "delete the volume's clones first",
        "917526" => "a volume of that name exists already",
        _ => "see the ONTAP message; `drover resume` retries once the cause is fixed",
    }
}
