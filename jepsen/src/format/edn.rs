//! Jepsen and Knossos EDN histories, with a small EDN reader of our own.
//!
//! Accepted layouts: a single vector (or list) of event maps, as Knossos test files are
//! written, or one event map per line, as Jepsen writes `history.edn`. Record literals such
//! as `#jepsen.history.Op{...}` and other tagged values are read as the value they tag.
//!
//! An event: `{:type :invoke, :f :cas, :value [1 2], :process 0, :time 123}`:
//! - `:process` a non-negative integer; anything else (`:nemesis`, nil) is a non-client
//!   event and is skipped;
//! - `:type` `:invoke|:ok|:fail|:info`; `:f` `:read|:write|:cas` (anything else is an error);
//! - `:value` nil, an integer, or for `:cas` `[expected new]`;
//! - independent keys (Jepsen's `independent/tuple`): `:value [k v]`, where `v` is the value
//!   above and `k` an integer, string or keyword (keys become strings: `3`, `"a"` and `:a`
//!   become `"3"`, `"a"` and `"a"`). A file is read as independent if its first event whose
//!   value tells (a read/write with a vector value, or a CAS whose value is `[k [e n]]`) says
//!   so; every event must then agree, else the error names the first that does not. A
//!   completion with a nil value inherits its invocation's key;
//! - `:key k` is also accepted, as an explicit key next to a plain value;
//! - `:time` optional non-negative integer nanoseconds; other keys are ignored.
//!
//! Why our own reader: the maintained EDN crates either are deprecated (`edn-rs`) or pull in
//! big-number, date and UUID stacks (`edn-format`) and report no line for a value, which our
//! errors need. Jepsen histories use a small subset of EDN; this reader covers all of EDN's
//! syntax except that it reads ratios, big decimals and characters loosely (they are never
//! valid register values anyway). Nesting is capped at [`MAX_EDN_DEPTH`].

use std::fmt::Write as _;

use super::ParseError;
use crate::history::{Event, EventType, Function, History, Key, ProcessId, Value};

/// Deepest nesting of collections the reader accepts (guards the stack).
pub const MAX_EDN_DEPTH: usize = 64;

/// An EDN value with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Edn,
    /// 1-based line where the value starts.
    pub line: usize,
}

/// An EDN value.
#[derive(Debug, Clone, PartialEq)]
pub enum Edn {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A floating-point number (also ratios and big decimals, approximately).
    Float(f64),
    /// A string.
    Str(String),
    /// A character literal such as `\a`.
    Char(char),
    /// A keyword, without its leading colon.
    Keyword(String),
    /// A symbol.
    Symbol(String),
    /// `( ... )`
    List(Vec<Node>),
    /// `[ ... ]`
    Vector(Vec<Node>),
    /// `{ ... }`, in source order.
    Map(Vec<(Node, Node)>),
    /// `#{ ... }`
    Set(Vec<Node>),
}

/// Reads every top-level EDN value of `input`.
pub fn read_all(input: &str) -> Result<Vec<Node>, ParseError> {
    let mut reader = Reader { bytes: input.as_bytes(), text: input, pos: 0, line: 1 };
    let mut nodes = Vec::new();
    while let Some(node) = reader.read_next(0)? {
        nodes.push(node);
    }
    Ok(nodes)
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(b, b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';')
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError::syntax(self.line, message)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    /// Skips whitespace, commas and comments.
    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || b == b',' {
                self.bump();
            } else if b == b';' {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// Reads the next value at this level; `None` at the end of input. A closing delimiter
    /// is left for the caller.
    fn read_next(&mut self, depth: usize) -> Result<Option<Node>, ParseError> {
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Ok(None),
                Some(b')' | b']' | b'}') => {
                    if depth == 0 {
                        let c = self.peek().map_or(' ', char::from);
                        return Err(self.err(format!("unexpected {c:?}")));
                    }
                    return Ok(None);
                }
                Some(b'#') if self.bytes.get(self.pos + 1) == Some(&b'_') => {
                    self.pos += 2;
                    if self.read_next(depth)?.is_none() {
                        return Err(self.err("#_ discards nothing"));
                    }
                }
                Some(_) => return self.read_value(depth).map(Some),
            }
        }
    }

    fn read_value(&mut self, depth: usize) -> Result<Node, ParseError> {
        if depth >= MAX_EDN_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_EDN_DEPTH} levels")));
        }
        let line = self.line;
        let value = match self.peek() {
            Some(b'(') => Edn::List(self.read_seq(b')', depth)?),
            Some(b'[') => Edn::Vector(self.read_seq(b']', depth)?),
            Some(b'{') => Edn::Map(self.read_map(depth)?),
            Some(b'"') => Edn::Str(self.read_string()?),
            Some(b'\\') => Edn::Char(self.read_char()?),
            Some(b'#') => return self.read_dispatch(depth),
            _ => self.read_atom()?,
        };
        Ok(Node { value, line })
    }

    /// Reads `open items close` (the opening byte is at `pos`).
    fn read_seq(&mut self, close: u8, depth: usize) -> Result<Vec<Node>, ParseError> {
        let start = self.line;
        self.bump();
        let mut items = Vec::new();
        loop {
            match self.read_next(depth + 1)? {
                Some(node) => items.push(node),
                None if self.peek() == Some(close) => {
                    self.bump();
                    return Ok(items);
                }
                None => {
                    return Err(match self.peek() {
                        None => self.err(format!(
                            "unterminated collection opened on line {start}: expected {:?}",
                            char::from(close)
                        )),
                        Some(b) => self.err(format!(
                            "expected {:?} to close the collection opened on line {start}, \
                             found {:?}",
                            char::from(close),
                            char::from(b)
                        )),
                    })
                }
            }
        }
    }

    fn read_map(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, ParseError> {
        let start = self.line;
        let items = self.read_seq(b'}', depth)?;
        if items.len() % 2 != 0 {
            return Err(ParseError::syntax(
                start,
                "a map needs an even number of forms (key value pairs)",
            ));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    fn read_string(&mut self) -> Result<String, ParseError> {
        let start = self.line;
        self.bump();
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(stop) = rest.find(['"', '\\']) else {
                return Err(ParseError::syntax(start, "unterminated string"));
            };
            out.push_str(&rest[..stop]);
            self.line += rest[..stop].matches('\n').count();
            self.pos += stop;
            match self.bump() {
                Some(b'"') => return Ok(out),
                _ => {
                    let escaped = match self.bump() {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'u') => self.read_unicode_escape()?,
                        _ => return Err(self.err("invalid escape in string")),
                    };
                    out.push(escaped);
                }
            }
        }
    }

    fn read_unicode_escape(&mut self) -> Result<char, ParseError> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let code = u32::from_str_radix(hex, 16).map_err(|_| self.err("invalid \\u escape"))?;
        self.pos += 4;
        char::from_u32(code).ok_or_else(|| self.err("invalid \\u code point"))
    }

    fn read_char(&mut self) -> Result<char, ParseError> {
        self.bump();
        let token = self.read_token();
        let mut chars = token.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => match token {
                "newline" => Ok('\n'),
                "space" => Ok(' '),
                "tab" => Ok('\t'),
                "return" => Ok('\r'),
                "formfeed" => Ok('\u{c}'),
                "backspace" => Ok('\u{8}'),
                _ => {
                    if let Some(hex) = token.strip_prefix('u') {
                        let code = u32::from_str_radix(hex, 16)
                            .map_err(|_| self.err(format!("invalid character \\{token}")))?;
                        char::from_u32(code)
                            .ok_or_else(|| self.err(format!("invalid character \\{token}")))
                    } else if token.is_empty() {
                        // A delimiter character itself, such as `\(` or `\ `.
                        let b = self.bump().ok_or_else(|| self.err("truncated character"))?;
                        Ok(char::from(b))
                    } else {
                        Err(self.err(format!("invalid character \\{token}")))
                    }
                }
            },
        }
    }

    /// `#{...}` sets, `#_` handled by the caller, `#tag value` read as the tagged value.
    fn read_dispatch(&mut self, depth: usize) -> Result<Node, ParseError> {
        let line = self.line;
        self.bump();
        if self.peek() == Some(b'{') {
            let items = self.read_seq(b'}', depth)?;
            return Ok(Node { value: Edn::Set(items), line });
        }
        let tag = self.read_token();
        if tag.is_empty() {
            return Err(self.err("# must be followed by {, _ or a tag"));
        }
        match self.read_next(depth + 1)? {
            Some(node) => Ok(Node { value: node.value, line }),
            None => Err(self.err(format!("tag #{tag} has no value"))),
        }
    }

    fn read_token(&mut self) -> &'a str {
        let text: &'a str = self.text;
        let start = self.pos;
        while self.peek().is_some_and(|b| !is_delimiter(b)) {
            self.pos += 1;
        }
        &text[start..self.pos]
    }

    fn read_atom(&mut self) -> Result<Edn, ParseError> {
        let token = self.read_token();
        if token.is_empty() {
            let c = self.peek().map_or(' ', char::from);
            return Err(self.err(format!("unexpected {c:?}")));
        }
        Ok(match token {
            "nil" => Edn::Nil,
            "true" => Edn::Bool(true),
            "false" => Edn::Bool(false),
            t if t.starts_with(':') => Edn::Keyword(t[1..].to_owned()),
            t if starts_number(t) => self.number(t)?,
            t => Edn::Symbol(t.to_owned()),
        })
    }

    fn number(&self, token: &str) -> Result<Edn, ParseError> {
        let digits = token.strip_suffix('N').unwrap_or(token);
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        if digits.bytes().skip(1).all(|b| b.is_ascii_digit()) {
            return digits
                .parse::<i64>()
                .map(Edn::Int)
                .map_err(|_| self.err(format!("integer {token} does not fit in 64 bits")));
        }
        if let Some((n, d)) = digits.split_once('/') {
            let ratio = n.parse::<f64>().ok().zip(d.parse::<f64>().ok());
            return ratio
                .map(|(n, d)| Edn::Float(n / d))
                .ok_or_else(|| self.err(format!("invalid number {token}")));
        }
        let float = token.strip_suffix('M').unwrap_or(token);
        float
            .parse::<f64>()
            .map(Edn::Float)
            .map_err(|_| self.err(format!("invalid number {token}")))
    }
}

fn starts_number(token: &str) -> bool {
    let b = token.as_bytes();
    match b.first() {
        Some(d) if d.is_ascii_digit() => true,
        Some(b'+' | b'-') => b.get(1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// An event read from EDN before its value is interpreted.
struct RawEvent {
    process: ProcessId,
    kind: EventType,
    f: Function,
    value: Node,
    key: Option<Key>,
    time_ns: Option<u64>,
    line: usize,
}

/// Parses a Jepsen / Knossos EDN history; the error names the first bad line.
///
/// One-map-per-line files are converted form by form, so memory stays proportional to the
/// events rather than to the EDN tree.
pub fn parse_edn(input: &str) -> Result<History, ParseError> {
    let mut reader = Reader { bytes: input.as_bytes(), text: input, pos: 0, line: 1 };
    let mut raw = Vec::new();
    let mut push = |node: &Node| -> Result<(), ParseError> {
        if let Some(event) = raw_event(node)? {
            raw.push(event);
        }
        Ok(())
    };
    match reader.read_next(0)? {
        Some(Node { value: Edn::Vector(items) | Edn::List(items), line }) => {
            if let Some(extra) = reader.read_next(0)? {
                return Err(ParseError::syntax(
                    extra.line,
                    format!(
                        "a history is one vector of event maps (line {line}) or one map per \
                         line, not both"
                    ),
                ));
            }
            items.iter().try_for_each(&mut push)?;
        }
        Some(first) => {
            push(&first)?;
            while let Some(node) = reader.read_next(0)? {
                push(&node)?;
            }
        }
        None => {}
    }
    let independent = raw.iter().find_map(independence_evidence).unwrap_or(false);
    let events =
        raw.into_iter().map(|e| interpret(e, independent)).collect::<Result<Vec<_>, _>>()?;
    Ok(History::from_events(events)?)
}

fn keyword_or_string(node: &Node) -> Option<&str> {
    match &node.value {
        Edn::Keyword(s) | Edn::Str(s) => Some(s),
        _ => None,
    }
}

/// Reads the fields of one event map; `None` for a non-client (nemesis) event.
fn raw_event(node: &Node) -> Result<Option<RawEvent>, ParseError> {
    let line = node.line;
    let err = |message: String| ParseError::syntax(line, message);
    let Edn::Map(pairs) = &node.value else {
        return Err(err("expected an event map {:type .. :f .. :process ..}".into()));
    };
    let field = |name: &str| {
        pairs.iter().find(|(k, _)| matches!(&k.value, Edn::Keyword(n) if n == name)).map(|(_, v)| v)
    };
    let process = match field("process").map(|n| &n.value) {
        Some(Edn::Int(p)) => match u64::try_from(*p) {
            Ok(p) => ProcessId(p),
            Err(_) => return Err(err(format!("process must be non-negative, got {p}"))),
        },
        Some(Edn::Keyword(_) | Edn::Nil | Edn::Symbol(_) | Edn::Str(_)) => return Ok(None),
        Some(other) => return Err(err(format!("process must be an integer, got {other:?}"))),
        None => return Err(err("missing :process".into())),
    };
    let kind = match field("type").map(|n| (keyword_or_string(n), n)) {
        Some((Some(name), _)) => EventType::from_name(name).ok_or_else(|| {
            err(format!("unknown :type :{name}: expected :invoke, :ok, :fail or :info"))
        })?,
        Some((None, n)) => return Err(err(format!(":type must be a keyword, got {:?}", n.value))),
        None => return Err(err("missing :type".into())),
    };
    let f = match field("f").map(|n| (keyword_or_string(n), n)) {
        Some((Some(name), _)) => Function::from_name(name)
            .ok_or_else(|| err(format!("unknown :f :{name}: expected :read, :write or :cas")))?,
        Some((None, n)) => return Err(err(format!(":f must be a keyword, got {:?}", n.value))),
        None => return Err(err("missing :f".into())),
    };
    let time_ns = match field("time").map(|n| &n.value) {
        None | Some(Edn::Nil) => None,
        Some(Edn::Int(t)) => Some(
            u64::try_from(*t).map_err(|_| err(format!(":time must be non-negative, got {t}")))?,
        ),
        Some(other) => return Err(err(format!(":time must be an integer, got {other:?}"))),
    };
    let key = match field("key") {
        None => None,
        Some(k) => key_of(k).map_err(err)?,
    };
    let value = field("value").cloned().unwrap_or(Node { value: Edn::Nil, line });
    Ok(Some(RawEvent { process, kind, f, value, key, time_ns, line }))
}

fn key_of(node: &Node) -> Result<Option<Key>, String> {
    match &node.value {
        Edn::Nil => Ok(None),
        Edn::Int(i) => Ok(Some(i.to_string())),
        Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => Ok(Some(s.clone())),
        other => Err(format!("a key must be an integer, string or keyword, got {other:?}")),
    }
}

fn pair(node: &Node) -> Option<(&Node, &Node)> {
    match &node.value {
        Edn::Vector(items) | Edn::List(items) => match items.as_slice() {
            [a, b] => Some((a, b)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether this event's value shows the history is independent (`Some(true)`), plain
/// (`Some(false)`), or cannot tell (`None`).
fn independence_evidence(event: &RawEvent) -> Option<bool> {
    if event.key.is_some() || (event.kind != EventType::Invoke && event.value.value == Edn::Nil) {
        return None;
    }
    match (event.f, pair(&event.value)) {
        (Function::Read | Function::Write, Some(_)) => Some(true),
        (Function::Read | Function::Write, None) => Some(false),
        (Function::Cas, Some((_, v))) => Some(pair(v).is_some()),
        (Function::Cas, None) => None,
    }
}

fn scalar(node: &Node) -> Result<Option<i64>, String> {
    match &node.value {
        Edn::Nil => Ok(None),
        Edn::Int(v) => Ok(Some(*v)),
        other => Err(format!("a register value must be nil or an integer, got {other:?}")),
    }
}

fn plain_value(node: &Node) -> Result<Value, String> {
    if let Some((a, b)) = pair(node) {
        return Ok(Value::Pair(scalar(a)?, scalar(b)?));
    }
    Ok(scalar(node)?.map_or(Value::Nil, Value::Int))
}

/// Builds the event, reading `:value` as `[key value]` when the history is independent.
fn interpret(raw: RawEvent, independent: bool) -> Result<Event, ParseError> {
    let err = |m: String| ParseError::syntax(raw.line, m);
    let (key, value) = if raw.key.is_some() || !independent {
        (raw.key.clone(), plain_value(&raw.value).map_err(err)?)
    } else if raw.kind != EventType::Invoke && raw.value.value == Edn::Nil {
        (None, Value::Nil)
    } else {
        let Some((k, v)) = pair(&raw.value) else {
            return Err(err(format!(
                "expected an independent [key value] tuple like the rest of the history, \
                 got {:?}",
                raw.value.value
            )));
        };
        (key_of(k).map_err(err)?, plain_value(v).map_err(err)?)
    };
    Ok(Event {
        process: raw.process,
        kind: raw.kind,
        f: raw.f,
        key,
        value,
        time_ns: raw.time_ns,
        line: raw.line,
    })
}

fn write_scalar(out: &mut String, v: Option<i64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("nil"),
    }
}

/// Append `s` as an EDN string literal (control characters other than \n, \r, \t
/// become spaces so the output stays one event per line).
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `history` as Jepsen EDN, one map per line. A multi-key history is written with
/// independent tuples (`:value ["k" v]`, keys as strings, every event carrying its
/// operation's key), as Jepsen's independent checker expects.
pub fn write_edn(history: &History) -> String {
    let mut keys: Vec<Option<&str>> = vec![None; history.events().len()];
    for op in history.ops() {
        keys[op.invoke_event] = op.key.as_deref();
        if let Some(c) = op.complete_event {
            keys[c] = op.key.as_deref();
        }
    }
    let independent = history.has_keys();
    let mut out = String::new();
    for (event, key) in history.events().iter().zip(keys) {
        let _ = write!(
            out,
            "{{:process {}, :type :{}, :f :{}, :value ",
            event.process,
            event.kind.name(),
            event.f.name()
        );
        if independent {
            out.push('[');
            match key {
                Some(k) => write_string(&mut out, k),
                None => out.push_str("nil"),
            }
            out.push(' ');
        }
        match event.value {
            Value::Nil => out.push_str("nil"),
            Value::Int(v) => write_scalar(&mut out, Some(v)),
            Value::Pair(a, b) => {
                out.push('[');
                write_scalar(&mut out, a);
                out.push(' ');
                write_scalar(&mut out, b);
                out.push(']');
            }
        }
        if independent {
            out.push(']');
        }
        if let Some(t) = event.time_ns {
            let _ = write!(out, ", :time {t}");
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome};

    fn one(input: &str) -> Edn {
        let mut nodes = read_all(input).expect("valid EDN");
        assert_eq!(nodes.len(), 1, "{input}");
        nodes.remove(0).value
    }

    #[test]
    fn reader_reads_scalars() {
        assert_eq!(one("nil"), Edn::Nil);
        assert_eq!(one("true"), Edn::Bool(true));
        assert_eq!(one("-42"), Edn::Int(-42));
        assert_eq!(one("+7"), Edn::Int(7));
        assert_eq!(one("12N"), Edn::Int(12));
        assert_eq!(one("1.5"), Edn::Float(1.5));
        assert_eq!(one("1/2"), Edn::Float(0.5));
        assert_eq!(one(":jepsen.history/type"), Edn::Keyword("jepsen.history/type".into()));
        assert_eq!(one("foo/bar"), Edn::Symbol("foo/bar".into()));
        assert_eq!(one("-"), Edn::Symbol("-".into()));
        assert_eq!(one(r#""a\"b\n\u0041""#), Edn::Str("a\"b\nA".into()));
        assert_eq!(one(r"\a"), Edn::Char('a'));
        assert_eq!(one(r"\newline"), Edn::Char('\n'));
    }

    #[test]
    fn reader_reads_collections_comments_tags_and_discards() {
        let v = one("[1, (2 3) #{4} {:a 5} ; comment\n #_ 6 #inst \"2024\" #my.Rec{:x 1}]");
        let Edn::Vector(items) = v else { panic!("expected a vector") };
        assert_eq!(items.len(), 6);
        assert_eq!(items[4].value, Edn::Str("2024".into()));
        assert_eq!(items[4].line, 2);
        assert!(matches!(items[5].value, Edn::Map(_)));
    }

    #[test]
    fn reader_rejects_unbalanced_input_with_its_line() {
        let err = read_all("[1 2\n{:a 1}").expect_err("unterminated");
        assert_eq!(err.line(), 2);
        let err = read_all("{:a 1}\n}").expect_err("stray");
        assert_eq!(err.line(), 2);
        let err = read_all("{:a}").expect_err("odd map");
        assert!(err.to_string().contains("even number"), "{err}");
        let err = read_all("99999999999999999999").expect_err("overflow");
        assert!(err.to_string().contains("64 bits"), "{err}");
    }

    #[test]
    fn reader_caps_nesting_depth() {
        let deep = "[".repeat(MAX_EDN_DEPTH + 1) + &"]".repeat(MAX_EDN_DEPTH + 1);
        let err = read_all(&deep).expect_err("too deep");
        assert!(err.to_string().contains("nesting"), "{err}");
    }

    #[test]
    fn knossos_vector_of_maps_parses() {
        let h = parse_edn(
            "[{:process 0, :type :invoke, :f :write, :value 3}\n\
              {:process 1, :type :invoke, :f :cas, :value [3 4]}\n\
              {:process 0, :type :ok, :f :write, :value 3}\n\
              {:process 1, :type :fail, :f :cas, :value [3 4]}]",
        )
        .expect("valid");
        assert_eq!(h.ops().len(), 2);
        assert_eq!(h.ops()[1].outcome, Outcome::Fail);
        assert_eq!(h.events()[2].line, 3);
        assert!(!h.has_keys());
    }

    #[test]
    fn jepsen_one_map_per_line_with_nemesis_and_records_parses() {
        let h = parse_edn(
            "{:type :invoke, :f :read, :value nil, :process 0, :time 10, :index 0}\n\
             {:type :info, :f :start-partition, :value nil, :process :nemesis, :time 11}\n\
             #jepsen.history.Op{:index 2, :time 12, :type :ok, :process 0, :f :read, :value 5}\n\
             {:type :info, :f :stop, :process nil}\n",
        )
        .expect("valid");
        assert_eq!(h.events().len(), 2);
        assert_eq!(h.ops()[0].kind, OpKind::Read { value: Some(5) });
        assert_eq!(h.events()[1].time_ns, Some(12));
    }

    #[test]
    fn independent_tuples_carry_the_key() {
        let h = parse_edn(
            "{:process 0, :type :invoke, :f :cas, :value [:x [1 2]]}\n\
             {:process 1, :type :invoke, :f :read, :value [7 nil]}\n\
             {:process 0, :type :info, :f :cas, :value nil}\n\
             {:process 1, :type :ok, :f :read, :value [7 1]}\n",
        )
        .expect("valid");
        assert_eq!(h.ops()[0].key.as_deref(), Some("x"));
        assert_eq!(h.ops()[1].key.as_deref(), Some("7"));
        assert_eq!(h.ops()[1].kind, OpKind::Read { value: Some(1) });
    }

    #[test]
    fn plain_cas_pair_is_not_mistaken_for_a_tuple() {
        let h = parse_edn(
            "{:process 0, :type :invoke, :f :cas, :value [1 2]}\n\
             {:process 1, :type :invoke, :f :read, :value nil}\n",
        )
        .expect("valid");
        assert!(!h.has_keys());
    }

    #[test]
    fn mixing_tuples_and_plain_values_names_the_line() {
        let err = parse_edn(
            "{:process 0, :type :invoke, :f :write, :value [1 2]}\n\
             {:process 1, :type :invoke, :f :write, :value 2}\n",
        )
        .expect_err("mixed");
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("tuple"), "{err}");
    }

    #[test]
    fn unknown_function_is_rejected_with_its_line() {
        let err = parse_edn(
            "{:process 0, :type :invoke, :f :read, :value nil}\n\
                             {:process 1, :type :invoke, :f :txn, :value [[:r 1 nil]]}",
        )
        .expect_err("txn");
        assert_eq!(err.to_string(), "line 2: unknown :f :txn: expected :read, :write or :cas");
    }

    #[test]
    fn float_value_is_rejected() {
        let err =
            parse_edn("{:process 0, :type :invoke, :f :write, :value 1.5}").expect_err("float");
        assert!(err.to_string().contains("nil or an integer"), "{err}");
    }

    #[test]
    fn written_edn_parses_back_to_the_same_operations() {
        for text in [
            "{:process 0, :type :invoke, :f :write, :value 1, :time 5}\n\
             {:process 1, :type :invoke, :f :cas, :value [nil 2]}\n\
             {:process 0, :type :ok, :f :write, :value 1}\n\
             {:process 1, :type :info, :f :cas, :value [nil 2]}\n",
            "{:process 0, :type :invoke, :f :write, :value [\"a\\\"b\" 1], :time 5}\n\
             {:process 0, :type :ok, :f :write, :value [\"a\\\"b\" 1]}\n\
             {:process 2, :type :invoke, :f :read, :value [\"c\" nil]}\n",
        ] {
            let h = parse_edn(text).expect("valid");
            assert_eq!(write_edn(&h), text);
            assert_eq!(parse_edn(&write_edn(&h)).expect("valid").ops(), h.ops());
        }
    }
}
