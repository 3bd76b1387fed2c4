//! The `?filter=` expression language (a subset of HashiCorp's bexpr).
//!
//! Supported: `Sel == V`, `Sel != V`, `Sel is empty`, `Sel is not empty`,
//! `V in Sel`, `V not in Sel`, `Sel contains V`, `Sel not contains V`,
//! `Sel matches "re"`, `Sel not matches "re"`, combined with `and`, `or`,
//! `not` and parentheses. Values are `"double quoted"`, `` `backticked` `` or
//! bare words/numbers. Selectors are dotted paths (`Service.Meta.env`) with
//! optional `["key"]` indexing (`Service.Meta["env"]`).
//!
//! Expressions are evaluated against the JSON each endpoint returns for one
//! top-level entry, so the selectors are exactly the response's field names.
//! A path that crosses an array (`Checks.Status`) yields every element's
//! value and a comparison matches if any of them does. A selector that does
//! not exist evaluates as empty instead of being rejected (bexpr validates
//! selectors against Go types; the dev server has no such schema).

use std::fmt;

use regex::Regex;
use serde_json::Value;

/// A compiled filter.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    root: Expr,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Matcher),
}

#[derive(Debug, Clone)]
enum Matcher {
    Equal(Vec<String>, String),
    NotEqual(Vec<String>, String),
    Empty(Vec<String>, bool),
    Contains(Vec<String>, String, bool),
    Matches(Vec<String>, Box<Regex>, bool),
}

/// A filter syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Str(String),
    Word(String),
}

fn lex(input: &str) -> Result<Vec<Tok>, FilterError> {
    let mut toks = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                toks.push(Tok::LParen);
            }
            ')' => {
                chars.next();
                toks.push(Tok::RParen);
            }
            '[' => {
                chars.next();
                toks.push(Tok::LBracket);
            }
            ']' => {
                chars.next();
                toks.push(Tok::RBracket);
            }
            '=' | '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(FilterError(format!("unexpected {c:?}: expected {c}=")));
                }
                toks.push(if c == '=' { Tok::Eq } else { Tok::Ne });
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(FilterError("unterminated string".into())),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => return Err(FilterError("unterminated string".into())),
                        },
                        Some(other) => s.push(other),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '`' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(FilterError("unterminated raw string".into())),
                        Some('`') => break,
                        Some(other) => s.push(other),
                    }
                }
                toks.push(Tok::Str(s));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '+') => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '+') {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push(Tok::Word(s));
            }
            other => return Err(FilterError(format!("unexpected character {other:?}"))),
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == word)
    }

    fn peek_word_at(&self, offset: usize, word: &str) -> bool {
        matches!(self.toks.get(self.pos + offset), Some(Tok::Word(w)) if w == word)
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        tok
    }

    fn expect_word(&mut self, word: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(Tok::Word(w)) if w == word => Ok(()),
            other => Err(FilterError(format!(
                "expected {word:?}, found {}",
                describe(other.as_ref())
            ))),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let inner = self.or()?;
            match self.next() {
                Some(Tok::RParen) => return Ok(inner),
                other => {
                    return Err(FilterError(format!(
                        "expected \")\", found {}",
                        describe(other.as_ref())
                    )));
                }
            }
        }
        self.matcher().map(Expr::Match)
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            Some(Tok::Word(w)) if !is_keyword(&w) => Ok(w),
            other => Err(FilterError(format!(
                "expected a value, found {}",
                describe(other.as_ref())
            ))),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = Vec::new();
        match self.next() {
            Some(Tok::Word(w)) if !is_keyword(&w) => push_dotted(&mut path, &w)?,
            other => {
                return Err(FilterError(format!(
                    "expected a selector, found {}",
                    describe(other.as_ref())
                )));
            }
        }
        loop {
            match self.peek() {
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let key = match self.next() {
                        Some(Tok::Str(s)) => s,
                        other => {
                            return Err(FilterError(format!(
                                "expected a quoted key, found {}",
                                describe(other.as_ref())
                            )));
                        }
                    };
                    if self.next() != Some(Tok::RBracket) {
                        return Err(FilterError("expected \"]\"".into()));
                    }
                    path.push(key);
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    let w = w.clone();
                    self.pos += 1;
                    push_dotted(&mut path, &w)?;
                }
                _ => break,
            }
        }
        Ok(path)
    }

    fn matcher(&mut self) -> Result<Matcher, FilterError> {
        // Value-first forms: `V in Sel`, `V not in Sel`.
        let value_first = match self.peek() {
            Some(Tok::Str(_)) => true,
            Some(Tok::Word(w)) if !is_keyword(w) => {
                self.peek_word_at(1, "in")
                    || (self.peek_word_at(1, "not") && self.peek_word_at(2, "in"))
            }
            _ => false,
        };
        if value_first {
            let value = self.value()?;
            let negate = if self.peek_word("not") {
                self.pos += 1;
                true
            } else {
                false
            };
            self.expect_word("in")?;
            let sel = self.selector()?;
            return Ok(Matcher::Contains(sel, value, negate));
        }
        let sel = self.selector()?;
        match self.next() {
            Some(Tok::Eq) => Ok(Matcher::Equal(sel, self.value()?)),
            Some(Tok::Ne) => Ok(Matcher::NotEqual(sel, self.value()?)),
            Some(Tok::Word(w)) if w == "is" => {
                let negate = if self.peek_word("not") {
                    self.pos += 1;
                    true
                } else {
                    false
                };
                self.expect_word("empty")?;
                Ok(Matcher::Empty(sel, !negate))
            }
            Some(Tok::Word(w)) if w == "contains" => {
                Ok(Matcher::Contains(sel, self.value()?, false))
            }
            Some(Tok::Word(w)) if w == "matches" => Ok(Matcher::Matches(sel, self.regex()?, false)),
            Some(Tok::Word(w)) if w == "not" => match self.next() {
                Some(Tok::Word(w)) if w == "contains" => {
                    Ok(Matcher::Contains(sel, self.value()?, true))
                }
                Some(Tok::Word(w)) if w == "matches" => {
                    Ok(Matcher::Matches(sel, self.regex()?, true))
                }
                other => Err(FilterError(format!(
                    "expected \"contains\" or \"matches\" after \"not\", found {}",
                    describe(other.as_ref())
                ))),
            },
            other => Err(FilterError(format!(
                "expected an operator after selector {:?}, found {}",
                sel.join("."),
                describe(other.as_ref())
            ))),
        }
    }

    fn regex(&mut self) -> Result<Box<Regex>, FilterError> {
        let pattern = self.value()?;
        Regex::new(&pattern)
            .map(Box::new)
            .map_err(|e| FilterError(format!("invalid regular expression: {e}")))
    }
}

fn push_dotted(path: &mut Vec<String>, word: &str) -> Result<(), FilterError> {
    let trimmed = word.strip_prefix('.').unwrap_or(word);
    for part in trimmed.split('.') {
        if part.is_empty() {
            return Err(FilterError(format!("invalid selector {word:?}")));
        }
        path.push(part.to_owned());
    }
    Ok(())
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "in" | "is" | "empty" | "contains" | "matches"
    )
}

fn describe(tok: Option<&Tok>) -> String {
    match tok {
        None => "end of expression".into(),
        Some(Tok::LParen) => "\"(\"".into(),
        Some(Tok::RParen) => "\")\"".into(),
        Some(Tok::LBracket) => "\"[\"".into(),
        Some(Tok::RBracket) => "\"]\"".into(),
        Some(Tok::Eq) => "\"==\"".into(),
        Some(Tok::Ne) => "\"!=\"".into(),
        Some(Tok::Str(s)) => format!("string {s:?}"),
        Some(Tok::Word(w)) => format!("{w:?}"),
    }
}

impl Filter {
    /// Compiles an expression; errors describe the first problem.
    pub(crate) fn parse(input: &str) -> Result<Self, FilterError> {
        let toks = lex(input)?;
        if toks.is_empty() {
            return Err(FilterError("empty expression".into()));
        }
        let mut parser = Parser { toks, pos: 0 };
        let root = parser.or()?;
        if parser.pos < parser.toks.len() {
            return Err(FilterError(format!(
                "unexpected {} after a complete expression",
                describe(parser.peek())
            )));
        }
        Ok(Self { root })
    }

    /// Evaluates the filter against one entry.
    pub(crate) fn matches(&self, entry: &Value) -> bool {
        eval(&self.root, entry)
    }
}

fn eval(expr: &Expr, entry: &Value) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, entry) && eval(b, entry),
        Expr::Or(a, b) => eval(a, entry) || eval(b, entry),
        Expr::Not(a) => !eval(a, entry),
        Expr::Match(m) => eval_match(m, entry),
    }
}

fn eval_match(m: &Matcher, entry: &Value) -> bool {
    match m {
        Matcher::Equal(sel, v) => resolve(entry, sel).iter().any(|x| scalar_eq(x, v)),
        Matcher::NotEqual(sel, v) => !resolve(entry, sel).iter().any(|x| scalar_eq(x, v)),
        Matcher::Empty(sel, want_empty) => {
            let empty = resolve(entry, sel).iter().all(|x| is_empty(x));
            empty == *want_empty
        }
        Matcher::Contains(sel, v, negate) => {
            let found = resolve(entry, sel).iter().any(|x| contains(x, v));
            found != *negate
        }
        Matcher::Matches(sel, re, negate) => {
            let found = resolve(entry, sel)
                .iter()
                .any(|x| scalar_text(x).is_some_and(|t| re.is_match(&t)));
            found != *negate
        }
    }
}

/// Follows `path`, fanning out over arrays met before the last segment.
fn resolve<'a>(root: &'a Value, path: &[String]) -> Vec<&'a Value> {
    let mut current = vec![root];
    for seg in path {
        let mut next = Vec::new();
        for value in current {
            match value {
                Value::Object(map) => {
                    if let Some(v) = map.get(seg) {
                        next.push(v);
                    }
                }
                Value::Array(items) => {
                    for item in items {
                        if let Some(v) = item.as_object().and_then(|m| m.get(seg)) {
                            next.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalar_eq(v: &Value, lit: &str) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|i| scalar_eq(i, lit)),
        Value::Null => lit.is_empty(),
        other => scalar_text(other).is_some_and(|t| t == lit),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn contains(v: &Value, lit: &str) -> bool {
    match v {
        Value::Array(items) => items
            .iter()
            .any(|i| scalar_text(i).is_some_and(|t| t == lit)),
        Value::Object(map) => map.contains_key(lit),
        Value::String(s) => s.contains(lit),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "Node": {"Node": "dev", "Address": "127.0.0.1"},
            "Service": {"ID": "web-1", "Service": "web", "Port": 8080,
                        "Tags": ["blue", "v2"], "Meta": {"version": "2", "env": ""}},
            "Checks": [{"Status": "passing"}, {"Status": "critical"}]
        })
    }

    fn check(expr: &str) -> bool {
        Filter::parse(expr).unwrap().matches(&entry())
    }

    #[test]
    fn forms() {
        assert!(check(r#""blue" in Service.Tags"#));
        assert!(check(r#""green" not in Service.Tags"#));
        assert!(check(r#"Service.Meta.version == "2""#));
        assert!(check(r#"Service.Meta["version"] == `2`"#));
        assert!(check("Service.Port == 8080"));
        assert!(check(r#"Service.ID != "web-2""#));
        assert!(check("Service.Meta.env is empty"));
        assert!(check("Service.Meta.missing is empty"));
        assert!(check("Service.Tags is not empty"));
        assert!(check(
            r#"Node.Node == "dev" and Node.Address == "127.0.0.1""#
        ));
        assert!(check(
            r#"not (Service.Service == "api" or "green" in Service.Tags)"#
        ));
        assert!(check(r#"Checks.Status == "critical""#));
        assert!(check(r#"Service.Tags contains "v2""#));
        assert!(check(r#"Service.ID matches "^web-[0-9]+$""#));
        assert!(!check(r#"Service.ID not matches "^web""#));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "Service.ID ==",
            "(Service.ID == \"a\"",
            "Service.ID = \"a\"",
            "\"a\" in",
            "Service.ID == \"a\" extra",
            "and",
            "",
            "Service.ID == \"unterminated",
            "Service.ID matches \"(\"",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
