//! The one place drover parses its own YAML (runbooks, params files, sites files).
//!
//! Every node keeps the line and column it came from, so that any problem found later —
//! an unknown key, a wrong type deep inside an action's parameters, a reference to a missing
//! step — is reported at its exact place. Values convert to JSON (YAML 1.2 core schema) for
//! typed decoding; the tree is kept for locating errors by path.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use drover_api::PathSegment;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string; `quoted` says it was written in quotes or as a block.
    Str {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A syntax error with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parse one YAML document. An empty file is an empty mapping's absence: `Null`.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, true).map_err(|e| SyntaxError { pos: pos(e.marker()), message: e.info().to_string() })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.documents.len() > 1 {
        return Err(SyntaxError {
            pos: builder.documents[1].pos,
            message: "more than one YAML document in this file".into(),
        });
    }
    Ok(builder.documents.pop().unwrap_or(Node { pos: Pos { line: 1, col: 1 }, kind: Kind::Null }))
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos { line: m.line(), col: m.col() + 1 }
}

/// Bounds on what a file may make the parser build: a runbook is a few thousand nodes; a
/// hostile file could nest without end or expand aliases exponentially ("billion laughs").
const MAX_DEPTH: usize = 200;
const MAX_NODES: usize = 1_000_000;

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize)>,
    documents: Vec<Node>,
    /// Anchored nodes and how many nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, aliases counted at their full size.
    nodes: usize,
    error: Option<SyntaxError>,
}

fn size(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Seq(items) => items.iter().map(size).sum(),
        Kind::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some((parent, _)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => {
                    // Keys arrive as entries with a placeholder value, then the value.
                    match entries.last_mut() {
                        Some((_, v)) if v.kind == Kind::Null && v.pos == PENDING => *v = node,
                        _ => entries.push((node, Node { pos: PENDING, kind: Kind::Null })),
                    }
                }
                _ => unreachable!("only collections are pushed on the stack"),
            },
        }
    }
}

const PENDING: Pos = Pos { line: 0, col: 0 };

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let p = pos(&mark);
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.error = Some(SyntaxError {
                pos: p,
                message: format!("the document expands to more than {MAX_NODES} nodes (aliases repeating aliases?)"),
            });
            return;
        }
        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..)) && self.stack.len() >= MAX_DEPTH {
            self.error = Some(SyntaxError { pos: p, message: format!("nested more than {MAX_DEPTH} levels deep") });
            return;
        }
        match ev {
            Event::SequenceStart(anchor, _) => self.stack.push((Node { pos: p, kind: Kind::Seq(vec![]) }, anchor)),
            Event::MappingStart(anchor, _) => self.stack.push((Node { pos: p, kind: Kind::Map(vec![]) }, anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, anchor)) = self.stack.pop() {
                    if let Kind::Map(entries) = &node.kind {
                        let mut seen: HashMap<String, Pos> = HashMap::new();
                        for (k, _) in entries {
                            let key = k.as_key();
                            if let Some(first) = seen.insert(key.clone(), k.pos) {
                                self.error = Some(SyntaxError {
                                    pos: k.pos,
                                    message: format!("duplicate key `{key}` (first at line {})", first.line),
                                });
                                return;
                            }
                        }
                    }
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), size(&node)));
                    }
                    self.push_value(node);
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = Node { pos: p, kind: scalar(value, style, tag.as_ref().map(|t| t.suffix.as_str())) };
                if anchor > 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.push_value(node);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, n)) if self.nodes + n > MAX_NODES => {
                    self.error = Some(SyntaxError {
                        pos: p,
                        message: format!(
                            "the document expands to more than {MAX_NODES} nodes (aliases repeating aliases?)"
                        ),
                    })
                }
                Some((node, n)) => {
                    self.nodes += n;
                    let mut node = node.clone();
                    node.pos = p;
                    self.push_value(node)
                }
                None => self.error = Some(SyntaxError { pos: p, message: "alias to an unknown anchor".into() }),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a scalar.
fn scalar(value: String, style: TScalarStyle, tag: Option<&str>) -> Kind {
    if style != TScalarStyle::Plain || tag == Some("str") {
        return Kind::Str { value, quoted: true };
    }
    match value.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(&value) {
        return Kind::Int(i);
    }
    let looks_numeric = value.trim_start_matches(['-', '+']).starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_numeric && let Ok(f) = value.parse::<f64>() {
        return Kind::Float(f);
    }
    Kind::Str { value, quoted: false }
}

fn parse_int(v: &str) -> Option<i64> {
    if let Some(hex) = v.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = v.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

impl Node {
    /// The key text of a mapping key.
    pub fn as_key(&self) -> String {
        match &self.kind {
            Kind::Str { value, .. } => value.clone(),
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Seq(_) | Kind::Map(_) => "<collection>".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(e) => Some(e),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// The key node (for pointing at a key rather than its value).
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.entries()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k)
    }

    /// What kind of value this is, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str { .. } => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The deepest node along `path` (a key's own node when the path ends on an absent key).
    /// The node at `path`, if every step of it exists.
    pub fn get_path(&self, path: &[PathSegment]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match seg {
                PathSegment::Key(k) => node.get(k)?,
                PathSegment::Index(i) => node.items()?.get(*i)?,
            };
        }
        Some(node)
    }

    pub fn locate(&self, path: &[PathSegment]) -> Pos {
        let mut node = self;
        for seg in path {
            let next = match seg {
                PathSegment::Key(k) => node.get(k).or_else(|| node.key_node(k)),
                PathSegment::Index(i) => node.items().and_then(|items| items.get(*i)),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::Number((*i).into()),
            Kind::Float(f) => Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Kind::Str { value, .. } => Value::String(value.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(k.as_key(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a: 1\nsteps:\n  - id: x\n    uses: log\n").unwrap();
        let step = &doc.get("steps").unwrap().items().unwrap()[0];
        assert_eq!(step.get("uses").unwrap().pos, Pos { line: 4, col: 11 });
        assert_eq!(doc.key_node("steps").unwrap().pos, Pos { line: 2, col: 1 });
    }

    #[test]
    fn core_schema_scalars() {
        let doc = parse("a: 10\nb: '10'\nc: true\nd: ~\ne: 1.5\nf: 5m\ng: -3\nh: 0x1f\n").unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": 10, "b": "10", "c": true, "d": null, "e": 1.5, "f": "5m", "g": -3, "h": 31})
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(doc.get("other").unwrap().to_json(), serde_json::json!({"x": 1}));
    }

    #[test]
    fn locate_follows_paths() {
        let doc = parse("with:\n  a:\n    - 1\n    - {b: 2}\n").unwrap();
        let with = doc.get("with").unwrap();
        let p = with.locate(&[PathSegment::Key("a".into()), PathSegment::Index(1), PathSegment::Key("b".into())]);
        assert_eq!(p, Pos { line: 4, col: 11 });
    }
}
