//! The ordered document tree that every store loads into and emits from.
//!
//! It mirrors the tree sops builds: mappings keep their key order, comments are items of the
//! mapping or sequence they appear in, and scalars carry the type that `go.yaml.in/yaml/v3`
//! resolves (which decides the bytes that enter the MAC).

use std::fmt;

use zeroize::Zeroize;

/// A node of a document.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty plain scalar. Never encrypted, never in the MAC.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Bytes that are not UTF-8 (binary store content).
    Bytes(Vec<u8>),
    /// A timestamp, held in Go's RFC 3339 (nano) text form, e.g. `2024-01-01T00:00:00Z`.
    Time(String),
    /// An ordered mapping.
    Map(Vec<MapItem>),
    /// A sequence; may contain [`Value::Comment`] items.
    Seq(Vec<Value>),
    /// A comment standing as a sequence item (text after `#`).
    Comment(String),
}

/// One item of a mapping: a key/value pair, or a comment line between pairs.
#[derive(Clone, PartialEq)]
pub enum MapItem {
    /// `key: value`.
    Entry(String, Value),
    /// `# text` (text after `#`).
    Comment(String),
}

/// A document is a top-level mapping.
pub type Branch = Vec<MapItem>;

impl Value {
    /// A short name of the node kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "timestamp",
            Value::Map(_) => "mapping",
            Value::Seq(_) => "sequence",
            Value::Comment(_) => "comment",
        }
    }

    /// The value of `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(items) => get(items, key),
            _ => None,
        }
    }

    /// The string content, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The value of `key` in a mapping's items.
pub fn get<'a>(items: &'a [MapItem], key: &str) -> Option<&'a Value> {
    items.iter().find_map(|i| match i {
        MapItem::Entry(k, v) if k == key => Some(v),
        _ => None,
    })
}

/// Removes and returns the value of `key` from a mapping's items.
pub fn remove(items: &mut Branch, key: &str) -> Option<Value> {
    let pos = items
        .iter()
        .position(|i| matches!(i, MapItem::Entry(k, _) if k == key))?;
    match items.remove(pos) {
        MapItem::Entry(_, v) => Some(v),
        MapItem::Comment(_) => None,
    }
}

// Plaintext lives in these trees after decryption: wipe it when they are dropped through
// `Zeroizing<_>`, and never print it.

impl Zeroize for Value {
    fn zeroize(&mut self) {
        match self {
            Value::Str(s) | Value::Time(s) | Value::Comment(s) => s.zeroize(),
            Value::Bytes(b) => b.zeroize(),
            Value::Int(i) => i.zeroize(),
            Value::Float(f) => f.zeroize(),
            Value::Bool(b) => b.zeroize(),
            Value::Map(items) => items.iter_mut().for_each(Zeroize::zeroize),
            Value::Seq(items) => items.iter_mut().for_each(Zeroize::zeroize),
            Value::Null => {}
        }
    }
}

impl Zeroize for MapItem {
    fn zeroize(&mut self) {
        match self {
            MapItem::Entry(k, v) => {
                k.zeroize();
                v.zeroize();
            }
            MapItem::Comment(c) => c.zeroize(),
        }
    }
}

impl fmt::Debug for Value {
    /// Shows the shape of the tree with every scalar redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Map(items) => f.debug_list().entries(items).finish(),
            Value::Seq(items) => f.debug_list().entries(items).finish(),
            Value::Null => f.write_str("null"),
            other => write!(f, "<{}>", other.kind()),
        }
    }
}

impl fmt::Debug for MapItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapItem::Entry(k, v) => write!(f, "{k:?}: {v:?}"),
            MapItem::Comment(_) => f.write_str("#<comment>"),
        }
    }
}

/// A path to a node, for messages: `stringData.password`, `items[2].name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<PathSeg>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathSeg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// The path of the document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Appends a mapping key in place.
    pub fn push_key(&mut self, k: &str) {
        self.0.push(PathSeg::Key(k.to_owned()));
    }

    /// Appends a sequence index in place.
    pub fn push_index(&mut self, i: usize) {
        self.0.push(PathSeg::Index(i));
    }

    /// Removes the last segment.
    pub fn pop(&mut self) {
        self.0.pop();
    }

    /// This path extended by a mapping key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(PathSeg::Key(k.to_owned()));
        p
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(PathSeg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<document root>");
        }
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) if n == 0 => f.write_str(k)?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}
