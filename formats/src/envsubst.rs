//! Flux's `envsubst` (`github.com/fluxcd/pkg/envsubst` v1.7.1, the one kustomize-controller
//! v1.9.6 links; a fork of `drone/envsubst`), ported rune for rune: the same scanner, the same
//! parser (including its quirks: `${var-x}` is a missing brace, `${var:+x}` and `${var:?x}` act
//! as defaults, a NUL byte ends the input), the same functions over the same bytes.
//!
//! Supported forms: `${var}`, `${var:=default}` (`=`, `:-`, `:+`, `:?` alike), `${var:pos}`,
//! `${var:pos:len}`, `${#var}`, `${var#pat}`, `${var##pat}`, `${var%pat}`, `${var%%pat}`,
//! `${var/old/new}`, `${var//old/new}`, `${var/#old/new}`, `${var/%old/new}`, `${var,}`,
//! `${var,,}`, `${var^}`, `${var^^}`; `$var` is left alone and `$$` is one `$`.
//!
//! Written by hand: no crate implements this dialect (the `envsubst`, `subst` and `shellexpand`
//! crates take other syntaxes), and users' files depend on its exact behaviour. Every buffer is
//! zeroized on drop, because values may come from Secrets. One bound is added: functions nest at
//! most [`MAX_NESTING`] deep (Go would recurse further).

use zeroize::Zeroizing;

/// How deep `${a:-${b:-…}}` may nest.
pub const MAX_NESTING: usize = 32;

/// Why a text could not be substituted; the messages are Flux's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstError {
    /// A malformed `${…}`.
    BadSubstitution,
    /// `${var` without `}`, or an operator this dialect does not have (`${var-x}`).
    MissingClosingBrace,
    /// `${}` or `${-…}`: no name.
    ParseVariableName,
    /// A function argument that is not text or a `${…}`.
    ParseFuncSubstitution,
    /// A default (`${var:=…}`) that does not parse.
    ParseDefaultFunction,
    /// Strict mode: a variable used without a default is not set.
    NotSet(String),
    /// Functions nested beyond [`MAX_NESTING`].
    TooDeep,
}

impl std::fmt::Display for SubstError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSubstitution => f.write_str("bad substitution"),
            Self::MissingClosingBrace => f.write_str("missing closing brace"),
            Self::ParseVariableName => f.write_str("unable to parse variable name"),
            Self::ParseFuncSubstitution => f.write_str("unable to parse substitution within function"),
            Self::ParseDefaultFunction => f.write_str("unable to parse default function"),
            Self::NotSet(name) => write!(f, "variable not set (strict mode): {name:?}"),
            Self::TooDeep => write!(f, "substitutions nested more than {MAX_NESTING} deep"),
        }
    }
}

/// Substitutes `input` with `lookup` (`None`: not set). In strict mode a variable that is not
/// set and has no default is an error; otherwise it is empty.
pub fn eval(
    input: &[u8],
    strict: bool,
    lookup: &dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>, SubstError> {
    let nodes = Parser::new(input).parse_any()?;
    let mut out = Zeroizing::new(Vec::with_capacity(input.len()));
    let mapper = |name: &str| match lookup(name) {
        Some(v) => Some(v),
        None if strict => None,
        None => Some(Zeroizing::new(Vec::new())),
    };
    for node in &nodes {
        eval_node(node, &mapper, &mut out)?;
    }
    Ok(out)
}

// ==== the tree ====

enum Node {
    Text(Zeroizing<Vec<u8>>),
    Func {
        param: String,
        name: String,
        args: Vec<Node>,
    },
}

fn eval_node(
    node: &Node,
    mapper: &dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>>,
    out: &mut Vec<u8>,
) -> Result<(), SubstError> {
    match node {
        Node::Text(t) => out.extend_from_slice(t),
        Node::Func { param, name, args } => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                let mut buf = Zeroizing::new(Vec::new());
                eval_node(a, mapper, &mut buf)?;
                values.push(buf);
            }
            let value = match mapper(param) {
                Some(v) => v,
                None if is_default_op(name) => Zeroizing::new(Vec::new()),
                None => return Err(SubstError::NotSet(param.clone())),
            };
            let args: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            out.extend_from_slice(&apply(name, &value, &args));
        }
    }
    Ok(())
}

fn is_default_op(name: &str) -> bool {
    matches!(name, "-" | "+" | "=" | "?" | ":-" | ":+" | ":=" | ":?")
}

fn apply(name: &str, s: &[u8], args: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(match name {
        "," => first_rune(s, char::to_lowercase),
        ",," => map_runes(s, char::to_lowercase),
        "^" => first_rune(s, char::to_uppercase),
        "^^" => map_runes(s, char::to_uppercase),
        "#" if args.is_empty() => s.len().to_string().into_bytes(),
        "#" => trim_prefix(s, args[0], false),
        "##" => trim_prefix(s, args[0], true),
        "%" => trim_suffix(s, args.first().copied(), false),
        "%%" => trim_suffix(s, args.first().copied(), true),
        ":" => substr(s, args),
        "/#" => match args {
            [old, new] if s.starts_with(old) => replace(s, old, new, Some(1)),
            _ => s.to_vec(),
        },
        "/%" => match args {
            [old, new] if s.ends_with(old) => [&s[..s.len() - old.len()], new].concat(),
            _ => s.to_vec(),
        },
        "/" => replace(s, args[0], args.get(1).copied().unwrap_or_default(), Some(1)),
        "//" => replace(s, args[0], args.get(1).copied().unwrap_or_default(), None),
        _ => {
            if s.is_empty() && !args.is_empty() {
                args.concat()
            } else {
                s.to_vec()
            }
        }
    })
}

// ==== Go's string functions, over bytes ====

/// `utf8.DecodeRune`: the rune and its width; `U+FFFD` and 1 for a bad byte, 0 width at the end.
fn decode(b: &[u8]) -> (char, usize) {
    if b.is_empty() {
        return ('\u{fffd}', 0);
    }
    let n = match b[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return ('\u{fffd}', 1),
    };
    match b.get(..n).and_then(|s| std::str::from_utf8(s).ok()) {
        Some(s) => (s.chars().next().unwrap_or('\u{fffd}'), n),
        None => ('\u{fffd}', 1),
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Go's `unicode.ToLower`/`ToUpper` is a one-rune mapping: where Unicode's full mapping is
/// longer, the rune is kept.
fn map_rune<I: Iterator<Item = char>>(c: char, f: fn(char) -> I) -> char {
    let mut it = f(c);
    match (it.next(), it.next()) {
        (Some(m), None) => m,
        _ => c,
    }
}

fn map_runes<I: Iterator<Item = char>>(s: &[u8], f: fn(char) -> I) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let (c, n) = decode(rest);
        if c == '\u{fffd}' && n == 1 {
            out.extend_from_slice("\u{fffd}".as_bytes());
        } else {
            push_char(&mut out, map_rune(c, f));
        }
        rest = &rest[n..];
    }
    out
}

fn first_rune<I: Iterator<Item = char>>(s: &[u8], f: fn(char) -> I) -> Vec<u8> {
    if s.is_empty() {
        return Vec::new();
    }
    let (c, n) = decode(s);
    let mut out = Vec::with_capacity(s.len());
    push_char(&mut out, map_rune(c, f));
    out.extend_from_slice(&s[n..]);
    out
}

/// `strconv.Atoi`.
fn atoi(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn substr(s: &[u8], args: &[&[u8]]) -> Vec<u8> {
    let Some(first) = args.first() else {
        return s.to_vec();
    };
    let len = s.len() as i64;
    let Some(mut pos) = atoi(first) else {
        return s.to_vec();
    };
    if pos < 0 {
        pos = (len + pos).max(0);
    }
    let Some(second) = args.get(1) else {
        return if pos < len {
            s[pos as usize..].to_vec()
        } else {
            Vec::new()
        };
    };
    let Some(length) = atoi(second) else {
        return s.to_vec();
    };
    if length < 0 {
        let end = len + length;
        if end < pos {
            return Vec::new();
        }
        return s[pos as usize..end as usize].to_vec();
    }
    if pos.saturating_add(length) >= len {
        return if pos < len {
            s[pos as usize..].to_vec()
        } else {
            Vec::new()
        };
    }
    s[pos as usize..(pos + length) as usize].to_vec()
}

/// `strings.Replace(s, old, new, n)` (`None`: all).
fn replace(s: &[u8], old: &[u8], new: &[u8], n: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut left = n.unwrap_or(usize::MAX);
    if old.is_empty() {
        // Matches at the start and after each rune.
        if left > 0 {
            out.extend_from_slice(new);
            left -= 1;
        }
        let mut rest = s;
        while !rest.is_empty() {
            let (_, w) = decode(rest);
            out.extend_from_slice(&rest[..w]);
            rest = &rest[w..];
            if left > 0 {
                out.extend_from_slice(new);
                left -= 1;
            }
        }
        return out;
    }
    let mut i = 0;
    while i < s.len() {
        if left > 0 && s[i..].starts_with(old) {
            out.extend_from_slice(new);
            i += old.len();
            left -= 1;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// `[]rune(s)` reversed and back to bytes (bad bytes become `U+FFFD`, as in Go).
fn reverse(s: &[u8]) -> Vec<u8> {
    let mut runes = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (c, n) = decode(rest);
        runes.push(c);
        rest = &rest[n..];
    }
    let mut out = Vec::with_capacity(s.len());
    for c in runes.into_iter().rev() {
        push_char(&mut out, c);
    }
    out
}

fn trim_prefix(s: &[u8], pat: &[u8], longest: bool) -> Vec<u8> {
    let mut shortest: Option<usize> = None;
    for i in 0..s.len() {
        let end = s.len() - i;
        match glob_match(pat, &s[..end]) {
            Err(()) => return s.to_vec(),
            Ok(true) if longest => return s[end..].to_vec(),
            Ok(true) => shortest = Some(end),
            Ok(false) => {}
        }
    }
    match shortest {
        Some(end) => s[end..].to_vec(),
        None => s.to_vec(),
    }
}

fn trim_suffix(s: &[u8], pat: Option<&[u8]>, longest: bool) -> Vec<u8> {
    match pat {
        None => s.to_vec(),
        Some(p) => reverse(&trim_prefix(&reverse(s), &reverse(p), longest)),
    }
}

/// The fork's `path.Match`: a trailing `*` matches the rest, `/` included.
fn glob_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, ()> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(true);
        }
        let (t, ok, err) = match_chunk(chunk, name);
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if err {
            return Err(());
        }
        if star {
            for i in 0..name.len() {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                if err {
                    return Err(());
                }
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Whether `chunk` matches the start of `s`: (rest of `s`, matched, bad pattern).
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> (&'a [u8], bool, bool) {
    while !chunk.is_empty() {
        if s.is_empty() {
            return (s, false, false);
        }
        match chunk[0] {
            b'[' => {
                let (r, n) = decode(s);
                s = &s[n..];
                chunk = &chunk[1..];
                let mut not_negated = true;
                if chunk.first() == Some(&b'^') {
                    not_negated = false;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let Some((lo, rest)) = get_esc(chunk) else {
                        return (s, false, true);
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let Some((h, rest)) = get_esc(&chunk[1..]) else {
                            return (s, false, true);
                        };
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched != not_negated {
                    return (s, false, false);
                }
            }
            b'?' => {
                let (_, n) = decode(s);
                s = &s[n..];
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == b'\\' {
                    chunk = &chunk[1..];
                    match chunk.first() {
                        Some(&c) => c,
                        None => return (s, false, true),
                    }
                } else {
                    c
                };
                if c != s[0] {
                    return (s, false, false);
                }
                s = &s[1..];
                chunk = &chunk[1..];
            }
        }
    }
    (s, true, false)
}

/// A possibly escaped rune of a character class; `None` for a bad pattern (Go's `getEsc`,
/// which also fails when nothing follows the rune).
fn get_esc(mut chunk: &[u8]) -> Option<(char, &[u8])> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return None;
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return None;
        }
    }
    let (r, n) = decode(chunk);
    let rest = &chunk[n..];
    if (r == '\u{fffd}' && n == 1) || rest.is_empty() {
        return None;
    }
    Some((r, rest))
}

// ==== the scanner (`parse/scan.go`) ====

#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Illegal,
    Eof,
    Ident,
    Lbrack,
    Rbrack,
}

const SCAN_IDENT: u8 = 1;
const SCAN_LBRACK: u8 = 2;
const SCAN_RBRACK: u8 = 4;
const SCAN_ESCAPE: u8 = 8;
const DOLLAR: u8 = 1;
const BACKSLASH: u8 = 2;
const ESCAPE_ALL: u8 = DOLLAR | BACKSLASH;

/// The rune Go's scanner treats as the end of the input.
const EOF: char = '\0';

type Accept = fn(char, usize) -> bool;

struct Scanner {
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    start: usize,
    width: usize,
    mode: u8,
    escape_chars: u8,
    accept: Accept,
}

impl Scanner {
    fn read(&mut self) -> char {
        if self.pos >= self.buf.len() {
            self.width = 0;
            return EOF;
        }
        let (r, w) = decode(&self.buf[self.pos..]);
        self.width = w;
        self.pos += w;
        r
    }

    fn unread(&mut self) {
        self.pos -= self.width;
    }

    /// Drops the byte before the position (the first of an escape pair).
    fn skip(&mut self) {
        self.buf.remove(self.pos - 1);
    }

    fn peek(&mut self) -> char {
        let r = self.read();
        self.unread();
        r
    }

    fn text(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.buf[self.start..self.pos].to_vec())
    }

    fn string(&self) -> String {
        String::from_utf8_lossy(&self.buf[self.start..self.pos]).into_owned()
    }

    fn scan(&mut self) -> Token {
        self.start = self.pos;
        let r = self.read();
        if r == EOF {
            Token::Eof
        } else if self.scan_lbrack(r) {
            Token::Lbrack
        } else if self.mode & SCAN_RBRACK != 0 && r == '}' {
            Token::Rbrack
        } else if self.scan_ident(r) {
            Token::Ident
        } else {
            Token::Illegal
        }
    }

    fn scan_ident(&mut self, r: char) -> bool {
        if self.mode & SCAN_IDENT == 0 {
            return false;
        }
        if self.scan_escaped(r) {
            self.skip();
        } else if !(self.accept)(r, self.pos - self.start) {
            return false;
        }
        loop {
            let r = self.read();
            if r == EOF {
                self.unread();
                break;
            }
            if self.scan_lbrack(r) {
                self.unread();
                self.unread();
                break;
            }
            if self.scan_escaped(r) {
                self.skip();
                continue;
            }
            if !(self.accept)(r, self.pos - self.start) {
                self.unread();
                break;
            }
        }
        true
    }

    fn scan_lbrack(&mut self, r: char) -> bool {
        if self.mode & SCAN_LBRACK == 0 {
            return false;
        }
        if r == '$' {
            if self.read() == '{' {
                return true;
            }
            self.unread();
        }
        false
    }

    fn scan_escaped(&mut self, r: char) -> bool {
        if self.mode & SCAN_ESCAPE == 0 {
            return false;
        }
        if r == '$' && self.escape_chars & DOLLAR != 0 && self.peek() == '$' {
            return true;
        }
        r == '\\' && self.escape_chars & BACKSLASH != 0 && matches!(self.peek(), '/' | '\\')
    }
}

fn accept_rune(_: char, _: usize) -> bool {
    true
}
fn accept_ident(r: char, _: usize) -> bool {
    r.is_alphabetic() || r.is_numeric() || r == '_'
}
fn accept_colon(r: char, _: usize) -> bool {
    r == ':'
}
fn accept_one_hash(r: char, i: usize) -> bool {
    r == '#' && i == 1
}
fn accept_not_closing(r: char, _: usize) -> bool {
    r != '}'
}
fn accept_hash_func(r: char, i: usize) -> bool {
    r == '#' && i < 3
}
fn accept_percent_func(r: char, i: usize) -> bool {
    r == '%' && i < 3
}
fn accept_default_func(r: char, i: usize) -> bool {
    (i == 1 && r == ':') || (i == 2 && matches!(r, '=' | '-' | '?' | '+'))
}
fn accept_replace_func(r: char, i: usize) -> bool {
    (i == 1 && r == '/') || (i == 2 && matches!(r, '/' | '#' | '%'))
}
fn accept_one_equal(r: char, i: usize) -> bool {
    i == 1 && r == '='
}
fn accept_one_colon(r: char, i: usize) -> bool {
    i == 1 && r == ':'
}
fn reject_colon_close(r: char, _: usize) -> bool {
    r != ':' && r != '}'
}
fn accept_slash(r: char, _: usize) -> bool {
    r == '/'
}
fn accept_not_slash(r: char, _: usize) -> bool {
    r != '/'
}
fn accept_casing_func(r: char, i: usize) -> bool {
    (r == ',' || r == '^') && i < 3
}

// ==== the parser (`parse/parse.go`) ====

struct Parser {
    s: Scanner,
    depth: usize,
}

impl Parser {
    fn new(input: &[u8]) -> Self {
        Self {
            s: Scanner {
                buf: Zeroizing::new(input.to_vec()),
                pos: 0,
                start: 0,
                width: 0,
                mode: 0,
                escape_chars: 0,
                accept: accept_rune,
            },
            depth: 0,
        }
    }

    /// `parseAny`, as a loop (Go recurses once per token).
    fn parse_any(&mut self) -> Result<Vec<Node>, SubstError> {
        let mut nodes = Vec::new();
        loop {
            self.s.accept = accept_rune;
            self.s.mode = SCAN_IDENT | SCAN_LBRACK | SCAN_ESCAPE;
            self.s.escape_chars = DOLLAR;
            match self.s.scan() {
                Token::Ident => nodes.push(Node::Text(self.s.text())),
                Token::Eof => return Ok(nodes),
                Token::Lbrack => nodes.push(self.parse_func()?),
                _ => return Err(SubstError::BadSubstitution),
            }
        }
    }

    fn parse_func(&mut self) -> Result<Node, SubstError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(SubstError::TooDeep);
        }
        let node = self.parse_func_inner();
        self.depth -= 1;
        node
    }

    fn parse_func_inner(&mut self) -> Result<Node, SubstError> {
        self.s.escape_chars = ESCAPE_ALL;
        if self.s.peek() == '#' {
            return self.parse_len_func();
        }
        self.s.accept = accept_ident;
        self.s.mode = SCAN_IDENT;
        let name = match self.s.scan() {
            Token::Ident => self.s.string(),
            _ => return Err(SubstError::ParseVariableName),
        };
        match self.s.peek() {
            ':' => return self.parse_default_or_substr(name),
            '=' => return self.parse_default_func(name),
            ',' | '^' => return self.parse_casing_func(name),
            '/' => return self.parse_replace_func(name),
            '#' => return self.parse_remove_func(name, accept_hash_func),
            '%' => return self.parse_remove_func(name, accept_percent_func),
            _ => {}
        }
        self.s.accept = accept_ident;
        self.s.mode = SCAN_RBRACK;
        match self.s.scan() {
            Token::Rbrack => Ok(Node::Func {
                param: name,
                name: String::new(),
                args: Vec::new(),
            }),
            _ => Err(SubstError::MissingClosingBrace),
        }
    }

    fn parse_param(&mut self, accept: Accept, mode: u8) -> Result<Node, SubstError> {
        self.s.accept = accept;
        self.s.mode = mode | SCAN_LBRACK;
        match self.s.scan() {
            Token::Lbrack => self.parse_func(),
            Token::Ident | Token::Rbrack => Ok(Node::Text(self.s.text())),
            _ => Err(SubstError::ParseFuncSubstitution),
        }
    }

    /// Scans the operator of a function with `accept`, or fails with `err`.
    fn operator(&mut self, accept: Accept, err: SubstError) -> Result<String, SubstError> {
        self.s.accept = accept;
        self.s.mode = SCAN_IDENT;
        match self.s.scan() {
            Token::Ident => Ok(self.s.string()),
            _ => Err(err),
        }
    }

    fn parse_default_or_substr(&mut self, name: String) -> Result<Node, SubstError> {
        self.s.read();
        let r = self.s.peek();
        self.s.unread();
        match r {
            '=' | '-' | '?' | '+' => self.parse_default_func(name),
            _ => self.parse_substr_func(name),
        }
    }

    fn parse_substr_func(&mut self, param: String) -> Result<Node, SubstError> {
        let name = self.operator(accept_one_colon, SubstError::BadSubstitution)?;
        let mut args = vec![self.parse_param(reject_colon_close, SCAN_IDENT)?];
        self.s.accept = accept_colon;
        self.s.mode = SCAN_IDENT | SCAN_RBRACK;
        match self.s.scan() {
            Token::Rbrack => return Ok(Node::Func { param, name, args }),
            Token::Ident => {}
            _ => return Err(SubstError::BadSubstitution),
        }
        args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_remove_func(&mut self, param: String, accept: Accept) -> Result<Node, SubstError> {
        let name = self.operator(accept, SubstError::BadSubstitution)?;
        let args = vec![self.parse_param(accept_not_closing, SCAN_IDENT)?];
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_replace_func(&mut self, param: String) -> Result<Node, SubstError> {
        let name = self.operator(accept_replace_func, SubstError::BadSubstitution)?;
        let mut args = Vec::with_capacity(2);
        if self.s.peek() == '/' {
            args.push(Node::Text(Zeroizing::new(Vec::new())));
        } else {
            args.push(self.parse_param(accept_not_slash, SCAN_IDENT | SCAN_ESCAPE)?);
        }
        self.operator(accept_slash, SubstError::BadSubstitution)?;
        if self.s.peek() == '}' {
            self.consume_rbrack()?;
            return Ok(Node::Func { param, name, args });
        }
        args.push(self.parse_param(accept_not_closing, SCAN_IDENT | SCAN_ESCAPE)?);
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_default_func(&mut self, param: String) -> Result<Node, SubstError> {
        let accept: Accept = if self.s.peek() == '=' {
            accept_one_equal
        } else {
            accept_default_func
        };
        let name = self.operator(accept, SubstError::ParseDefaultFunction)?;
        let mut args = Vec::new();
        loop {
            if self.s.peek() == '}' {
                self.consume_rbrack()?;
                return Ok(Node::Func { param, name, args });
            }
            args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        }
    }

    fn parse_casing_func(&mut self, param: String) -> Result<Node, SubstError> {
        let name = self.operator(accept_casing_func, SubstError::BadSubstitution)?;
        self.consume_rbrack()?;
        Ok(Node::Func {
            param,
            name,
            args: Vec::new(),
        })
    }

    fn parse_len_func(&mut self) -> Result<Node, SubstError> {
        let name = self.operator(accept_one_hash, SubstError::BadSubstitution)?;
        let param = self.operator(accept_ident, SubstError::BadSubstitution)?;
        self.consume_rbrack()?;
        Ok(Node::Func {
            param,
            name,
            args: Vec::new(),
        })
    }

    fn consume_rbrack(&mut self) -> Result<(), SubstError> {
        self.s.mode = SCAN_RBRACK;
        if self.s.scan() != Token::Rbrack {
            return Err(SubstError::BadSubstitution);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, strict: bool, vars: &[(&str, &str)]) -> Result<String, SubstError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Zeroizing::new(v.clone().into_bytes()))
        };
        eval(input.as_bytes(), strict, &lookup).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The behaviour `fluxcd/pkg/envsubst` v1.7.1 documents in its tests: (variables, input,
    /// output).
    #[test]
    fn flux_behaviour() {
        let var01 = [("var01", "abcdEFGH28ij")];
        let upper = [("var01", "ABCDEFGH28IJ")];
        let path = [("path_name", "/home/bozo/ideas/thoughts.for.today")];
        let z = [("stringZ", "abcABC123ABCabc")];
        let file = [("filename", "bash.string.txt")];
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[], "abcdEFGH28ij", "abcdEFGH28ij"),
            (&var01, "${#var01}", "12"),
            (&var01, "${var01^}", "AbcdEFGH28ij"),
            (&var01, "${var01^^}", "ABCDEFGH28IJ"),
            (&upper, "${var01,}", "aBCDEFGH28IJ"),
            (&upper, "${var01,,}", "abcdefgh28ij"),
            (&path, "${path_name:11}", "ideas/thoughts.for.today"),
            (&path, "${path_name:11:5}", "ideas"),
            (&[("var", "abc")], "${var=xyz}", "abc"),
            (&[], "${var=xyz}", "xyz"),
            (
                &[("default_var", "foo")],
                "something ${var=${default_var}}",
                "something foo",
            ),
            (
                &[("default_var", "foo1")],
                "foo: ${var=${default_var}-suffix}",
                "foo: foo1-suffix",
            ),
            (
                &[("default_var", "foo1")],
                "foo: ${var=prefix${default_var}-suffix}",
                "foo: prefixfoo1-suffix",
            ),
            (&[], "${var:=xyz}", "xyz"),
            (&z, "${stringZ/%abc/XYZ}", "abcABC123ABCXYZ"),
            (&z, "${stringZ/#abc/XYZ}", "XYZABC123ABCabc"),
            (&z, "${stringZ//abc/xyz}", "xyzABC123ABCxyz"),
            (&z, "${stringZ/abc/xyz}", "xyzABC123ABCabc"),
            (&file, "${filename#*.}", "string.txt"),
            (&[("filename", "path/to/file")], "${filename#*/}", "to/file"),
            (&[("filename", "/path/to/file")], "${filename#*/}", "path/to/file"),
            (&file, "${filename##*.}", "txt"),
            (&[("filename", "/path/to/file")], "${filename##*/}", "file"),
            (&file, "${filename%.*}", "bash.string"),
            (&file, "${filename%%.*}", "bash"),
            (&var01, "${var=${var01^^}}", "ABCDEFGH28IJ"),
            (&var01, "$${var01}", "${var01}"),
            (
                &var01,
                "some text ${var01}$${var$${var01}$var01${var01}",
                "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij",
            ),
            (
                &[("default_var", "foo")],
                "something $${var=${default_var}}",
                "something ${var=foo}",
            ),
            (&[("stringZ", "foo/bar")], r"${stringZ/\//-}", "foo-bar"),
            (&[("stringZ", "foo/bar/baz")], r"${stringZ//\//-}", "foo-bar-baz"),
            (
                &[("default_var", "foo")],
                r"\\something ${var=${default_var}}",
                r"\\something foo",
            ),
            (&[("stringZ", "foo.bar")], "${stringZ/./}", "foobar"),
            (&[("v", "ABCDE")], "${v/#/X}", "XABCDE"),
            (&[("v", "abcdef")], "${v:1:-1}", "bcde"),
            (&[("v", "abc")], "${v:-9}", "abc"),
            (&[("v", "abc")], "${v//[a-c]/X}", "abc"),
        ];
        for (vars, input, want) in cases {
            assert_eq!(run(input, false, vars).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn errors_and_strict_mode() {
        assert_eq!(run("${var", false, &[]), Err(SubstError::MissingClosingBrace));
        assert_eq!(run("${var-x}", false, &[]), Err(SubstError::MissingClosingBrace));
        assert_eq!(run("${}", false, &[]), Err(SubstError::ParseVariableName));
        assert_eq!(run("${a#}", false, &[]), Err(SubstError::ParseFuncSubstitution));
        assert_eq!(run("${x}", true, &[]), Err(SubstError::NotSet("x".into())));
        assert_eq!(run("${x^^}", true, &[]), Err(SubstError::NotSet("x".into())));
        assert_eq!(run("${x:=d}", true, &[]).as_deref(), Ok("d"));
        assert_eq!(run("${x:+d}", true, &[]).as_deref(), Ok("d"));
        assert_eq!(run("${x}", false, &[]).as_deref(), Ok(""));
        // An argument is evaluated even when the default is not used.
        assert_eq!(
            run("${a:=${b}}", true, &[("a", "1")]),
            Err(SubstError::NotSet("b".into()))
        );
        let deep = "${a:-".repeat(MAX_NESTING + 1) + &"}".repeat(MAX_NESTING + 1);
        assert_eq!(run(&deep, false, &[]), Err(SubstError::TooDeep));
        // Long inputs do not recurse.
        let long = "${a}x".repeat(100_000);
        assert_eq!(run(&long, false, &[("a", "")]).map(|s| s.len()), Ok(100_000));
    }
}
