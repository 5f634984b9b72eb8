//! The typed runbook: what the engine runs once the YAML has been checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use drover_api::PathSegment;

use super::expr::{Expr, Template};
use super::yaml::{Node, Pos};

pub const API_VERSION: &str = "drover/v1";

/// A loaded runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub path: PathBuf,
    /// SHA-256 of the runbook file, so `resume` can refuse a changed runbook.
    pub digest: String,
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub sites: BTreeMap<String, Site>,
    pub locks: BTreeMap<String, usize>,
    pub on_failure: OnFailure,
    pub concurrency: Option<usize>,
    /// Webhooks told about gates and the run's end: the runbook's, then the sites file's.
    pub notify: Vec<crate::notify::Notify>,
    pub steps: Vec<Step>,
    /// The parsed file, kept to locate problems found later.
    pub root: Node,
}

impl Runbook {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// What the run does when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Start nothing new, let running steps finish, run `always` steps, stop.
    #[default]
    Halt,
    /// Like halt, then undo completed steps in reverse dependency order.
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Int,
    Bool,
    Duration,
    List,
}

impl ParamType {
    /// The type an expression reading this param yields.
    pub fn value_type(self) -> drover_api::ValueType {
        use drover_api::ValueType;
        match self {
            ParamType::String | ParamType::Duration => ValueType::String,
            ParamType::Int => ValueType::Int,
            ParamType::Bool => ValueType::Bool,
            ParamType::List => ValueType::List,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Duration => "duration",
            ParamType::List => "list",
        }
    }

    pub const ALL: [&'static str; 5] = ["string", "int", "bool", "duration", "list"];
}

#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    pub default: Option<Value>,
    pub required: bool,
    pub description: String,
    /// Allowed values, when the runbook restricts them.
    pub allowed: Vec<Value>,
    pub pos: Pos,
}

/// A named set of connection settings. Its content belongs to the plugins.
#[derive(Debug, Clone)]
pub struct Site {
    pub settings: Value,
    pub file: PathBuf,
    pub pos: Pos,
    /// The site's YAML, to place problems found in its sections.
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 1, backoff: Duration::from_secs(2), max_backoff: Duration::from_secs(60) }
    }
}

/// A string inside `with:` (a value, or a mapping key) that holds `${{ }}`, with where it is.
#[derive(Debug, Clone)]
pub struct Slot {
    pub path: Vec<PathSegment>,
    pub template: Template,
    pub pos: Pos,
    /// The template is the mapping key at `path`, not the value there.
    pub key: bool,
}

/// An action call: `uses` + `with`, with its interpolation slots.
#[derive(Debug, Clone)]
pub struct Call {
    pub uses: String,
    /// Shared by every instance of a fanned step: 500 apps' restores hold one copy.
    pub with: Arc<Value>,
    pub slots: Arc<[Slot]>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub description: String,
    pub call: Call,
    pub needs: Vec<String>,
    /// Steps (among those it needs, directly or not) after which the action's read-only
    /// preparation may begin, before its turn: a restore reads the fenced primary while the
    /// volumes still transfer.
    pub prepare_after: Vec<String>,
    pub condition: Option<(Expr, String)>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub continue_on_error: bool,
    pub undo: Option<Call>,
    /// The gate message when it holds `${{ }}`.
    pub confirm: Option<Template>,
    /// The gate message as written; a step with one asks an operator before it runs.
    pub confirm_text: Option<String>,
    pub lock: Option<String>,
    pub always: bool,
    /// Once this step has begun, `on_failure: rollback` no longer undoes anything: the run
    /// halts and the report says where each site stands (a SnapMirror break, a DNS cutover).
    pub point_of_no_return: bool,
    pub pos: Pos,
    /// Index of this step's node in the file's `steps:` list.
    pub item: usize,
    /// As written: the list this step runs once for each item of.
    pub for_each: Option<ForEach>,
    /// Once loaded: which item of which fanned step this instance runs for.
    pub instance: Option<Instance>,
    /// Runs once its dependencies have ended, whatever their outcome (a tier's end: the next
    /// tier starts after every item of this one has finished, failed or not).
    pub after_any_outcome: bool,
}

/// `for_each:` as written: a list, or an expression that yields one.
#[derive(Debug, Clone)]
pub struct ForEach {
    pub items: Items,
    /// The field of a mapping item that names its instance (`name` unless set).
    pub key: String,
    /// The field of a mapping item that holds its tier: tiers run one after the other.
    pub tier: Option<String>,
    /// The tiers in the order they run, when declared (else the tiers the items name, sorted).
    pub tiers: Option<Items>,
    /// A failed item stops only its own item's steps; the other items go on.
    pub isolate: bool,
    /// The field of each item that names the item of another list it belongs to (a volume's
    /// application): its steps pair with that item's steps, and share its tier.
    pub belongs_to: Option<String>,
    /// Every item's instance runs before the first tier starts (the checks and fences that
    /// must hold for the whole fleet before its first irreversible change).
    pub before_tiers: bool,
    /// Every item's instance runs after the last tier (a clean-up that waits for the whole
    /// fleet); no tier waits for it.
    pub after_tiers: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum Items {
    /// A list written in the runbook.
    Literal(Node),
    /// `${{ params.apps }}`: known once params are.
    Expr(Template, String),
}

impl Items {
    /// The list as written, to tell whether two steps name the same one.
    pub fn text(&self) -> String {
        match self {
            Items::Literal(node) => node.to_json().to_string(),
            Items::Expr(_, text) => text.trim().to_string(),
        }
    }
}

impl Instance {
    /// The instance of fanned step `id` for this one's item (or its owner's), if `id` is
    /// fanned over the same list (or the owner's).
    pub fn pair(&self, id: &str) -> Option<String> {
        match self.pairs.get(id)? {
            Pair::SameItem => Some(crate::fan::instance_id(id, &self.key)),
            Pair::Owner => Some(crate::fan::instance_id(id, &self.owner.as_ref()?.1)),
        }
    }

    /// The unit a failure and a report are about: the item, or the item it belongs to.
    pub fn unit(&self) -> (&str, &str) {
        match &self.owner {
            Some((list, key)) => (list, key),
            None => (&self.list, &self.key),
        }
    }
}

/// Which instance of another fanned step pairs with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// The one for the same item (the two steps fan over the same list).
    SameItem,
    /// The one for the item this one belongs to (`belongs_to`: a volume's application).
    Owner,
}

/// One item's run of a fanned step: its id is `TEMPLATE[KEY]`.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The fanned step's id as written.
    pub of: String,
    pub key: String,
    pub item: Value,
    /// Fanned steps over the same list (or over the list this one's items belong to), by
    /// their id: [`Instance::pair`] names the instance for this item. One map for every
    /// instance of the step (a fleet's 9,500 instances each held its own).
    pub pairs: Arc<BTreeMap<String, Pair>>,
    /// The list the item comes from (`params.apps`): instances of one item share it and the key.
    pub list: String,
    /// The item of another list this one belongs to (`belongs_to`): its list and key.
    pub owner: Option<(String, String)>,
    pub tier: Option<String>,
    /// A failure stops only this item's steps (and rolls back only this item's changes).
    pub isolate: bool,
    /// Runs for every item before the first tier starts (`for_each.before_tiers`).
    pub before_tiers: bool,
    /// Runs for every item after the last tier (`for_each.after_tiers`).
    pub after_tiers: bool,
}

impl Step {
    /// The step id as written (an instance's is its fanned step's).
    pub fn written_id(&self) -> &str {
        self.instance.as_ref().map_or(&self.id, |i| &i.of)
    }

    /// The params this step reads: in `with:`, `if:`, its gate message and its undo.
    pub fn params_read(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut take = |path: &[String]| {
            if path.first().map(String::as_str) == Some("params")
                && let Some(name) = path.get(1)
            {
                out.insert(name.clone());
            }
        };
        let calls = std::iter::once(&self.call).chain(self.undo.as_ref());
        for slot in calls.flat_map(|c| c.slots.iter()) {
            for (path, _) in slot.template.refs() {
                take(path);
            }
        }
        if let Some((cond, _)) = &self.condition {
            cond.refs(&mut |r| take(r));
        }
        for (path, _) in self.confirm.iter().flat_map(|t| t.refs()) {
            take(path);
        }
        // An item's step used the list it came from.
        if let Some(inst) = &self.instance {
            let path: Vec<String> = inst.list.split('.').map(String::from).collect();
            take(&path);
        }
        if let Some(ForEach { items: Items::Expr(t, _), .. }) = &self.for_each {
            for (path, _) in t.refs() {
                take(path);
            }
        }
        out
    }
}

/// The default step timeout: long enough for real storage work, short enough that a
/// forgotten wait on a dead site ends.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
