//! The runbooks drover ships, inside the binary: `drover failover` works from any directory,
//! and a run records `builtin:failover.yaml` so `resume` finds the same text again (its
//! digest still guards against a drover upgraded in between).

/// `builtin:NAME` names a shipped runbook.
pub const PREFIX: &str = "builtin:";

const SHIPPED: &[(&str, &str)] = &[
    ("failover.yaml", include_str!("../../../../runbooks/failover.yaml")),
    ("failback.yaml", include_str!("../../../../runbooks/failback.yaml")),
    ("rehearsal.yaml", include_str!("../../../../runbooks/rehearsal.yaml")),
    ("bluegreen-upgrade.yaml", include_str!("../../../../runbooks/bluegreen-upgrade.yaml")),
];

/// The text of a shipped runbook, for a path written `builtin:NAME`.
pub fn text(path: &std::path::Path) -> Option<&'static str> {
    let name = path.to_str()?.strip_prefix(PREFIX)?;
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The path that names a shipped runbook.
pub fn path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{PREFIX}{name}"))
}

/// Every shipped runbook's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    SHIPPED.iter().map(|(n, _)| *n)
}
