//! YAML loading and emitting with the semantics sops relies on.
//!
//! * Parsing is done by [`granit_parser`] (a YAML 1.2 parser, the one under `serde-saphyr`), which
//!   also reports comments with a placement hint.
//! * Plain scalars are typed the way `go.yaml.in/yaml/v3` types them, because that decides the
//!   bytes sops feeds into the MAC: `yes`/`on` are strings, `017` is octal, `2024-01-01` is a
//!   timestamp, `1_000` is an int.
//! * Anchors and aliases are expanded into copies; a merge key `<<` stays a literal key (as in
//!   sops). Duplicate keys are rejected.
//! * Input is bounded ([`Limits`]): its size, its nesting depth, and alias expansion, which is
//!   refused by Go `yaml.v3`'s own rule (what sops and the API server parse with) before a
//!   "billion laughs" document can exhaust memory.
//! * Comments become items of the mapping or sequence they stand in; a same-line comment is put
//!   before the item it follows, as sops does.
//! * The emitter writes block style with four-space indentation like sops, quotes every string
//!   that a YAML 1.1 or 1.2 reader could take for something else, and uses literal blocks for
//!   multi-line strings.

use std::collections::HashMap;

use granit_parser::{Event, Parser, Placement, ScalarStyle};

use crate::error::{Error, Result};
use crate::tree::{KeyPath, MapItem, Value};

// ==== loading ====

/// Bounds on what the loader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest document stream, in bytes.
    pub max_bytes: usize,
    /// The deepest nesting of mappings and sequences (aliases expanded).
    pub max_depth: usize,
}

impl Default for Limits {
    /// 16 MiB (the API server takes at most 3 MiB per object) and 200 levels (far beyond any
    /// manifest; the parser's own bound is 255 per style; every recursive walk of a document
    /// stays well within a thread's stack).
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 200,
        }
    }
}

/// yaml.v3's alias budget (`decode.go`, `allowedAliasRatio`): up to 400,000 decoded nodes, 99 %
/// may come from aliases; from 4,000,000 on, 10 %; in between, a straight line.
fn allowed_alias_ratio(decoded: usize) -> f64 {
    const LOW: usize = 400_000;
    const HIGH: usize = 4_000_000;
    if decoded <= LOW {
        0.99
    } else if decoded >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((decoded - LOW) as f64 / (HIGH - LOW) as f64)
    }
}

/// Loads every document of a YAML stream, within the default [`Limits`]. Empty documents are
/// skipped.
pub fn load_documents(text: &str) -> Result<Vec<Value>> {
    load_documents_with(text, Limits::default())
}

/// [`load_documents`] within `limits`.
pub fn load_documents_with(text: &str, limits: Limits) -> Result<Vec<Value>> {
    if text.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            bytes: text.len(),
            limit: limits.max_bytes,
        });
    }
    let mut b = Builder {
        limits,
        ..Builder::default()
    };
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.map_err(|e| Error::Yaml {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.kind().to_string(),
        })?;
        let (line, col) = (span.start.line(), span.start.col());
        b.event(event, line, col)?;
    }
    b.finish()
}

/// Loads a YAML stream whose documents must all be mappings (what sops accepts).
pub fn load_mappings(text: &str) -> Result<Vec<Vec<MapItem>>> {
    load_documents(text)?
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::Map(items) => Ok(items),
            other => Err(Error::Structure {
                path: format!("document {}", i + 1),
                message: format!("top level must be a mapping, found a {}", other.kind()),
            }),
        })
        .collect()
}

struct PendingComment {
    text: String,
    col: usize,
}

enum FrameKind {
    Map {
        items: Vec<MapItem>,
        key: Option<String>,
    },
    Seq {
        items: Vec<Value>,
    },
}

struct Frame {
    kind: FrameKind,
    /// Nodes in the collection so far, itself included.
    nodes: usize,
    /// Levels of collections below it.
    height: usize,
    anchor: usize,
    col: usize,
    block: bool,
    path: KeyPath,
    /// Line on which the newest item started, and where a same-line comment goes.
    last_item: Option<(usize, usize)>,
}

/// An anchored node: its value, how many nodes it has and how deep it nests, so that an
/// alias of it is counted (and refused) before it is copied.
struct Anchored {
    value: Value,
    nodes: usize,
    height: usize,
}

#[derive(Default)]
struct Builder {
    docs: Vec<Value>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    pending: Vec<PendingComment>,
    limits: Limits,
    /// Nodes decoded so far, aliases expanded (yaml.v3's `decodeCount`).
    decoded: usize,
    /// Of those, nodes that came from aliases (yaml.v3's `aliasCount`).
    aliased: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, line: usize, col: usize) -> Result<()> {
        match event {
            Event::Comment(text, placement) => self.comment(text.into_owned(), placement, line, col),
            Event::Scalar(text, style, anchor, tag) => {
                self.decoded += 1;
                if self.expecting_key() {
                    let key = text.into_owned();
                    if anchor != 0 {
                        self.anchor(anchor, Value::Str(key.clone()), 1, 0);
                    }
                    return self.start_entry(key, line);
                }
                self.start_item(line);
                let path = self.child_path();
                let v = resolve_scalar(&text, style, tag.as_deref().map(|t| (t.handle(), t.suffix())))
                    .map_err(|message| Error::Structure {
                        path: path.to_string(),
                        message,
                    })?;
                if anchor != 0 {
                    self.anchor(anchor, v.clone(), 1, 0);
                }
                self.complete(v, 1, 0)
            }
            Event::Alias(id) => {
                let Some(&Anchored { nodes, height, .. }) = self.anchors.get(&id) else {
                    return Err(Error::Structure {
                        path: self.child_path().to_string(),
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                self.expand(nodes, height)?;
                let v = self
                    .anchors
                    .get(&id)
                    .map(|a| a.value.clone())
                    .unwrap_or(Value::Null);
                if self.expecting_key() {
                    return match v {
                        Value::Map(_) | Value::Seq(_) => Err(self.complex_key()),
                        scalar => self.start_entry(scalar_key_text(&scalar), line),
                    };
                }
                self.start_item(line);
                self.complete(v, nodes, height)
            }
            Event::MappingStart(style, anchor, _) | Event::SequenceStart(style, anchor, _) => {
                if self.expecting_key() {
                    return Err(self.complex_key());
                }
                let is_map = matches!(event, Event::MappingStart(..));
                self.start_item(line);
                let path = self.child_path();
                self.decoded += 1;
                if self.stack.len() >= self.limits.max_depth {
                    return Err(Error::Limit {
                        path: path.to_string(),
                        message: format!("nested deeper than {} levels", self.limits.max_depth),
                    });
                }
                let kind = if is_map {
                    FrameKind::Map {
                        items: Vec::new(),
                        key: None,
                    }
                } else {
                    FrameKind::Seq { items: Vec::new() }
                };
                self.stack.push(Frame {
                    kind,
                    nodes: 1,
                    height: 0,
                    anchor,
                    col,
                    block: matches!(style, granit_parser::StructureStyle::Block),
                    path,
                    last_item: None,
                });
                Ok(())
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some(mut frame) = self.stack.pop() else {
                    return Ok(());
                };
                if frame.block {
                    // Comments indented at least as deep as the collection close it.
                    let n = self.pending.iter().take_while(|c| c.col >= frame.col).count();
                    for c in self.pending.drain(..n) {
                        match &mut frame.kind {
                            FrameKind::Map { items, .. } => items.push(MapItem::Comment(c.text)),
                            FrameKind::Seq { items } => items.push(Value::Comment(c.text)),
                        }
                    }
                }
                let v = match frame.kind {
                    FrameKind::Map { items, .. } => Value::Map(items),
                    FrameKind::Seq { items } => Value::Seq(items),
                };
                let (nodes, height) = (frame.nodes, frame.height + 1);
                if frame.anchor != 0 {
                    self.anchor(frame.anchor, v.clone(), nodes, height);
                }
                self.complete(v, nodes, height)
            }
            Event::DocumentStart(..) => {
                // Anchors and the alias budget are per document, as in yaml.v3.
                self.anchors.clear();
                (self.decoded, self.aliased) = (0, 0);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn anchor(&mut self, id: usize, value: Value, nodes: usize, height: usize) {
        self.anchors.insert(id, Anchored { value, nodes, height });
    }

    /// Counts an alias of `nodes` nodes nesting `height` levels, and refuses it when it goes
    /// beyond yaml.v3's alias budget or the depth limit, before anything is copied.
    fn expand(&mut self, nodes: usize, height: usize) -> Result<()> {
        self.decoded = self.decoded.saturating_add(nodes);
        self.aliased = self.aliased.saturating_add(nodes);
        if self.aliased > 100
            && self.decoded > 1000
            && self.aliased as f64 / self.decoded as f64 > allowed_alias_ratio(self.decoded)
        {
            return Err(Error::Limit {
                path: self.child_path().to_string(),
                message: format!(
                    "excessive aliasing: {} of {} nodes come from aliases (refused as Go's yaml.v3 refuses it)",
                    self.aliased, self.decoded
                ),
            });
        }
        if self.stack.len() + height > self.limits.max_depth {
            return Err(Error::Limit {
                path: self.child_path().to_string(),
                message: format!(
                    "nested deeper than {} levels (through an alias)",
                    self.limits.max_depth
                ),
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Value>> {
        if !self.pending.is_empty()
            && let Some(Value::Map(items)) = self.docs.last_mut()
        {
            items.extend(self.pending.drain(..).map(|c| MapItem::Comment(c.text)));
        }
        Ok(self.docs)
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                kind: FrameKind::Map { key: None, .. },
                ..
            })
        )
    }

    fn complex_key(&self) -> Error {
        Error::Structure {
            path: self.child_path().to_string(),
            message: "mapping keys must be scalars".into(),
        }
    }

    fn child_path(&self) -> KeyPath {
        match self.stack.last() {
            None => KeyPath::root(),
            Some(f) => match &f.kind {
                FrameKind::Map { key: Some(k), .. } => f.path.key(k),
                FrameKind::Map { key: None, .. } => f.path.clone(),
                FrameKind::Seq { items } => f.path.index(items.len()),
            },
        }
    }

    fn comment(&mut self, text: String, placement: Placement, line: usize, col: usize) -> Result<()> {
        if placement == Placement::Right
            && let Some(frame) = self.stack.last_mut()
            && let Some((item_line, pos)) = frame.last_item
            && item_line == line
        {
            match &mut frame.kind {
                FrameKind::Map { items, .. } => items.insert(pos, MapItem::Comment(text)),
                FrameKind::Seq { items } => items.insert(pos, Value::Comment(text)),
            }
            frame.last_item = Some((item_line, pos + 1));
            return Ok(());
        }
        self.pending.push(PendingComment { text, col });
        Ok(())
    }

    /// A key starts a new entry: pending comments go before it.
    fn start_entry(&mut self, key: String, line: usize) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let Some(frame) = self.stack.last_mut() else {
            return Ok(());
        };
        let FrameKind::Map { items, key: slot } = &mut frame.kind else {
            return Ok(());
        };
        if items
            .iter()
            .any(|i| matches!(i, MapItem::Entry(k, _) if *k == key))
        {
            return Err(Error::Structure {
                path: frame.path.key(&key).to_string(),
                message: "duplicate key".into(),
            });
        }
        items.extend(pending.into_iter().map(|c| MapItem::Comment(c.text)));
        frame.last_item = Some((line, items.len()));
        *slot = Some(key);
        Ok(())
    }

    /// A node starts: inside a sequence it is a new item and pending comments go before it.
    fn start_item(&mut self, line: usize) {
        if let Some(Frame {
            kind: FrameKind::Seq { items },
            last_item,
            ..
        }) = self.stack.last_mut()
        {
            items.extend(self.pending.drain(..).map(|c| Value::Comment(c.text)));
            *last_item = Some((line, items.len()));
        }
    }

    fn complete(&mut self, v: Value, nodes: usize, height: usize) -> Result<()> {
        if let Some(parent) = self.stack.last_mut() {
            parent.nodes = parent.nodes.saturating_add(nodes);
            parent.height = parent.height.max(height);
        }
        match self.stack.last_mut() {
            None => {
                match v {
                    Value::Null => {}
                    Value::Map(mut items) => {
                        // Comments before the first document belong to it.
                        let lead: Vec<MapItem> =
                            self.pending.drain(..).map(|c| MapItem::Comment(c.text)).collect();
                        if !lead.is_empty() {
                            items.splice(0..0, lead);
                        }
                        self.docs.push(Value::Map(items));
                    }
                    other => self.docs.push(other),
                }
                Ok(())
            }
            Some(frame) => {
                match &mut frame.kind {
                    FrameKind::Map { items, key } => {
                        if let Some(k) = key.take() {
                            items.push(MapItem::Entry(k, v));
                        }
                    }
                    FrameKind::Seq { items } => items.push(v),
                }
                Ok(())
            }
        }
    }
}

fn scalar_key_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float_g(*f),
        Value::Str(s) | Value::Time(s) | Value::Comment(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Map(_) | Value::Seq(_) => String::new(),
    }
}

const CORE: &str = "tag:yaml.org,2002:";

/// Types one scalar as `go.yaml.in/yaml/v3` does.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<(&str, &str)>) -> Result<Value, String> {
    match tag {
        Some((CORE, suffix)) => match suffix {
            "str" => Ok(Value::Str(text.to_owned())),
            "binary" => {
                use base64::Engine;
                let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| "invalid !!binary content".to_string())?;
                Ok(match String::from_utf8(bytes) {
                    Ok(s) => Value::Str(s),
                    Err(e) => Value::Bytes(e.into_bytes()),
                })
            }
            "null" | "bool" | "int" | "float" | "timestamp" => {
                let v = resolve_plain(text)?;
                let ok = matches!(
                    (suffix, &v),
                    ("null", Value::Null)
                        | ("bool", Value::Bool(_))
                        | ("int", Value::Int(_))
                        | ("float", Value::Float(_))
                        | ("timestamp", Value::Time(_))
                );
                match (suffix, v) {
                    (_, v) if ok => Ok(v),
                    ("float", Value::Int(i)) => Ok(Value::Float(i as f64)),
                    _ => Err(format!("cannot decode scalar as !!{suffix}")),
                }
            }
            _ => Ok(Value::Str(text.to_owned())),
        },
        Some(_) => Ok(Value::Str(text.to_owned())),
        None if style == ScalarStyle::Plain => resolve_plain(text),
        None => Ok(Value::Str(text.to_owned())),
    }
}

/// Types a plain scalar per `go.yaml.in/yaml/v3` `resolve()`.
pub fn resolve_plain(s: &str) -> Result<Value, String> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Ok(Value::Float(f64::INFINITY)),
        "-.inf" | "-.Inf" | "-.INF" => return Ok(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Ok(Value::Float(f64::NAN)),
        _ => {}
    }
    let Some(first) = s.chars().next() else {
        return Ok(Value::Null);
    };
    if first == '.' {
        if let Ok(f) = s.parse::<f64>()
            && f.is_finite()
            && float_syntax(&s[1..], true)
        {
            return Ok(Value::Float(f));
        }
        return Ok(Value::Str(s.to_owned()));
    }
    if !(first.is_ascii_digit() || first == '-' || first == '+') {
        return Ok(Value::Str(s.to_owned()));
    }
    if let Some(t) = parse_timestamp(s) {
        return Ok(Value::Time(t));
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    match go_parse_int(&plain) {
        IntParse::Int(i) => return Ok(Value::Int(i)),
        IntParse::Overflow(_) => {
            return Err("integer does not fit in 64 bits (sops cannot encrypt it; quote it)".into());
        }
        IntParse::Invalid => {}
    }
    if is_yaml_style_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && f.is_finite()
    {
        return Ok(Value::Float(f));
    }
    Ok(Value::Str(s.to_owned()))
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
pub(crate) fn is_yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if let Some(rest) = s.strip_prefix('.') {
        return float_syntax(rest, true);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &s[digits..];
    let rest = match rest.strip_prefix('.') {
        Some(r) => &r[r.bytes().take_while(u8::is_ascii_digit).count()..],
        None => rest,
    };
    exponent_ok(rest)
}

/// Digits (at least one if `need_digit`) followed by an optional exponent.
fn float_syntax(s: &str, need_digit: bool) -> bool {
    let d = s.bytes().take_while(u8::is_ascii_digit).count();
    if need_digit && d == 0 {
        return false;
    }
    exponent_ok(&s[d..])
}

fn exponent_ok(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let Some(e) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let e = e.strip_prefix(['-', '+']).unwrap_or(e);
    !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) enum IntParse {
    Int(i64),
    /// Too large for an i64 but a u64 (what Go's `ParseUint` would then return).
    Overflow(u64),
    Invalid,
}

/// Go's `strconv.ParseInt(s, 0, 64)`, with `ParseUint` success reported as overflow.
pub(crate) fn go_parse_int(s: &str) -> IntParse {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        (2, r)
    } else if let Some(r) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        (8, r)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return IntParse::Invalid;
    }
    match u64::from_str_radix(digits, radix) {
        Ok(mag) => {
            if neg {
                if mag <= (i64::MAX as u64) + 1 {
                    IntParse::Int((mag as i128).wrapping_neg() as i64)
                } else {
                    IntParse::Invalid
                }
            } else if mag <= i64::MAX as u64 {
                IntParse::Int(mag as i64)
            } else {
                IntParse::Overflow(mag)
            }
        }
        Err(_) => IntParse::Invalid,
    }
}

/// go-yaml v3 `parseTimestamp`: the four layouts it tries with `time.Parse`, returned in Go's
/// `MarshalText` (RFC 3339 with trimmed nanoseconds) form.
pub fn parse_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let mut p = Cursor { s: b, i: 5 };
    let year: u32 = s[..4].parse().ok()?;
    let month = p.num12()?;
    p.expect(b'-')?;
    let day = p.num12()?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if p.done() {
        return Some(format!("{date}T00:00:00Z"));
    }
    let with_zone = match p.next()? {
        b'T' | b't' => true,
        b' ' => false,
        _ => return None,
    };
    let hour = p.num12()?;
    p.expect(b':')?;
    let min = p.num12()?;
    p.expect(b':')?;
    let sec = p.num12()?;
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut frac = String::new();
    if matches!(p.peek(), Some(b'.' | b',')) && p.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
        p.i += 1;
        while let Some(c) = p.peek().filter(u8::is_ascii_digit) {
            frac.push(c as char);
            p.i += 1;
        }
    }
    frac.truncate(9);
    let frac = frac.trim_end_matches('0');
    let zone = if with_zone {
        match p.next()? {
            b'Z' => "Z".to_string(),
            sign @ (b'+' | b'-') => {
                let rest = p.s.get(p.i..p.i + 5)?;
                if rest[2] != b':' || !rest[..2].iter().chain(&rest[3..]).all(u8::is_ascii_digit) {
                    return None;
                }
                p.i += 5;
                let hh: u32 = std::str::from_utf8(&rest[..2]).ok()?.parse().ok()?;
                let mm: u32 = std::str::from_utf8(&rest[3..]).ok()?.parse().ok()?;
                if hh > 24 || mm > 60 {
                    return None;
                }
                if hh == 0 && mm == 0 {
                    "Z".to_string()
                } else {
                    format!("{}{hh:02}:{mm:02}", sign as char)
                }
            }
            _ => return None,
        }
    } else {
        "Z".to_string()
    };
    if !p.done() {
        return None;
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!("{date}T{hour:02}:{min:02}:{sec:02}{frac}{zone}"))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.i + n).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    fn done(&self) -> bool {
        self.i == self.s.len()
    }
    /// One or two digits (Go layout fields `1`, `2`, `15`, `4`, `5`).
    fn num12(&mut self) -> Option<u32> {
        let a = self.peek().filter(u8::is_ascii_digit)?;
        self.i += 1;
        match self.peek().filter(u8::is_ascii_digit) {
            Some(b) => {
                self.i += 1;
                Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            }
            None => Some(u32::from(a - b'0')),
        }
    }
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

// ==== number formatting ====

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits, never an exponent. This is the
/// byte form sops encrypts and hashes.
pub fn format_float_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which go-yaml uses to emit floats.
pub fn format_float_g(f: f64) -> String {
    if !f.is_finite() {
        return format_float_f(f);
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

// ==== emitting ====

/// Indentation step, as sops writes YAML.
const INDENT: usize = 4;

/// Emits documents as a YAML stream (`---` between documents).
pub fn emit_documents(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match d {
            Value::Map(items) if items.iter().any(|i| matches!(i, MapItem::Entry(..))) => {
                write_map(&mut out, items, 0, false)?
            }
            Value::Map(comments) => {
                // Only comments: keep them, and keep the document a mapping.
                write_map(&mut out, comments, 0, false)?;
                out.push_str("{}\n");
            }
            Value::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0, false)?,
            scalar => {
                write_scalar(&mut out, scalar, 2)?;
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Emits one mapping document.
pub fn emit_mapping(items: &[MapItem]) -> Result<String> {
    emit_documents(std::slice::from_ref(&Value::Map(items.to_vec())))
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, items: &[MapItem], indent: usize, mut inline: bool) -> Result<()> {
    for item in items {
        if !inline {
            pad(out, indent);
        }
        inline = false;
        match item {
            MapItem::Comment(c) => write_comment(out, c),
            MapItem::Entry(k, v) => {
                write_plain_or_quoted(out, k);
                out.push(':');
                write_value_after_indicator(out, v, indent + INDENT, indent)?;
            }
        }
    }
    Ok(())
}

fn write_seq(out: &mut String, items: &[Value], indent: usize, mut inline: bool) -> Result<()> {
    for item in items {
        // Comments that open a nested collection are read back as comments of this sequence
        // (they stand before the item's `-`), so write them there.
        let (lead, rest) = split_leading_comments(item);
        for c in &lead {
            if !inline {
                pad(out, indent);
            }
            inline = false;
            write_comment(out, c);
        }
        if !inline {
            pad(out, indent);
        }
        inline = false;
        match rest.as_ref() {
            Value::Comment(c) => write_comment(out, c),
            v => {
                out.push('-');
                write_value_after_indicator(out, v, indent + 2, indent + 2)?;
            }
        }
    }
    Ok(())
}

fn split_leading_comments(v: &Value) -> (Vec<String>, std::borrow::Cow<'_, Value>) {
    use std::borrow::Cow;
    match v {
        Value::Map(items)
            if matches!(items.first(), Some(MapItem::Comment(_)))
                && items.iter().any(|i| matches!(i, MapItem::Entry(..))) =>
        {
            let n = items
                .iter()
                .take_while(|i| matches!(i, MapItem::Comment(_)))
                .count();
            let lead = items[..n].iter().filter_map(|i| {
                if let MapItem::Comment(c) = i {
                    Some(c.clone())
                } else {
                    None
                }
            });
            (lead.collect(), Cow::Owned(Value::Map(items[n..].to_vec())))
        }
        Value::Seq(items) if items.iter().any(|i| !matches!(i, Value::Comment(_))) => {
            // The first item is written on the same line as this sequence's `-`, so its own
            // leading comments move up too.
            let n = items
                .iter()
                .take_while(|i| matches!(i, Value::Comment(_)))
                .count();
            let mut lead: Vec<String> = items[..n]
                .iter()
                .filter_map(|i| {
                    if let Value::Comment(c) = i {
                        Some(c.clone())
                    } else {
                        None
                    }
                })
                .collect();
            let (inner, first) = split_leading_comments(&items[n]);
            if lead.is_empty() && inner.is_empty() {
                return (Vec::new(), Cow::Borrowed(v));
            }
            lead.extend(inner);
            let mut rest = vec![first.into_owned()];
            rest.extend_from_slice(&items[n + 1..]);
            (lead, Cow::Owned(Value::Seq(rest)))
        }
        other => (Vec::new(), Cow::Borrowed(other)),
    }
}

/// Writes what follows `key:` or `-`. `child` is the indentation of a nested block collection;
/// `inline_col` the column of a collection that starts on the same line (after `- `).
fn write_value_after_indicator(out: &mut String, v: &Value, child: usize, inline_col: usize) -> Result<()> {
    let is_seq_item = child == inline_col;
    // A collection of comments alone has no YAML form: write it empty, comments on the lines after.
    let only_comments = match v {
        Value::Map(items) => !items.is_empty() && items.iter().all(|i| matches!(i, MapItem::Comment(_))),
        Value::Seq(items) => !items.is_empty() && items.iter().all(|i| matches!(i, Value::Comment(_))),
        _ => false,
    };
    if only_comments {
        out.push_str(if matches!(v, Value::Map(_)) {
            " {}\n"
        } else {
            " []\n"
        });
        match v {
            Value::Map(items) => return write_map(out, items, child, false),
            Value::Seq(items) => return write_seq(out, items, child, false),
            _ => {}
        }
    }
    match v {
        Value::Map(items) if !items.is_empty() => {
            if is_seq_item && !matches!(items.first(), Some(MapItem::Comment(_))) {
                out.push(' ');
                write_map(out, items, inline_col, true)
            } else {
                out.push('\n');
                write_map(out, items, child, false)
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            if is_seq_item && !matches!(items.first(), Some(Value::Comment(_))) {
                out.push(' ');
                write_seq(out, items, inline_col, true)
            } else {
                out.push('\n');
                write_seq(out, items, child, false)
            }
        }
        Value::Comment(c) => {
            // Only reachable for a comment used as a value; keep it a string.
            out.push(' ');
            write_string(out, c, child);
            out.push('\n');
            Ok(())
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, child)?;
            out.push('\n');
            Ok(())
        }
    }
}

fn write_comment(out: &mut String, text: &str) {
    out.push('#');
    // A comment cannot span lines or hold characters YAML forbids; real files never have them.
    out.extend(
        text.chars()
            .map(|c| if is_unprintable(c) { '\u{fffd}' } else { c }),
    );
    out.push('\n');
}

fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}')
}

fn write_scalar(out: &mut String, v: &Value, block_indent: usize) -> Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&match *f {
            f if f.is_nan() => ".nan".to_string(),
            f if f == f64::INFINITY => ".inf".to_string(),
            f if f == f64::NEG_INFINITY => "-.inf".to_string(),
            f => format_float_g(f),
        }),
        Value::Time(t) => out.push_str(t),
        Value::Str(s) => write_string(out, s, block_indent),
        Value::Comment(c) => write_string(out, c, block_indent),
        Value::Bytes(_) => {
            return Err(Error::Emit {
                format: "YAML",
                message: "value is not valid UTF-8 (use the binary format)".into(),
            });
        }
        Value::Map(_) => out.push_str("{}"),
        Value::Seq(_) => out.push_str("[]"),
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str, block_indent: usize) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if literal_ok(s) {
        write_literal(out, s, block_indent);
    } else {
        write_double_quoted(out, s);
    }
}

fn write_plain_or_quoted(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        write_double_quoted(out, s);
    }
}

/// YAML 1.1 words that readers such as go-yaml v2 (used by kubectl) take for booleans.
const YAML11_BOOLS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if "-?:,[]{}#&*!|>'\"%@`= \t".contains(first) || s.starts_with("...") {
        return false;
    }
    if s.ends_with([' ', '\t', ':']) || s.contains(": ") || s.contains(" #") || s.contains(":\t") {
        return false;
    }
    if s.chars()
        .any(|c| c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}')
    {
        return false;
    }
    if YAML11_BOOLS.contains(&s) || s == "<<" {
        return false;
    }
    matches!(resolve_plain(s), Ok(Value::Str(_))) && !looks_numeric_11(s)
}

/// Strings a YAML 1.1 reader (go-yaml v2, used by kubectl) would take for numbers, quoted for
/// its sake even where go-yaml v3 reads them as strings: `.5`, `1_000`, `1:20` (base 60).
fn looks_numeric_11(s: &str) -> bool {
    let t: String = s.chars().filter(|&c| c != '_').collect();
    let t = t.strip_prefix(['-', '+']).unwrap_or(&t);
    if !t.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return false;
    }
    let sexagesimal = t.split(':').count() > 1
        && t.split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    sexagesimal || t.parse::<f64>().is_ok() || !matches!(go_parse_int(t), IntParse::Invalid)
}

fn literal_ok(s: &str) -> bool {
    if !s.contains('\n') {
        return false;
    }
    if s.chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}')
    {
        return false;
    }
    let body = s.trim_end_matches('\n');
    let Some(first) = body.split('\n').find(|l| !l.is_empty()) else {
        return false;
    };
    if first.starts_with(' ') {
        return false;
    }
    !body.split('\n').any(|l| l.ends_with(' '))
}

fn write_literal(out: &mut String, s: &str, indent: usize) {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    out.push('|');
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    let body = s.trim_end_matches('\n');
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
    }
    // The final line break is written by the caller; extra ones are kept by `|+`.
    for _ in 1..trailing {
        out.push('\n');
    }
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Value {
        resolve_plain(s).unwrap()
    }

    #[test]
    fn plain_scalars_are_typed_like_go_yaml_v3() {
        assert_eq!(one("yes"), Value::Str("yes".into()));
        assert_eq!(one("True"), Value::Bool(true));
        assert_eq!(one("017"), Value::Int(15));
        assert_eq!(one("0x1F"), Value::Int(31));
        assert_eq!(one("0o17"), Value::Int(15));
        assert_eq!(one("0b101"), Value::Int(5));
        assert_eq!(one("+5"), Value::Int(5));
        assert_eq!(one("1_000"), Value::Int(1000));
        assert_eq!(one("08"), Value::Float(8.0));
        assert_eq!(one("1.50"), Value::Float(1.5));
        assert_eq!(one(".5"), Value::Float(0.5));
        assert_eq!(one("1e3"), Value::Float(1000.0));
        assert_eq!(one("1e400"), Value::Str("1e400".into()));
        assert_eq!(one("~"), Value::Null);
        assert_eq!(one("2024-01-01"), Value::Time("2024-01-01T00:00:00Z".into()));
        assert_eq!(
            one("2024-1-2 3:04:05.50"),
            Value::Time("2024-01-02T03:04:05.5Z".into())
        );
        assert_eq!(
            one("2024-01-02T03:04:05+00:00"),
            Value::Time("2024-01-02T03:04:05Z".into())
        );
        assert_eq!(
            one("2024-01-02T03:04:05-07:00"),
            Value::Time("2024-01-02T03:04:05-07:00".into())
        );
        assert_eq!(one("2024-02-30"), Value::Str("2024-02-30".into()));
        assert!(resolve_plain("18446744073709551615").is_err());
        assert_eq!(one("-9223372036854775808"), Value::Int(i64::MIN));
    }

    #[test]
    fn floats_format_like_go() {
        assert_eq!(format_float_f(1.0), "1");
        assert_eq!(format_float_f(1e21), "1000000000000000000000");
        assert_eq!(format_float_f(f64::INFINITY), "+Inf");
        assert_eq!(format_float_g(1e6), "1e+06");
        assert_eq!(format_float_g(123456.0), "123456");
        assert_eq!(format_float_g(1.5e-7), "1.5e-07");
        assert_eq!(format_float_g(0.0001), "0.0001");
    }

    #[test]
    fn comments_are_placed_like_sops() {
        let docs = load_mappings("# top\na: 1 # right\nb:\n  # head\n  c: 2\n  # foot\nd: [x]\n").unwrap();
        let out = emit_documents(&[Value::Map(docs[0].clone())]).unwrap();
        assert_eq!(
            out,
            "# top\n# right\na: 1\nb:\n    # head\n    c: 2\n    # foot\nd:\n    - x\n"
        );
    }

    #[test]
    fn emitted_strings_reload_identically() {
        for s in [
            "yes",
            "no",
            "on",
            "1",
            "1.0",
            "0x10",
            "null",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "#x",
            "- x",
            "multi\nline\n",
            "multi\nline",
            "two\n\n",
            "\ttab",
            "quote\"",
            "back\\slash",
            "…ünï",
            "2024-01-01",
            "<<",
            "...",
            "---",
            "\u{7}",
            "1_000",
            ".5",
            "\nlead-newline",
            " \n x",
        ] {
            let doc = vec![MapItem::Entry(s.to_string(), Value::Str(s.to_string()))];
            let text = emit_mapping(&doc).unwrap();
            let back = load_mappings(&text).unwrap();
            assert_eq!(back, vec![doc], "round trip of {s:?} via {text:?}");
        }
    }

    #[test]
    fn duplicate_keys_and_complex_keys_are_rejected() {
        assert!(load_mappings("a: 1\na: 2\n").is_err());
        assert!(load_mappings("? [a]\n: 1\n").is_err());
    }

    #[test]
    fn anchors_expand() {
        let docs = load_mappings("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(
            crate::tree::get(&docs[0], "other"),
            crate::tree::get(&docs[0], "base")
        );
    }

    /// The classic "billion laughs": nine aliases of nine aliases of ..., 1 KB of YAML that
    /// expands to 9^9 nodes.
    pub(crate) fn billion_laughs() -> String {
        let mut text =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let refs = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn alias_expansion_is_bounded_like_yaml_v3() {
        let text = billion_laughs();
        assert!(text.len() < 1024, "{} bytes", text.len());
        let started = std::time::Instant::now();
        let e = load_documents(&text).unwrap_err().to_string();
        assert!(e.contains("excessive aliasing"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Ordinary use of anchors is fine: a base merged into many places.
        let mut ok = String::from("base: &base {image: nginx, pull: Always, port: 80}\n");
        for i in 0..200 {
            ok.push_str(&format!("c{i}: *base\n"));
        }
        assert_eq!(load_mappings(&ok).unwrap()[0].len(), 201);
        // The budget is per document.
        let two = format!("{ok}---\n{ok}");
        assert_eq!(load_documents(&two).unwrap().len(), 2);
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let limits = Limits::default();
        assert!(load_documents(&deep(limits.max_depth)).is_ok());
        let e = load_documents(&deep(limits.max_depth + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested deeper than 200 levels"), "{e}");
        // Through an alias: an anchor 150 deep used 100 levels down.
        let via_alias = format!(
            "a: &a {}\nb: {}*a{}\n",
            deep(150),
            "[".repeat(100),
            "]".repeat(100)
        );
        let e = load_documents(&via_alias).unwrap_err().to_string();
        assert!(e.contains("through an alias"), "{e}");
        let small = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let e = load_documents_with("a: 0123456789\n", small)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the document is 14 bytes; at most 10 are read");
    }

    #[test]
    fn the_deepest_document_allowed_is_walked_within_a_small_stack() {
        // Every recursive walk of a tree (JSON, emitting, dropping) at the depth limit, on a
        // thread with half the stack of a tokio worker (2 MiB), in a debug build.
        let n = Limits::default().max_depth;
        let text = format!("{}1{}", "[".repeat(n), "]".repeat(n));
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                let docs = load_documents(&text).unwrap();
                let json = crate::sops::stores::to_json(&docs[0]).unwrap();
                let back = crate::sops::stores::from_json(json.clone());
                let _ = emit_documents(&[back]).unwrap();
                drop(json);
                drop(docs);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
