//! The small expression language of `${{ ... }}` interpolation and `if:` conditions.
//!
//! Deliberately small: references (`params.x`, `steps.ID.outputs.KEY`, `steps.ID.outcome`,
//! `sites.NAME.FIELD`, `run.id`), literals, comparison, `&&`, `||`, `!`, parentheses and five
//! string functions. Parsed at load time so a typo is an error before anything runs.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use drover_api::ValueType;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Ref(Vec<String>),
    Not(Box<Expr>),
    Bin(Box<Expr>, Op, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Contains,
    StartsWith,
    EndsWith,
    /// The text before the first separator (all of it without one): `before('svm_dr1:vol', ':')`.
    Before,
    /// The text after the first separator (empty without one): `after('svm_dr1:vol', ':')`.
    After,
}

/// A parse error at a byte offset of the expression text.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

/// A string with `${{ }}` pieces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// The expression and its byte offset in the string.
    Expr(Expr, usize),
}

impl Template {
    /// None when the string has no `${{`.
    pub fn parse(text: &str) -> Result<Option<Template>, ExprError> {
        if !text.contains("${{") {
            return Ok(None);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let inner_start = start + 3;
            let end = rest[inner_start..]
                .find("}}")
                .ok_or_else(|| ExprError { offset: base + start, message: "`${{` is not closed with `}}`".into() })?;
            let inner = &rest[inner_start..inner_start + end];
            let expr = parse(inner).map_err(|e| ExprError { offset: base + inner_start + e.offset, ..e })?;
            parts.push(Part::Expr(expr, base + inner_start));
            base += inner_start + end + 2;
            rest = &rest[inner_start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Some(Template { parts }))
    }

    /// Every reference in the template.
    pub fn refs(&self) -> Vec<(&[String], usize)> {
        let mut out = Vec::new();
        for part in &self.parts {
            if let Part::Expr(e, offset) = part {
                e.refs(&mut |r| out.push((r, *offset)));
            }
        }
        out
    }

    /// A whole-string expression keeps its type (a number stays a number); otherwise the
    /// pieces are joined as text.
    pub fn render(&self, scope: &dyn Scope) -> Result<Value, String> {
        if let [Part::Expr(e, _)] = self.parts.as_slice() {
            return e.eval(scope);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e, _) => out.push_str(&display(&e.eval(scope)?)),
            }
        }
        Ok(Value::String(out))
    }
}

impl Template {
    /// The type the rendered value will have, known before the run: a whole-string
    /// expression has its expression's type; anything with text around it is a string.
    pub fn static_type(&self, refs: &dyn Fn(&[String]) -> ValueType) -> ValueType {
        match self.parts.as_slice() {
            [Part::Expr(e, _)] => e.static_type(refs),
            _ => ValueType::String,
        }
    }

    /// The expression of a whole-string template, when it is one bare reference.
    pub fn only_ref(&self) -> Option<&[String]> {
        match self.parts.as_slice() {
            [Part::Expr(Expr::Ref(r), _)] => Some(r),
            _ => None,
        }
    }
}

/// Where references are looked up.
pub trait Scope {
    /// The value at `path`, borrowed where it can be: a condition over a fleet's params runs
    /// once per instance and must not copy them.
    fn lookup(&self, path: &[String]) -> Result<Cow<'_, Value>, String>;
}

/// A value as text inside a larger string.
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // `${{ params.namespaces }}` in a sentence reads `shop, payments`.
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(display).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The value at `path` inside `v`: object keys, list indexes, and `*` for every item of a
/// list (`params.apps.*.namespaces`: each application's namespaces, lists joined into one).
/// On a miss, the key that is not there.
pub fn dig<'v, 'p>(v: &'v Value, path: &'p [String]) -> Result<Cow<'v, Value>, &'p str> {
    let Some((key, rest)) = path.split_first() else { return Ok(Cow::Borrowed(v)) };
    match v {
        Value::Array(items) if key == "*" => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match dig(item, rest)?.into_owned() {
                    Value::Array(inner) => out.extend(inner),
                    one => out.push(one),
                }
            }
            Ok(Cow::Owned(Value::Array(out)))
        }
        Value::Object(m) => m.get(key).ok_or(key.as_str()).and_then(|v| dig(v, rest)),
        Value::Array(a) => {
            key.parse::<usize>().ok().and_then(|i| a.get(i)).ok_or(key.as_str()).and_then(|v| dig(v, rest))
        }
        _ => Err(key),
    }
}

impl Expr {
    /// The type of the value, as far as it is known before the run.
    pub fn static_type(&self, refs: &dyn Fn(&[String]) -> ValueType) -> ValueType {
        match self {
            Expr::Lit(v) => ValueType::of(v),
            Expr::Ref(path) => refs(path),
            // `a && b` and `a || b` yield one of their operands.
            Expr::Bin(a, Op::And | Op::Or, b) => {
                let (l, r) = (a.static_type(refs), b.static_type(refs));
                if l == r { l } else { ValueType::Any }
            }
            Expr::Call(Func::Before | Func::After, _) => ValueType::String,
            Expr::Not(_) | Expr::Bin(..) | Expr::Call(..) => ValueType::Bool,
        }
    }

    pub fn refs<'a>(&'a self, f: &mut dyn FnMut(&'a [String])) {
        match self {
            Expr::Lit(_) => {}
            Expr::Ref(r) => f(r),
            Expr::Not(e) => e.refs(f),
            Expr::Bin(a, _, b) => {
                a.refs(f);
                b.refs(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.refs(f)),
        }
    }

    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, String> {
        self.eval_borrowed(scope).map(Cow::into_owned)
    }

    /// Whether the value is truthy, without copying it out of the scope: `if: params.volumes`
    /// holds a fleet's thousand volumes, and each of its 500 instances asked.
    pub fn holds(&self, scope: &dyn Scope) -> Result<bool, String> {
        self.eval_borrowed(scope).map(|v| truthy(&v))
    }

    /// The value, borrowed from the expression or the scope where it can be.
    fn eval_borrowed<'a>(&'a self, scope: &'a dyn Scope) -> Result<Cow<'a, Value>, String> {
        let owned = |v: Value| Ok(Cow::Owned(v));
        match self {
            Expr::Lit(v) => Ok(Cow::Borrowed(v)),
            Expr::Ref(path) => scope.lookup(path),
            Expr::Not(e) => owned(Value::Bool(!truthy(&*e.eval_borrowed(scope)?))),
            Expr::Bin(a, Op::And, b) => {
                let l = a.eval_borrowed(scope)?;
                if !truthy(&l) { Ok(l) } else { b.eval_borrowed(scope) }
            }
            Expr::Bin(a, Op::Or, b) => {
                let l = a.eval_borrowed(scope)?;
                if truthy(&l) { Ok(l) } else { b.eval_borrowed(scope) }
            }
            Expr::Bin(a, op, b) => {
                let (l, r) = (a.eval_borrowed(scope)?, b.eval_borrowed(scope)?);
                owned(Value::Bool(compare(&l, *op, &r)))
            }
            Expr::Call(func, args) => {
                let vals: Vec<Cow<Value>> = args.iter().map(|a| a.eval_borrowed(scope)).collect::<Result<_, _>>()?;
                let (hay, needle) = (&*vals[0], display(&vals[1]));
                match func {
                    Func::Before => {
                        let text = display(hay);
                        return owned(Value::String(
                            text.split_once(&needle).map_or(text.clone(), |(a, _)| a.to_string()),
                        ));
                    }
                    Func::After => {
                        let text = display(hay);
                        return owned(Value::String(
                            text.split_once(&needle).map(|(_, b)| b.to_string()).unwrap_or_default(),
                        ));
                    }
                    _ => {}
                }
                owned(Value::Bool(match func {
                    Func::Contains => match hay {
                        Value::Array(items) => items.iter().any(|i| display(i) == needle),
                        other => display(other).contains(&needle),
                    },
                    Func::StartsWith => display(hay).starts_with(&needle),
                    Func::EndsWith => display(hay).ends_with(&needle),
                    Func::Before | Func::After => unreachable!("string functions return above"),
                }))
            }
        }
    }
}

fn compare(l: &Value, op: Op, r: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().and_then(|a| b.as_f64().and_then(|b| a.partial_cmp(&b))),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        // A param written as text compares with a number the way an operator expects.
        (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok().and_then(|a| a.partial_cmp(&b.as_f64()?)),
        (Value::Number(a), Value::String(b)) => b.parse::<f64>().ok().and_then(|b| a.as_f64()?.partial_cmp(&b)),
        (a, b) if a == b => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Op::And | Op::Or => unreachable!("handled by eval"),
    }
}

/// Parse a bare expression (the inside of `${{ }}` or an `if:`).
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let tokens = lex(text)?;
    let mut p = ExprParser { tokens, at: 0, len: text.len() };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some((tok, off)) => Err(ExprError { offset: off, message: format!("unexpected {tok} in expression") }),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Star,
    Not,
    Op(Op),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Num(n) => write!(f, "{n}"),
            Tok::Dot => f.write_str("`.`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Star => f.write_str("`*`"),
            Tok::Not => f.write_str("`!`"),
            Tok::Op(op) => write!(f, "operator {op:?}"),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset, message: &str| ExprError { offset, message: message.to_string() };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |s: &str| text[i..].starts_with(s);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => Tok::Dot,
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b',' => Tok::Comma,
            b'*' => Tok::Star,
            _ if two("==") => Tok::Op(Op::Eq),
            _ if two("!=") => Tok::Op(Op::Ne),
            _ if two("<=") => Tok::Op(Op::Le),
            _ if two(">=") => Tok::Op(Op::Ge),
            _ if two("&&") => Tok::Op(Op::And),
            _ if two("||") => Tok::Op(Op::Or),
            b'<' => Tok::Op(Op::Lt),
            b'>' => Tok::Op(Op::Gt),
            b'!' => Tok::Not,
            b'\'' | b'"' => {
                let end = text[i + 1..].find(c as char).ok_or_else(|| err(i, "string literal is not closed"))?;
                let s = text[i + 1..i + 1 + end].to_string();
                i += end + 2;
                out.push((Tok::Str(s), start));
                continue;
            }
            b'0'..=b'9' | b'-' => {
                let len = text[i..]
                    .char_indices()
                    .skip(1)
                    .find(|(_, ch)| !(ch.is_ascii_digit() || *ch == '.'))
                    .map(|(n, _)| n)
                    .unwrap_or(text.len() - i);
                let n: f64 = text[i..i + len].parse().map_err(|_| err(i, "invalid number"))?;
                i += len;
                out.push((Tok::Num(n), start));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = text[i..]
                    .char_indices()
                    .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '-'))
                    .map(|(n, _)| n)
                    .unwrap_or(text.len() - i);
                let word = text[i..i + len].to_string();
                i += len;
                out.push((Tok::Ident(word), start));
                continue;
            }
            _ => {
                return Err(err(i, &format!("unexpected character `{}`", &text[i..].chars().next().unwrap_or(' '))));
            }
        };
        i += match tok {
            Tok::Op(Op::Lt | Op::Gt) | Tok::Not => 1,
            Tok::Op(_) => 2,
            _ => 1,
        };
        out.push((tok, start));
    }
    Ok(out)
}

struct ExprParser {
    tokens: Vec<(Tok, usize)>,
    at: usize,
    len: usize,
}

impl ExprParser {
    fn peek(&self) -> Option<(&Tok, usize)> {
        self.tokens.get(self.at).map(|(t, o)| (t, *o))
    }

    fn next(&mut self) -> Option<(Tok, usize)> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: Tok) -> Result<(), ExprError> {
        match self.next() {
            Some((t, _)) if t == want => Ok(()),
            Some((t, off)) => Err(ExprError { offset: off, message: format!("expected {want}, found {t}") }),
            None => Err(ExprError { offset: self.len, message: format!("expected {want} at the end") }),
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and()?;
        while matches!(self.peek(), Some((Tok::Op(Op::Or), _))) {
            self.next();
            e = Expr::Bin(Box::new(e), Op::Or, Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.cmp()?;
        while matches!(self.peek(), Some((Tok::Op(Op::And), _))) {
            self.next();
            e = Expr::Bin(Box::new(e), Op::And, Box::new(self.cmp()?));
        }
        Ok(e)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let l = self.unary()?;
        if let Some((Tok::Op(op), _)) = self.peek() {
            let op = *op;
            if !matches!(op, Op::And | Op::Or) {
                self.next();
                return Ok(Expr::Bin(Box::new(l), op, Box::new(self.unary()?)));
            }
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if matches!(self.peek(), Some((Tok::Not, _))) {
            self.next();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let Some((tok, off)) = self.next() else {
            return Err(ExprError { offset: self.len, message: "expression is empty or ends too early".into() });
        };
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Num(n) => {
                Ok(Expr::Lit(if n.fract() == 0.0 && n.abs() < 9e15 { Value::from(n as i64) } else { Value::from(n) }))
            }
            Tok::LParen => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "contains" | "startsWith" | "endsWith" | "before" | "after" => {
                    let func = match word.as_str() {
                        "contains" => Func::Contains,
                        "startsWith" => Func::StartsWith,
                        "before" => Func::Before,
                        "after" => Func::After,
                        _ => Func::EndsWith,
                    };
                    self.expect(Tok::LParen)?;
                    let a = self.or()?;
                    self.expect(Tok::Comma)?;
                    let b = self.or()?;
                    self.expect(Tok::RParen)?;
                    Ok(Expr::Call(func, vec![a, b]))
                }
                _ => {
                    let mut path = vec![word];
                    loop {
                        match self.peek() {
                            Some((Tok::Dot, _)) => {
                                self.next();
                                match self.next() {
                                    Some((Tok::Ident(w), _)) => path.push(w),
                                    Some((Tok::Num(n), _)) => path.push(n.to_string()),
                                    Some((Tok::Star, _)) => path.push("*".into()),
                                    other => {
                                        let o = other.map(|(_, o)| o).unwrap_or(self.len);
                                        return Err(ExprError {
                                            offset: o,
                                            message: "expected a name after `.`".into(),
                                        });
                                    }
                                }
                            }
                            Some((Tok::LBracket, _)) => {
                                self.next();
                                match self.next() {
                                    Some((Tok::Str(s), _)) => path.push(s),
                                    _ => {
                                        return Err(ExprError {
                                            offset: off,
                                            message: "expected a quoted key in `[...]`".into(),
                                        });
                                    }
                                }
                                self.expect(Tok::RBracket)?;
                            }
                            _ => break,
                        }
                    }
                    Ok(Expr::Ref(path))
                }
            },
            other => Err(ExprError { offset: off, message: format!("unexpected {other} in expression") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct S(Value);
    impl Scope for S {
        fn lookup(&self, path: &[String]) -> Result<Cow<'_, Value>, String> {
            let mut v = &self.0;
            for p in path {
                v = v.get(p).ok_or_else(|| format!("no {}", path.join(".")))?;
            }
            Ok(Cow::Borrowed(v))
        }
    }

    #[test]
    fn a_star_reads_a_field_of_every_item_and_joins_lists() {
        let apps = json!({"apps": [{"name": "orders", "ns": ["o1", "o2"]}, {"name": "wiki", "ns": ["w"]}]});
        let path = |p: &str| match parse(p).unwrap() {
            Expr::Ref(path) => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(dig(&apps, &path("apps.*.name")).map(Cow::into_owned), Ok(json!(["orders", "wiki"])));
        assert_eq!(dig(&apps, &path("apps.*.ns")).map(Cow::into_owned), Ok(json!(["o1", "o2", "w"])));
        assert_eq!(dig(&apps, &["apps".into(), "1".into(), "name".into()]).map(Cow::into_owned), Ok(json!("wiki")));
        assert_eq!(dig(&apps, &path("apps.*.tier")), Err("tier"), "the missing field is named");
        assert_eq!(dig(&json!({"a": "x"}), &path("a.*")), Err("*"), "a star on a string misses");
    }

    fn eval(text: &str, scope: Value) -> Value {
        parse(text).unwrap().eval(&S(scope)).unwrap()
    }

    #[test]
    fn conditions_read_like_the_runbook() {
        let scope = json!({"params": {"mode": "planned", "primary_reachable": false, "n": 3}});
        assert_eq!(eval("params.mode == 'planned'", scope.clone()), json!(true));
        assert_eq!(eval("!params.primary_reachable && params.n >= 3", scope.clone()), json!(true));
        assert_eq!(eval("params.mode != 'planned' || params.n < 2", scope.clone()), json!(false));
        assert_eq!(eval("contains('a,b', 'b') && startsWith(params.mode, 'plan')", scope.clone()), json!(true));
        // An ONTAP path split into its SVM and volume.
        assert_eq!(eval("before('svm_dr1:shop_v1', ':')", scope.clone()), json!("svm_dr1"));
        assert_eq!(eval("after('svm_dr1:shop_v1', ':')", scope.clone()), json!("shop_v1"));
        assert_eq!(eval("before('db_data', ':')", scope.clone()), json!("db_data"));
        assert_eq!(eval("after('db_data', ':')", scope), json!(""));
    }

    #[test]
    fn a_condition_holds_when_its_value_is_truthy() {
        let scope = S(json!({"params": {"mode": "planned", "volumes": [{"path": "svm:v1"}], "none": []}}));
        for (text, holds) in [
            ("params.mode == 'planned' && params.volumes", true),
            ("params.none", false),
            ("!params.volumes", false),
            ("params.none || params.mode", true),
        ] {
            let e = parse(text).unwrap();
            assert_eq!(e.holds(&scope), Ok(holds), "{text}");
            assert_eq!(truthy(&e.eval(&scope).unwrap()), holds, "{text}");
        }
        assert!(parse("params.missing").unwrap().holds(&scope).is_err());
    }

    #[test]
    fn step_ids_with_dashes_are_one_name() {
        let e = parse("steps.flip-dns.outputs.previous").unwrap();
        assert_eq!(e, Expr::Ref(vec!["steps".into(), "flip-dns".into(), "outputs".into(), "previous".into()]));
    }

    #[test]
    fn whole_string_template_keeps_its_type() {
        let t = Template::parse("${{ params.n }}").unwrap().unwrap();
        assert_eq!(t.render(&S(json!({"params": {"n": 3}}))).unwrap(), json!(3));
        let t = Template::parse("v${{ params.n }}-${{ params.s }}").unwrap().unwrap();
        assert_eq!(t.render(&S(json!({"params": {"n": 3, "s": "x"}}))).unwrap(), json!("v3-x"));
    }

    #[test]
    fn errors_have_offsets() {
        let e = Template::parse("abc ${{ params.x == }}").unwrap_err();
        assert!(e.message.contains("ends too early"), "{e:?}");
        let e = Template::parse("abc ${{ params.x").unwrap_err();
        assert_eq!(e.offset, 4);
        let e = parse("params.x $ 3").unwrap_err();
        assert_eq!(e.offset, 9);
    }

    #[test]
    fn no_template_without_marker() {
        assert_eq!(Template::parse("plain").unwrap(), None);
    }
}
