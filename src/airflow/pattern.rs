//! Lookup patterns with Python's `re.match(pattern, id, re.IGNORECASE)` semantics.
//!
//! Airflow's `SecretsManagerBackend` only looks up a connection id / variable key / config key when
//! `re.match(lookup_pattern, id, re.IGNORECASE)` returns a match: anchored at the start only (not
//! a full match), case-insensitive, Unicode (`str` patterns). The operator has to decide exactly
//! as Python would, so a pattern goes through three steps here:
//!
//! 1. **Parse it as Python does.** The parser is a port of CPython's `re._parser` (3.11+): the
//!    same tokenizer (with its one-token look-ahead), the same grammar, the same errors and error
//!    positions, the same post-parse checks and the checks `re._compiler` makes (look-behind width,
//!    the template flag). A pattern Python rejects is rejected with Python's own message. The
//!    parser also reproduces the tree rewrites that change what a pattern matches (below).
//! 2. **Refuse what cannot be evaluated exactly.** Look-around, backreferences, conditionals,
//!    atomic groups, possessive quantifiers, `\N{...}` and the `a` / `x` / `t` flags are refused
//!    with an error naming the construct and its position. They are never approximated; the
//!    few known differences that remain are listed below.
//! 3. **Translate to the Rust `regex` crate.** Every character-matching item (literal, class,
//!    `.`, `\w`, ...) becomes an explicit set of code points computed the way Python's engine
//!    decides a match under IGNORECASE; anchors and quantifiers keep their meaning. The result is
//!    compiled as `\A(?:...)`: `\A` gives `re.match`'s start anchoring and `is_match` reports
//!    whether a match starting at 0 exists, which is all `re.match(...) is not None` asks.
//!
//! ## Case-insensitivity is computed here, not by the regex crate
//!
//! Python does not use Unicode case folding. Under IGNORECASE a cased literal `c` matches a
//! character `x` when `lower(x) == lower(c)`, where `lower` is the first character of the full
//! lower-case mapping, extended by a small table of characters that share an upper case (`i`/`ı`,
//! `s`/`ſ`, `µ`/`μ`, ...; `re._casefix`). So `İ` and `ı` match `i`, which Unicode simple case
//! folding (the regex crate's `(?i)`) does not do. A character class is evaluated on `lower(x)`
//! against a set built from the lower-cased members, with CPython's quirks for non-BMP members
//! (`[𐐀x]` does not match `𐐀` in Python, while `[𐐀]` and `𐐀` do). The translated pattern is
//! therefore compiled case-sensitively: adding `(?i)` would re-fold these explicit sets.
//!
//! ## Assumptions and known differences
//!
//! - **Ids contain no newline.** They come from Secrets Manager secret names (ASCII letters,
//!   digits and `/_+=.@-`). Python's `$` (without MULTILINE) also matches before a final `\n`;
//!   here it matches only at the end. Everything else is independent of that assumption.
//! - **`\b` and `\B`** use the regex crate's Unicode word characters (Alphabetic, marks, `Nd`,
//!   `Pc`, joiners), Python's use letters, numbers and `_`. Both agree on ASCII, so on secret
//!   names; they differ only next to combining marks, `No` digits like `²`, circled letters or
//!   connector punctuation other than `_`. (`\w`, `\d` and `\s` themselves are Python's exactly.)
//! - **Unicode data** (case mappings, categories) comes from the Rust standard library and
//!   `regex-syntax`; each Python release ships its own Unicode version, so characters assigned
//!   in between can differ. ASCII never does.
//! - **Global flags must lead the pattern** (Python 3.11+); older Pythons only warned.
//! - **`(?<name>...)` is rejected**, as CPython rejects it: only `(?P<name>...)` names a group.
//! - **`\B` never matches in an empty id**, as in CPython up to 3.13 (3.14 changed it).
//! - **Limits:** patterns over [`MAX_PATTERN_CHARS`] characters, groups nested deeper than
//!   [`MAX_NESTING`], and patterns whose compiled form exceeds the regex size limits are refused.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;
/// Deepest group nesting accepted.
pub const MAX_NESTING: usize = 100;
/// `RegexBuilder::size_limit`: bytes of compiled program one pattern may use.
const REGEX_SIZE_LIMIT: usize = 4 << 20;
/// `RegexBuilder::dfa_size_limit`: bytes of lazy-DFA cache per pattern.
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// `RegexBuilder::nest_limit` for the translated pattern (a Python group becomes at most a few
/// nested Rust constructs).
const REGEX_NEST_LIMIT: u32 = 1000;

/// A lookup pattern with Python `re.match(pattern, id, re.IGNORECASE)` semantics.
#[derive(Debug, Clone)]
pub struct LookupPattern {
    python: String,
    regex: Regex,
    /// Whether the empty id matches: decided apart, since CPython never matches `\B` there.
    empty_id_matches: bool,
}

impl LookupPattern {
    /// Parses `python_pattern` as Python's `re` module would and translates it. Fails when
    /// Python rejects the pattern, or when it uses a construct that cannot be evaluated exactly.
    pub fn new(python_pattern: &str) -> Result<Self, PatternError> {
        let length = python_pattern.chars().count();
        if length > MAX_PATTERN_CHARS {
            return Err(PatternError::new(
                python_pattern,
                PatternErrorKind::TooLarge,
                None,
                format!(
                    "it is {length} characters long; at most {MAX_PATTERN_CHARS} are supported"
                ),
            ));
        }
        let parsed = parse(python_pattern).map_err(|failure| match failure {
            Failure::Python { msg, pos } => {
                PatternError::new(python_pattern, PatternErrorKind::RejectedByPython, pos, msg)
            }
            Failure::Limit { what, pos } => {
                PatternError::new(python_pattern, PatternErrorKind::TooLarge, pos, what)
            }
        })?;
        if let Some(unsupported) = parsed.unsupported {
            return Err(PatternError::new(
                python_pattern,
                PatternErrorKind::Unsupported,
                Some(unsupported.pos),
                unsupported.construct,
            ));
        }
        let compile = |for_empty_input: bool| {
            let mut body = String::new();
            let flags = if for_empty_input {
                parsed.flags | EMIT_FOR_EMPTY_INPUT
            } else {
                parsed.flags
            };
            emit_seq(&parsed.nodes, flags, &mut body);
            compile_translation(python_pattern, &format!(r"\A(?:{body})"))
        };
        let regex = compile(false)?;
        // CPython (up to 3.13) never matches `\B` in an empty string; elsewhere `\B` is the
        // regex crate's. Decide the empty id once, with `\B` matching nothing.
        let empty_id_matches = if contains_non_boundary(&parsed.nodes) {
            compile(true)?.is_match("")
        } else {
            regex.is_match("")
        };
        Ok(Self {
            python: python_pattern.to_string(),
            regex,
            empty_id_matches,
        })
    }

    /// True when Python's `re.match(pattern, id, re.IGNORECASE)` would return a match.
    pub fn matches(&self, id: &str) -> bool {
        if id.is_empty() {
            return self.empty_id_matches;
        }
        self.regex.is_match(id)
    }

    /// The original (Python) pattern.
    pub fn as_python(&self) -> &str {
        &self.python
    }
}

/// Compiles a translated pattern with this module's limits.
fn compile_translation(python_pattern: &str, translated: &str) -> Result<Regex, PatternError> {
    RegexBuilder::new(translated)
        .unicode(true)
        .case_insensitive(false)
        .multi_line(false)
        .dot_matches_new_line(false)
        .crlf(false)
        .ignore_whitespace(false)
        .octal(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| {
            let detail = match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "its compiled form exceeds the limit of {} MiB (large counted repetitions such as `{{1000}}` of wide classes such as `\\w` or `.` grow it)",
                    limit >> 20
                ),
                other => format!("its translation could not be compiled: {other}"),
            };
            PatternError::new(python_pattern, PatternErrorKind::TooLarge, None, detail)
        })
}

/// Whether `\B` occurs anywhere in a (translatable) tree.
fn contains_non_boundary(nodes: &[Node]) -> bool {
    nodes.iter().any(|node| match node {
        Node::At(At::NonBoundary) => true,
        Node::Repeat { item: body, .. }
        | Node::Subpattern { body, .. }
        | Node::Atomic(body)
        | Node::Assert { body, .. } => contains_non_boundary(body),
        Node::Branch(items) => items.iter().any(|item| contains_non_boundary(item)),
        Node::GroupRefExists { yes, no } => {
            contains_non_boundary(yes) || no.as_deref().is_some_and(contains_non_boundary)
        }
        _ => false,
    })
}

/// Why a lookup pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// Python's `re` module itself rejects the pattern (Airflow would fail on it too).
    RejectedByPython,
    /// Python accepts the construct, but it cannot be evaluated exactly here.
    Unsupported,
    /// The pattern exceeds a size limit (length, nesting, compiled size).
    TooLarge,
}

/// A refused lookup pattern: a message a user understands, naming the construct and its position
/// (in characters from the start of the pattern, counted as Python counts them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    kind: PatternErrorKind,
    position: Option<usize>,
    message: String,
}

impl PatternError {
    fn new(pattern: &str, kind: PatternErrorKind, position: Option<usize>, detail: String) -> Self {
        let shown: String = if pattern.chars().count() > 80 {
            pattern.chars().take(77).chain("...".chars()).collect()
        } else {
            pattern.to_string()
        };
        let at = position
            .map(|p| format!(" at position {p}"))
            .unwrap_or_default();
        let message = match kind {
            PatternErrorKind::RejectedByPython => format!(
                "invalid lookup pattern `{shown}`: Python's re module rejects it: {detail}{at}"
            ),
            PatternErrorKind::Unsupported => format!(
                "unsupported lookup pattern `{shown}`: {detail}{at} cannot be evaluated exactly as Python would; rewrite the pattern without it"
            ),
            PatternErrorKind::TooLarge => {
                format!("lookup pattern `{shown}` is too large: {detail}{at}")
            }
        };
        Self {
            kind,
            position,
            message,
        }
    }

    /// What kind of refusal this is.
    pub fn kind(&self) -> PatternErrorKind {
        self.kind
    }

    /// Character position in the pattern the error refers to, when there is one.
    pub fn position(&self) -> Option<usize> {
        self.position
    }
}

// ---------------------------------------------------------------------------------------------
// Python's parse tree (re._parser's SubPattern items), reduced to what matching needs.
// ---------------------------------------------------------------------------------------------

/// `MAXREPEAT` of CPython's `_sre` (an unbounded repeat has this maximum).
const MAXREPEAT: u64 = 4_294_967_295;
/// `MAXGROUPS` of CPython's `_sre` on 64-bit platforms.
const MAXGROUPS: u64 = 1_073_741_823;
/// `re._parser.MAXWIDTH`.
const MAXWIDTH: u128 = 1 << 64;
/// `re._compiler.MAXCODE` (4-byte codes).
const MAXCODE: u128 = (1 << 32) - 1;

// Flag bits, as in re._constants.
const FLAG_TEMPLATE: u32 = 1;
const FLAG_IGNORECASE: u32 = 2;
const FLAG_LOCALE: u32 = 4;
const FLAG_MULTILINE: u32 = 8;
const FLAG_DOTALL: u32 = 16;
const FLAG_UNICODE: u32 = 32;
const FLAG_VERBOSE: u32 = 64;
const FLAG_DEBUG: u32 = 128;
const FLAG_ASCII: u32 = 256;
const TYPE_FLAGS: u32 = FLAG_ASCII | FLAG_LOCALE | FLAG_UNICODE;
const GLOBAL_FLAGS: u32 = FLAG_DEBUG | FLAG_TEMPLATE;
/// Not a Python flag: tells the translation it is for the empty id (`\B` never matches).
const EMIT_FOR_EMPTY_INPUT: u32 = 1 << 30;

fn flag_bit(c: char) -> Option<u32> {
    Some(match c {
        'i' => FLAG_IGNORECASE,
        'L' => FLAG_LOCALE,
        'm' => FLAG_MULTILINE,
        's' => FLAG_DOTALL,
        'x' => FLAG_VERBOSE,
        'a' => FLAG_ASCII,
        't' => FLAG_TEMPLATE,
        'u' => FLAG_UNICODE,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Category {
    Digit,
    NotDigit,
    Space,
    NotSpace,
    Word,
    NotWord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SetItem {
    Negate,
    Literal(u32),
    Range(u32, u32),
    Category(Category),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// `^`
    Beginning,
    /// `\A`
    BeginningString,
    /// `\b`
    Boundary,
    /// `\B`
    NonBoundary,
    /// `$`
    End,
    /// `\Z`
    EndString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepeatKind {
    Greedy,
    Lazy,
    Possessive,
}

impl RepeatKind {
    fn python_name(self) -> &'static str {
        match self {
            RepeatKind::Greedy => "MAX_REPEAT",
            RepeatKind::Lazy => "MIN_REPEAT",
            RepeatKind::Possessive => "POSSESSIVE_REPEAT",
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Literal(u32),
    NotLiteral(u32),
    /// A character set; a leading [`SetItem::Negate`] negates it.
    In(Vec<SetItem>),
    Any,
    At(At),
    Repeat {
        kind: RepeatKind,
        min: u64,
        /// [`MAXREPEAT`] means unbounded.
        max: u64,
        item: Vec<Node>,
    },
    Subpattern {
        group: Option<usize>,
        add_flags: u32,
        del_flags: u32,
        body: Vec<Node>,
    },
    Atomic(Vec<Node>),
    Branch(Vec<Vec<Node>>),
    Assert {
        behind: bool,
        body: Vec<Node>,
    },
    GroupRef(usize),
    GroupRefExists {
        yes: Vec<Node>,
        no: Option<Vec<Node>>,
    },
}

/// Python's `item[0] != prefix` in `_parse_sub`: tuples compare by value, but the sub-patterns
/// inside groups, repeats and branches compare by identity, so those are never equal.
fn python_item_eq(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Literal(x), Node::Literal(y)) | (Node::NotLiteral(x), Node::NotLiteral(y)) => x == y,
        (Node::In(x), Node::In(y)) => x == y,
        (Node::Any, Node::Any) => true,
        (Node::At(x), Node::At(y)) => x == y,
        (Node::GroupRef(x), Node::GroupRef(y)) => x == y,
        _ => false,
    }
}

/// `_uniq`: drop repeated items, keep the first occurrence's order.
fn uniq(items: Vec<SetItem>) -> Vec<SetItem> {
    let mut out: Vec<SetItem> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The parser: a port of CPython's re._parser (3.11+), errors and positions included.
// ---------------------------------------------------------------------------------------------

/// Why parsing stopped.
#[derive(Debug)]
enum Failure {
    /// Python raises: `re.error` (message and position), `OverflowError` or `ValueError`.
    Python { msg: String, pos: Option<usize> },
    /// One of this module's limits.
    Limit { what: String, pos: Option<usize> },
}

type PResult<T> = Result<T, Failure>;

fn py_err(msg: impl Into<String>, pos: Option<usize>) -> Failure {
    Failure::Python {
        msg: msg.into(),
        pos,
    }
}

/// A token of Python's tokenizer: one character, or a backslash and the character after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Char(char),
    Esc(char),
}

impl Tok {
    fn len(self) -> usize {
        match self {
            Tok::Char(_) => 1,
            Tok::Esc(_) => 2,
        }
    }

    fn text(self) -> String {
        match self {
            Tok::Char(c) => c.to_string(),
            Tok::Esc(c) => format!("\\{c}"),
        }
    }

    /// `str.isalpha()` of the token's text.
    fn is_alpha(self) -> bool {
        match self {
            Tok::Char(c) => tables().alpha.contains(c as u32),
            Tok::Esc(_) => false,
        }
    }

    fn flag(self) -> Option<(char, u32)> {
        match self {
            Tok::Char(c) => flag_bit(c).map(|bit| (c, bit)),
            Tok::Esc(_) => None,
        }
    }
}

/// `re._parser.Tokenizer`: always holds the next token, so a trailing backslash is reported as
/// soon as the token before it is consumed, exactly as Python does.
struct Tokenizer {
    chars: Vec<char>,
    index: usize,
    next: Option<Tok>,
}

impl Tokenizer {
    fn new(pattern: &str) -> PResult<Self> {
        let mut t = Tokenizer {
            chars: pattern.chars().collect(),
            index: 0,
            next: None,
        };
        t.advance()?;
        Ok(t)
    }

    /// `__next`.
    fn advance(&mut self) -> PResult<()> {
        let mut index = self.index;
        let Some(&c) = self.chars.get(index) else {
            self.next = None;
            return Ok(());
        };
        let tok = if c == '\\' {
            index += 1;
            match self.chars.get(index) {
                Some(&e) => Tok::Esc(e),
                None => {
                    return Err(py_err(
                        "bad escape (end of pattern)",
                        Some(self.chars.len() - 1),
                    ));
                }
            }
        } else {
            Tok::Char(c)
        };
        self.index = index + 1;
        self.next = Some(tok);
        Ok(())
    }

    fn next_is(&self, c: char) -> bool {
        self.next == Some(Tok::Char(c))
    }

    fn next_is_digit(&self) -> bool {
        matches!(self.next, Some(Tok::Char(c)) if c.is_ascii_digit())
    }

    /// `match`.
    fn eat(&mut self, c: char) -> PResult<bool> {
        if self.next_is(c) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `get`.
    fn get(&mut self) -> PResult<Option<Tok>> {
        let this = self.next;
        self.advance()?;
        Ok(this)
    }

    /// `getwhile`: up to `n` single characters accepted by `accept`.
    fn getwhile(&mut self, n: usize, accept: fn(char) -> bool) -> PResult<String> {
        let mut result = String::new();
        for _ in 0..n {
            match self.next {
                Some(Tok::Char(c)) if accept(c) => {
                    result.push(c);
                    self.advance()?;
                }
                _ => break,
            }
        }
        Ok(result)
    }

    /// `getuntil`.
    fn getuntil(&mut self, terminator: char, name: &str) -> PResult<String> {
        let mut result = String::new();
        let mut length = 0;
        loop {
            let c = self.next;
            self.advance()?;
            match c {
                None => {
                    if result.is_empty() {
                        return Err(self.error(format!("missing {name}"), 0));
                    }
                    return Err(
                        self.error(format!("missing {terminator}, unterminated name"), length)
                    );
                }
                Some(t) if t == Tok::Char(terminator) => {
                    if result.is_empty() {
                        return Err(self.error(format!("missing {name}"), 1));
                    }
                    return Ok(result);
                }
                Some(t) => {
                    result.push_str(&t.text());
                    length += t.len();
                }
            }
        }
    }

    fn tell(&self) -> usize {
        self.index - self.next.map_or(0, Tok::len)
    }

    fn seek(&mut self, index: usize) -> PResult<()> {
        self.index = index;
        self.advance()
    }

    fn error(&self, msg: impl Into<String>, offset: usize) -> Failure {
        py_err(msg, Some(self.tell().saturating_sub(offset)))
    }

    fn slice(&self, from: usize, to: usize) -> String {
        self.chars[from.min(self.chars.len())..to.min(self.chars.len())]
            .iter()
            .collect()
    }

    /// `checkgroupname` for a `str` pattern.
    fn checkgroupname(&self, name: &str, offset: usize) -> PResult<()> {
        if !is_identifier(name) {
            return Err(self.error(
                format!("bad character in group name {}", py_repr(name)),
                name.chars().count() + offset,
            ));
        }
        Ok(())
    }
}

/// The first construct found that parses in Python but is refused here.
#[derive(Debug)]
struct Unsupported {
    pos: usize,
    construct: String,
}

/// `re._parser.State`, plus what this module records on the way.
struct State {
    flags: u32,
    groupdict: HashMap<String, usize>,
    groupwidths: Vec<Option<(u128, u128)>>,
    lookbehindgroups: Option<usize>,
    grouprefpos: Vec<(u64, usize)>,
    unsupported: Option<Unsupported>,
}

impl State {
    fn groups(&self) -> usize {
        self.groupwidths.len()
    }

    fn checkgroup(&self, gid: usize) -> bool {
        gid < self.groups() && self.groupwidths[gid].is_some()
    }

    fn checklookbehindgroup(&self, gid: usize, src: &Tokenizer) -> PResult<()> {
        if let Some(lookbehind) = self.lookbehindgroups {
            if !self.checkgroup(gid) {
                return Err(src.error("cannot refer to an open group", 0));
            }
            if gid >= lookbehind {
                return Err(src.error(
                    "cannot refer to group defined in the same lookbehind subpattern",
                    0,
                ));
            }
        }
        Ok(())
    }

    fn unsupported(&mut self, pos: usize, construct: String) {
        if self.unsupported.as_ref().is_none_or(|u| pos < u.pos) {
            self.unsupported = Some(Unsupported { pos, construct });
        }
    }
}

/// A parsed pattern: its tree, its global flags, and the first refused construct if any.
struct Parsed {
    nodes: Vec<Node>,
    flags: u32,
    unsupported: Option<Unsupported>,
}

/// `re._parser.parse(pattern, re.IGNORECASE)` followed by the checks of `re._compiler.compile`.
fn parse(pattern: &str) -> PResult<Parsed> {
    let mut src = Tokenizer::new(pattern)?;
    let mut state = State {
        flags: FLAG_IGNORECASE,
        groupdict: HashMap::new(),
        groupwidths: vec![None],
        lookbehindgroups: None,
        grouprefpos: Vec::new(),
        unsupported: None,
    };
    let nodes = parse_sub(&mut src, &mut state, false, 0)?;
    // fix_flags for a str pattern.
    if state.flags & FLAG_ASCII == 0 {
        state.flags |= FLAG_UNICODE;
    } else if state.flags & FLAG_UNICODE != 0 {
        return Err(py_err("ASCII and UNICODE flags are incompatible", None));
    }
    if src.next.is_some() {
        return Err(src.error("unbalanced parenthesis", 0));
    }
    for &(group, pos) in &state.grouprefpos {
        if group >= state.groups() as u64 {
            return Err(py_err(
                format!("invalid group reference {group}"),
                Some(pos),
            ));
        }
    }
    compile_checks(&nodes, state.flags, &state)?;
    Ok(Parsed {
        nodes,
        flags: state.flags,
        unsupported: state.unsupported,
    })
}

/// `_parse_sub`: alternation, with Python's rewrites (common prefixes moved out, alternatives of
/// single characters merged into one set; the latter changes matching for non-BMP characters
/// under IGNORECASE, so it has to be reproduced).
fn parse_sub(
    src: &mut Tokenizer,
    state: &mut State,
    verbose: bool,
    nested: usize,
) -> PResult<Vec<Node>> {
    let mut verbose = verbose;
    let mut items: Vec<Vec<Node>> = Vec::new();
    loop {
        let first = nested == 0 && items.is_empty();
        items.push(parse_seq(src, state, verbose, nested + 1, first)?);
        if !src.eat('|')? {
            break;
        }
        if nested == 0 {
            verbose = state.flags & FLAG_VERBOSE != 0;
        }
    }
    if items.len() == 1 {
        return Ok(items.pop().unwrap_or_default());
    }
    let mut subpattern = Vec::new();
    // Common prefix.
    loop {
        let mut prefix: Option<&Node> = None;
        let mut common = true;
        for item in &items {
            let Some(head) = item.first() else {
                common = false;
                break;
            };
            match prefix {
                None => prefix = Some(head),
                Some(p) if python_item_eq(head, p) => {}
                Some(_) => {
                    common = false;
                    break;
                }
            }
        }
        if !common {
            break;
        }
        let mut head = None;
        for item in &mut items {
            head = Some(item.remove(0));
        }
        subpattern.extend(head);
    }
    // Alternatives that are all single characters or sets become one set.
    let mut set = Vec::new();
    let mut all_sets = true;
    for item in &items {
        match item.as_slice() {
            [Node::Literal(c)] => set.push(SetItem::Literal(*c)),
            [Node::In(av)] if av.first() != Some(&SetItem::Negate) => {
                set.extend(av.iter().copied())
            }
            _ => {
                all_sets = false;
                break;
            }
        }
    }
    if all_sets {
        subpattern.push(Node::In(uniq(set)));
    } else {
        subpattern.push(Node::Branch(items));
    }
    Ok(subpattern)
}

const SPECIAL_CHARS: &str = ".\\[{()*+?^$|";
const VERBOSE_WHITESPACE: &str = " \t\n\r\x0b\x0c";

/// `_parse`: a sequence of items.
fn parse_seq(
    src: &mut Tokenizer,
    state: &mut State,
    verbose: bool,
    nested: usize,
    first: bool,
) -> PResult<Vec<Node>> {
    let mut verbose = verbose;
    let mut sub: Vec<Node> = Vec::new();
    while let Some(this) = src.next {
        if this == Tok::Char('|') || this == Tok::Char(')') {
            break;
        }
        src.get()?;
        if verbose && let Tok::Char(c) = this {
            if VERBOSE_WHITESPACE.contains(c) {
                continue;
            }
            if c == '#' {
                loop {
                    match src.get()? {
                        None | Some(Tok::Char('\n')) => break,
                        Some(_) => {}
                    }
                }
                continue;
            }
        }
        let c = match this {
            Tok::Esc(e) => {
                let node = parse_escape(src, e, state)?;
                sub.push(node);
                continue;
            }
            Tok::Char(c) => c,
        };
        if !SPECIAL_CHARS.contains(c) {
            sub.push(Node::Literal(c as u32));
            continue;
        }
        match c {
            '[' => sub.push(parse_class(src, state)?),
            '*' | '+' | '?' | '{' => {
                let here = src.tell();
                let (mut min, mut max) = (0, MAXREPEAT);
                match c {
                    '?' => max = 1,
                    '*' => {}
                    '+' => min = 1,
                    _ => {
                        if src.next_is('}') {
                            sub.push(Node::Literal('{' as u32));
                            continue;
                        }
                        let mut lo = String::new();
                        let mut hi = String::new();
                        while src.next_is_digit() {
                            if let Some(t) = src.get()? {
                                lo.push_str(&t.text());
                            }
                        }
                        if src.eat(',')? {
                            while src.next_is_digit() {
                                if let Some(t) = src.get()? {
                                    hi.push_str(&t.text());
                                }
                            }
                        } else {
                            hi = lo.clone();
                        }
                        if !src.eat('}')? {
                            sub.push(Node::Literal('{' as u32));
                            src.seek(here)?;
                            continue;
                        }
                        if !lo.is_empty() {
                            min = repeat_count(&lo)?;
                        }
                        if !hi.is_empty() {
                            max = repeat_count(&hi)?;
                            if max < min {
                                return Err(src.error(
                                    "min repeat greater than max repeat",
                                    src.tell() - here,
                                ));
                            }
                        }
                    }
                }
                let item = match sub.last() {
                    None | Some(Node::At(_)) => {
                        return Err(src.error("nothing to repeat", src.tell() - here + 1));
                    }
                    Some(Node::Repeat { .. }) => {
                        return Err(src.error("multiple repeat", src.tell() - here + 1));
                    }
                    Some(_) => sub.pop().unwrap_or(Node::Any),
                };
                let item = match item {
                    Node::Subpattern {
                        group: None,
                        add_flags: 0,
                        del_flags: 0,
                        body,
                    } => body,
                    other => vec![other],
                };
                let kind = if src.eat('?')? {
                    RepeatKind::Lazy
                } else if src.eat('+')? {
                    let text = src.slice(here - 1, src.tell());
                    state.unsupported(here - 1, format!("the possessive quantifier `{text}`"));
                    RepeatKind::Possessive
                } else {
                    RepeatKind::Greedy
                };
                sub.push(Node::Repeat {
                    kind,
                    min,
                    max,
                    item,
                });
            }
            '.' => sub.push(Node::Any),
            '(' => {
                let start = src.tell() - 1;
                if nested >= 2 * MAX_NESTING {
                    return Err(Failure::Limit {
                        what: format!("groups are nested more than {MAX_NESTING} levels deep"),
                        pos: Some(start),
                    });
                }
                match parse_group(src, state, verbose, nested, first, sub.is_empty(), start)? {
                    GroupOutcome::Node(node) => sub.push(node),
                    GroupOutcome::Nothing => {}
                    GroupOutcome::GlobalFlags => {
                        verbose = state.flags & FLAG_VERBOSE != 0;
                    }
                }
            }
            '^' => sub.push(Node::At(At::Beginning)),
            '$' => sub.push(Node::At(At::End)),
            _ => unreachable!("every special character is handled"),
        }
    }
    // Non-capturing groups without flags are spliced into their parent.
    let mut i = sub.len();
    while i > 0 {
        i -= 1;
        if matches!(
            sub[i],
            Node::Subpattern {
                group: None,
                add_flags: 0,
                del_flags: 0,
                ..
            }
        ) && let Node::Subpattern { body, .. } = sub.remove(i)
        {
            let tail = sub.split_off(i);
            sub.extend(body);
            sub.extend(tail);
        }
    }
    Ok(sub)
}

/// `int(digits)` for a repeat bound, with Python's overflow check.
fn repeat_count(digits: &str) -> PResult<u64> {
    let trimmed = digits.trim_start_matches('0');
    let value = if trimmed.len() > 12 {
        u64::MAX
    } else {
        trimmed.parse::<u64>().unwrap_or(0)
    };
    if value >= MAXREPEAT {
        return Err(py_err("the repetition number is too large", None));
    }
    Ok(value)
}

enum GroupOutcome {
    Node(Node),
    /// A comment.
    Nothing,
    /// Global flags `(?...)`.
    GlobalFlags,
}

/// Everything after `(`.
fn parse_group(
    src: &mut Tokenizer,
    state: &mut State,
    verbose: bool,
    nested: usize,
    first: bool,
    sequence_empty: bool,
    start: usize,
) -> PResult<GroupOutcome> {
    let mut capture = true;
    let mut atomic = false;
    let mut name: Option<String> = None;
    let mut add_flags = 0;
    let mut del_flags = 0;
    if src.eat('?')? {
        let Some(ch) = src.get()? else {
            return Err(src.error("unexpected end of pattern", 0));
        };
        match ch {
            Tok::Char('P') => {
                if src.eat('<')? {
                    let n = src.getuntil('>', "group name")?;
                    src.checkgroupname(&n, 1)?;
                    name = Some(n);
                } else if src.eat('=')? {
                    let n = src.getuntil(')', "group name")?;
                    src.checkgroupname(&n, 1)?;
                    let n_len = n.chars().count();
                    let Some(&gid) = state.groupdict.get(&n) else {
                        return Err(
                            src.error(format!("unknown group name {}", py_repr(&n)), n_len + 1)
                        );
                    };
                    if !state.checkgroup(gid) {
                        return Err(src.error("cannot refer to an open group", n_len + 1));
                    }
                    state.checklookbehindgroup(gid, src)?;
                    state.unsupported(start, format!("the named backreference `(?P={n})`"));
                    return Ok(GroupOutcome::Node(Node::GroupRef(gid)));
                } else {
                    let Some(c) = src.get()? else {
                        return Err(src.error("unexpected end of pattern", 0));
                    };
                    return Err(src.error(format!("unknown extension ?P{}", c.text()), c.len() + 2));
                }
            }
            Tok::Char(':') => capture = false,
            Tok::Char('#') => loop {
                if src.next.is_none() {
                    return Err(src.error("missing ), unterminated comment", src.tell() - start));
                }
                if src.get()? == Some(Tok::Char(')')) {
                    return Ok(GroupOutcome::Nothing);
                }
            },
            Tok::Char(c @ ('=' | '!' | '<')) => {
                let mut kind = c;
                let mut behind = false;
                let mut outer_lookbehind = None;
                if c == '<' {
                    let Some(c2) = src.get()? else {
                        return Err(src.error("unexpected end of pattern", 0));
                    };
                    match c2 {
                        Tok::Char(k @ ('=' | '!')) => kind = k,
                        other => {
                            return Err(src.error(
                                format!("unknown extension ?<{}", other.text()),
                                other.len() + 2,
                            ));
                        }
                    }
                    behind = true;
                    outer_lookbehind = Some(state.lookbehindgroups);
                    if state.lookbehindgroups.is_none() {
                        state.lookbehindgroups = Some(state.groups());
                    }
                }
                let construct = match (behind, kind) {
                    (false, '=') => "the look-ahead assertion `(?=...)`",
                    (false, _) => "the negative look-ahead assertion `(?!...)`",
                    (true, '=') => "the look-behind assertion `(?<=...)`",
                    (true, _) => "the negative look-behind assertion `(?<!...)`",
                };
                state.unsupported(start, construct.into());
                let body = parse_sub(src, state, verbose, nested + 1)?;
                if let Some(None) = outer_lookbehind {
                    state.lookbehindgroups = None;
                }
                if !src.eat(')')? {
                    return Err(src.error("missing ), unterminated subpattern", src.tell() - start));
                }
                return Ok(GroupOutcome::Node(Node::Assert { behind, body }));
            }
            Tok::Char('(') => {
                let condname = src.getuntil(')', "group name")?;
                let cond_len = condname.chars().count();
                let condgroup = if is_identifier(&condname) {
                    src.checkgroupname(&condname, 1)?;
                    let Some(&gid) = state.groupdict.get(&condname) else {
                        return Err(src.error(
                            format!("unknown group name {}", py_repr(&condname)),
                            cond_len + 1,
                        ));
                    };
                    gid
                } else {
                    let Some(number) = py_int(&condname) else {
                        return Err(src.error(
                            format!("bad character in group name {}", py_repr(&condname)),
                            cond_len + 1,
                        ));
                    };
                    if number.is_zero() {
                        return Err(src.error("bad group number", cond_len + 1));
                    }
                    if number.negative {
                        return Err(src.error(
                            format!("bad character in group name {}", py_repr(&condname)),
                            cond_len + 1,
                        ));
                    }
                    let value = number.value().filter(|v| *v < MAXGROUPS);
                    let Some(value) = value else {
                        return Err(src.error(
                            format!("invalid group reference {}", number.digits),
                            cond_len + 1,
                        ));
                    };
                    if !state.grouprefpos.iter().any(|(g, _)| *g == value) {
                        state.grouprefpos.push((value, src.tell() - cond_len - 1));
                    }
                    value as usize
                };
                state.checklookbehindgroup(condgroup, src)?;
                state.unsupported(start, format!("the conditional group `(?({condname})...)`"));
                let yes = parse_seq(src, state, verbose, nested + 1, false)?;
                let no = if src.eat('|')? {
                    let no = parse_seq(src, state, verbose, nested + 1, false)?;
                    if src.next_is('|') {
                        return Err(src.error("conditional backref with more than two branches", 0));
                    }
                    Some(no)
                } else {
                    None
                };
                if !src.eat(')')? {
                    return Err(src.error("missing ), unterminated subpattern", src.tell() - start));
                }
                return Ok(GroupOutcome::Node(Node::GroupRefExists { yes, no }));
            }
            Tok::Char('>') => {
                capture = false;
                atomic = true;
                state.unsupported(start, "the atomic group `(?>...)`".into());
            }
            Tok::Char(c) if c == '-' || flag_bit(c).is_some() => {
                match parse_flags(src, state, c)? {
                    None => {
                        if !first || !sequence_empty {
                            return Err(src.error(
                                "global flags not at the start of the expression",
                                src.tell() - start,
                            ));
                        }
                        let flags = state.flags;
                        note_flags(state, flags, start);
                        return Ok(GroupOutcome::GlobalFlags);
                    }
                    Some((add, del)) => {
                        add_flags = add;
                        del_flags = del;
                        capture = false;
                        note_flags(state, add, start);
                    }
                }
            }
            other => {
                return Err(src.error(
                    format!("unknown extension ?{}", other.text()),
                    other.len() + 1,
                ));
            }
        }
    }
    let group = if capture {
        let gid = state.groups();
        state.groupwidths.push(None);
        if let Some(n) = &name {
            if let Some(&ogid) = state.groupdict.get(n) {
                return Err(src.error(
                    format!(
                        "redefinition of group name {} as group {gid}; was group {ogid}",
                        py_repr(n)
                    ),
                    n.chars().count() + 1,
                ));
            }
            state.groupdict.insert(n.clone(), gid);
        }
        Some(gid)
    } else {
        None
    };
    let sub_verbose = (verbose || add_flags & FLAG_VERBOSE != 0) && del_flags & FLAG_VERBOSE == 0;
    let body = parse_sub(src, state, sub_verbose, nested + 1)?;
    if !src.eat(')')? {
        return Err(src.error("missing ), unterminated subpattern", src.tell() - start));
    }
    if let Some(gid) = group {
        state.groupwidths[gid] = Some(width(&body, state));
    }
    Ok(GroupOutcome::Node(if atomic {
        Node::Atomic(body)
    } else {
        Node::Subpattern {
            group,
            add_flags,
            del_flags,
            body,
        }
    }))
}

/// Records the flags that are refused (they parse in Python).
fn note_flags(state: &mut State, flags: u32, start: usize) {
    if flags & FLAG_ASCII != 0 {
        state.unsupported(start, "the ASCII-only flag `a`".into());
    }
    if flags & FLAG_VERBOSE != 0 {
        state.unsupported(start, "the verbose flag `x`".into());
    }
    if flags & FLAG_TEMPLATE != 0 {
        state.unsupported(start, "the deprecated template flag `t`".into());
    }
}

/// `_parse_flags`: `None` for global flags (already added to the state), else the scoped flags.
fn parse_flags(src: &mut Tokenizer, state: &mut State, first: char) -> PResult<Option<(u32, u32)>> {
    let mut add = 0;
    let mut del = 0;
    let mut ch = Some(Tok::Char(first));
    if first != '-' {
        loop {
            let Some((c, flag)) = ch.and_then(Tok::flag) else {
                unreachable!("only flag letters get here")
            };
            if c == 'L' {
                return Err(src.error(
                    "bad inline flags: cannot use 'L' flag with a str pattern",
                    0,
                ));
            }
            add |= flag;
            if flag & TYPE_FLAGS != 0 && add & TYPE_FLAGS != flag {
                return Err(src.error(
                    "bad inline flags: flags 'a', 'u' and 'L' are incompatible",
                    0,
                ));
            }
            ch = src.get()?;
            match ch {
                None => return Err(src.error("missing -, : or )", 0)),
                Some(Tok::Char(')' | '-' | ':')) => break,
                Some(t) if t.flag().is_some() => {}
                Some(t) => {
                    let msg = if t.is_alpha() {
                        "unknown flag"
                    } else {
                        "missing -, : or )"
                    };
                    return Err(src.error(msg, t.len()));
                }
            }
        }
    }
    if ch == Some(Tok::Char(')')) {
        state.flags |= add;
        return Ok(None);
    }
    if add & GLOBAL_FLAGS != 0 {
        return Err(src.error("bad inline flags: cannot turn on global flag", 1));
    }
    if ch == Some(Tok::Char('-')) {
        ch = src.get()?;
        match ch {
            None => return Err(src.error("missing flag", 0)),
            Some(t) if t.flag().is_none() => {
                let msg = if t.is_alpha() {
                    "unknown flag"
                } else {
                    "missing flag"
                };
                return Err(src.error(msg, t.len()));
            }
            Some(_) => {}
        }
        loop {
            let Some((_, flag)) = ch.and_then(Tok::flag) else {
                unreachable!("only flag letters get here")
            };
            if flag & TYPE_FLAGS != 0 {
                return Err(src.error(
                    "bad inline flags: cannot turn off flags 'a', 'u' and 'L'",
                    0,
                ));
            }
            del |= flag;
            ch = src.get()?;
            match ch {
                None => return Err(src.error("missing :", 0)),
                Some(Tok::Char(':')) => break,
                Some(t) if t.flag().is_some() => {}
                Some(t) => {
                    let msg = if t.is_alpha() {
                        "unknown flag"
                    } else {
                        "missing :"
                    };
                    return Err(src.error(msg, t.len()));
                }
            }
        }
    }
    if del & GLOBAL_FLAGS != 0 {
        return Err(src.error("bad inline flags: cannot turn off global flag", 1));
    }
    if add & del != 0 {
        return Err(src.error("bad inline flags: flag turned on and off", 1));
    }
    Ok(Some((add, del)))
}

/// A character class after its `[`.
fn parse_class(src: &mut Tokenizer, state: &mut State) -> PResult<Node> {
    let here = src.tell() - 1;
    let mut set: Vec<SetItem> = Vec::new();
    let negate = src.eat('^')?;
    loop {
        let Some(this) = src.get()? else {
            return Err(src.error("unterminated character set", src.tell() - here));
        };
        if this == Tok::Char(']') && !set.is_empty() {
            break;
        }
        let code1 = match this {
            Tok::Esc(e) => parse_class_escape(src, e, state)?,
            Tok::Char(c) => SetItem::Literal(c as u32),
        };
        if src.eat('-')? {
            let Some(that) = src.get()? else {
                return Err(src.error("unterminated character set", src.tell() - here));
            };
            if that == Tok::Char(']') {
                set.push(code1);
                set.push(SetItem::Literal('-' as u32));
                break;
            }
            let code2 = match that {
                Tok::Esc(e) => parse_class_escape(src, e, state)?,
                Tok::Char(c) => SetItem::Literal(c as u32),
            };
            let bad = || {
                src.error(
                    format!("bad character range {}-{}", this.text(), that.text()),
                    this.len() + 1 + that.len(),
                )
            };
            let (SetItem::Literal(lo), SetItem::Literal(hi)) = (code1, code2) else {
                return Err(bad());
            };
            if hi < lo {
                return Err(bad());
            }
            set.push(SetItem::Range(lo, hi));
        } else {
            set.push(code1);
        }
    }
    let mut set = uniq(set);
    if let [SetItem::Literal(c)] = set.as_slice() {
        return Ok(if negate {
            Node::NotLiteral(*c)
        } else {
            Node::Literal(*c)
        });
    }
    if negate {
        set.insert(0, SetItem::Negate);
    }
    Ok(Node::In(set))
}

fn is_hex(c: char) -> bool {
    c.is_ascii_hexdigit()
}

fn is_oct(c: char) -> bool {
    ('0'..='7').contains(&c)
}

/// `\x..`, `\u....`, `\U........` and `\N{...}`, shared by both escape parsers. `None` when
/// `c` starts none of them.
fn parse_code_escape(src: &mut Tokenizer, c: char, state: &mut State) -> PResult<Option<u32>> {
    let start = src.tell() - 2;
    let digits = match c {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        'N' => {
            if !src.eat('{')? {
                return Err(src.error("missing {", 0));
            }
            let name = src.getuntil('}', "character name")?;
            state.unsupported(start, format!("the named character escape `\\N{{{name}}}`"));
            // The character itself does not matter: the pattern is refused.
            return Ok(Some(0));
        }
        _ => return Ok(None),
    };
    let hex = src.getwhile(digits, is_hex)?;
    let escape = format!("\\{c}{hex}");
    if hex.len() != digits {
        return Err(src.error(
            format!("incomplete escape {escape}"),
            escape.chars().count(),
        ));
    }
    let value = u32::from_str_radix(&hex, 16).unwrap_or(u32::MAX);
    if c == 'U' && value > 0x10FFFF {
        return Err(src.error(format!("bad escape {escape}"), escape.chars().count()));
    }
    Ok(Some(value))
}

/// `_class_escape`: an escape inside `[...]`.
fn parse_class_escape(src: &mut Tokenizer, c: char, state: &mut State) -> PResult<SetItem> {
    if let Some(code) = simple_escape(c) {
        return Ok(SetItem::Literal(code));
    }
    if let Some(category) = category_escape(c) {
        return Ok(SetItem::Category(category));
    }
    if let Some(code) = parse_code_escape(src, c, state)? {
        return Ok(SetItem::Literal(code));
    }
    if is_oct(c) {
        let more = src.getwhile(2, is_oct)?;
        let escape = format!("\\{c}{more}");
        let value = u32::from_str_radix(&escape[1..], 8).unwrap_or(u32::MAX);
        if value > 0o377 {
            return Err(src.error(
                format!("octal escape value {escape} outside of range 0-0o377"),
                escape.chars().count(),
            ));
        }
        return Ok(SetItem::Literal(value));
    }
    if c.is_ascii_alphanumeric() {
        return Err(src.error(format!("bad escape \\{c}"), 2));
    }
    Ok(SetItem::Literal(c as u32))
}

/// `_escape`: an escape outside `[...]`.
fn parse_escape(src: &mut Tokenizer, c: char, state: &mut State) -> PResult<Node> {
    match c {
        'A' => return Ok(Node::At(At::BeginningString)),
        'b' => return Ok(Node::At(At::Boundary)),
        'B' => return Ok(Node::At(At::NonBoundary)),
        'Z' => return Ok(Node::At(At::EndString)),
        _ => {}
    }
    if let Some(category) = category_escape(c) {
        return Ok(Node::In(vec![SetItem::Category(category)]));
    }
    if let Some(code) = simple_escape(c) {
        return Ok(Node::Literal(code));
    }
    let start = src.tell() - 2;
    if let Some(code) = parse_code_escape(src, c, state)? {
        return Ok(Node::Literal(code));
    }
    if c == '0' {
        let more = src.getwhile(2, is_oct)?;
        return Ok(Node::Literal(
            u32::from_str_radix(&format!("0{more}"), 8).unwrap_or(0),
        ));
    }
    if c.is_ascii_digit() {
        let mut escape = format!("\\{c}");
        if src.next_is_digit() {
            if let Some(t) = src.get()? {
                escape.push_str(&t.text());
            }
            let digits: Vec<char> = escape.chars().skip(1).collect();
            if is_oct(digits[0])
                && is_oct(digits[1])
                && matches!(src.next, Some(Tok::Char(n)) if is_oct(n))
            {
                if let Some(t) = src.get()? {
                    escape.push_str(&t.text());
                }
                let value = u32::from_str_radix(&escape[1..], 8).unwrap_or(u32::MAX);
                if value > 0o377 {
                    return Err(src.error(
                        format!("octal escape value {escape} outside of range 0-0o377"),
                        escape.chars().count(),
                    ));
                }
                return Ok(Node::Literal(value));
            }
        }
        let group: usize = escape[1..].parse().unwrap_or(usize::MAX);
        if group < state.groups() {
            if !state.checkgroup(group) {
                return Err(src.error("cannot refer to an open group", escape.chars().count()));
            }
            state.checklookbehindgroup(group, src)?;
            state.unsupported(start, format!("the backreference `{escape}`"));
            return Ok(Node::GroupRef(group));
        }
        return Err(src.error(
            format!("invalid group reference {group}"),
            escape.chars().count() - 1,
        ));
    }
    if c.is_ascii_alphabetic() {
        return Err(src.error(format!("bad escape \\{c}"), 2));
    }
    Ok(Node::Literal(c as u32))
}

/// `ESCAPES` (`\b` only reaches here inside a class, where it is a backspace).
fn simple_escape(c: char) -> Option<u32> {
    Some(match c {
        'a' => 0x07,
        'b' => 0x08,
        'f' => 0x0c,
        'n' => 0x0a,
        'r' => 0x0d,
        't' => 0x09,
        'v' => 0x0b,
        '\\' => 0x5c,
        _ => return None,
    })
}

fn category_escape(c: char) -> Option<Category> {
    Some(match c {
        'd' => Category::Digit,
        'D' => Category::NotDigit,
        's' => Category::Space,
        'S' => Category::NotSpace,
        'w' => Category::Word,
        'W' => Category::NotWord,
        _ => return None,
    })
}

/// `SubPattern.getwidth`: (min, max) characters a sequence can match.
fn width(nodes: &[Node], state: &State) -> (u128, u128) {
    let (mut lo, mut hi): (u128, u128) = (0, 0);
    for node in nodes {
        match node {
            Node::Branch(items) => {
                let (mut i, mut j) = (MAXWIDTH, 0);
                for item in items {
                    let (l, h) = width(item, state);
                    i = i.min(l);
                    j = j.max(h);
                }
                lo += i;
                hi += j;
            }
            Node::Atomic(body) | Node::Subpattern { body, .. } => {
                let (i, j) = width(body, state);
                lo += i;
                hi += j;
            }
            Node::Repeat { min, max, item, .. } => {
                let (i, j) = width(item, state);
                lo += i * u128::from(*min);
                if *max == MAXREPEAT && j != 0 {
                    hi = MAXWIDTH;
                } else {
                    hi += j * u128::from(*max);
                }
            }
            Node::Any | Node::In(_) | Node::Literal(_) | Node::NotLiteral(_) => {
                lo += 1;
                hi += 1;
            }
            Node::GroupRef(gid) => {
                let (i, j) = state
                    .groupwidths
                    .get(*gid)
                    .copied()
                    .flatten()
                    .unwrap_or((0, 0));
                lo += i;
                hi += j;
            }
            Node::GroupRefExists { yes, no } => {
                let (mut i, mut j) = width(yes, state);
                match no {
                    Some(no) => {
                        let (l, h) = width(no, state);
                        i = i.min(l);
                        j = j.max(h);
                    }
                    None => i = 0,
                }
                lo += i;
                hi += j;
            }
            Node::At(_) | Node::Assert { .. } => {}
        }
    }
    (lo.min(MAXWIDTH), hi.min(MAXWIDTH))
}

/// The errors `re._compiler._compile` raises, in its traversal order.
fn compile_checks(nodes: &[Node], flags: u32, state: &State) -> PResult<()> {
    for node in nodes {
        match node {
            Node::Repeat { kind, item, .. } => {
                if flags & FLAG_TEMPLATE != 0 {
                    return Err(py_err(
                        format!(
                            "internal: unsupported template operator {}",
                            kind.python_name()
                        ),
                        None,
                    ));
                }
                compile_checks(item, flags, state)?;
            }
            Node::Subpattern { body, .. } | Node::Atomic(body) => {
                compile_checks(body, flags, state)?
            }
            Node::Assert { behind, body } => {
                if *behind {
                    let (lo, hi) = width(body, state);
                    if lo > MAXCODE {
                        return Err(py_err("looks too much behind", None));
                    }
                    if lo != hi {
                        return Err(py_err("look-behind requires fixed-width pattern", None));
                    }
                }
                compile_checks(body, flags, state)?;
            }
            Node::Branch(items) => {
                for item in items {
                    compile_checks(item, flags, state)?;
                }
            }
            Node::GroupRefExists { yes, no } => {
                compile_checks(yes, flags, state)?;
                if let Some(no) = no {
                    compile_checks(no, flags, state)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `str.isidentifier()`.
fn is_identifier(name: &str) -> bool {
    let t = tables();
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || t.xid_start.contains(c as u32) => {}
        _ => return false,
    }
    chars.all(|c| t.xid_continue.contains(c as u32))
}

/// `repr(str)`, for names quoted in Python's messages.
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let t = tables();
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            _ if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            _ if (c as u32) < 0x7f => out.push(c),
            _ if !t.nonprintable.contains(c as u32) => out.push(c),
            _ if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            _ if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// Result of Python's `int(s)` on a group number: sign and decimal digits (no leading zeros).
struct PyInt {
    negative: bool,
    digits: String,
}

impl PyInt {
    fn is_zero(&self) -> bool {
        self.digits == "0"
    }

    fn value(&self) -> Option<u64> {
        if self.digits.len() > 18 {
            None
        } else {
            self.digits.parse().ok()
        }
    }
}

/// Python's `int(s)`: surrounding whitespace, a sign, Unicode decimal digits, single `_`
/// between digits. `None` where Python raises `ValueError`.
fn py_int(s: &str) -> Option<PyInt> {
    let t = tables();
    let s = s.trim_matches(|c: char| t.space.contains(c as u32));
    let (negative, body) = match s.chars().next() {
        Some('-') => (true, &s[1..]),
        Some('+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut digits = String::new();
    let mut last_was_digit = false;
    for c in body.chars() {
        if c == '_' {
            if !last_was_digit {
                return None;
            }
            last_was_digit = false;
            continue;
        }
        let value = t.decimal_value(c as u32)?;
        digits.push(char::from(b'0' + value));
        last_was_digit = true;
    }
    if !last_was_digit {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(PyInt {
        negative,
        digits: if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.into()
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Sets of code points, and the Unicode data Python's engine uses.
// ---------------------------------------------------------------------------------------------

const MAX_CHAR: u32 = 0x10FFFF;
const MAX_BMP: u32 = 0xFFFF;

/// A set of code points: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CharSet {
    ranges: Vec<(u32, u32)>,
}

impl CharSet {
    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        CharSet { ranges: out }
    }

    fn from_points(points: impl IntoIterator<Item = u32>) -> Self {
        Self::from_ranges(points.into_iter().map(|p| (p, p)).collect())
    }

    fn full() -> Self {
        CharSet {
            ranges: vec![(0, MAX_CHAR)],
        }
    }

    fn contains(&self, c: u32) -> bool {
        self.ranges
            .binary_search_by(|&(a, b)| {
                if b < c {
                    std::cmp::Ordering::Less
                } else if a > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    fn intersects(&self, lo: u32, hi: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= hi && lo <= b)
    }

    fn union(&self, other: &CharSet) -> CharSet {
        let mut all = self.ranges.clone();
        all.extend_from_slice(&other.ranges);
        Self::from_ranges(all)
    }

    fn complement(&self) -> CharSet {
        let mut out = Vec::new();
        let mut next = 0u32;
        for &(a, b) in &self.ranges {
            if a > next {
                out.push((next, a - 1));
            }
            next = b.saturating_add(1);
        }
        if next <= MAX_CHAR && self.ranges.last().is_none_or(|&(_, b)| b < MAX_CHAR) {
            out.push((next, MAX_CHAR));
        }
        CharSet { ranges: out }
    }

    fn intersect(&self, other: &CharSet) -> CharSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let (a, b) = (a1.max(a2), b1.min(b2));
            if a <= b {
                out.push((a, b));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        CharSet { ranges: out }
    }

    fn difference(&self, other: &CharSet) -> CharSet {
        self.intersect(&other.complement())
    }
}

/// The Unicode data: Python's case mapping (`_PyUnicode_ToLowercase`/`ToUppercase`: the first
/// character of the full mapping), `re._casefix`'s extra equivalences, and Python's `\w`, `\d`,
/// `\s`, plus what the parser's messages need.
struct Tables {
    /// (c, lower(c)) where they differ, sorted.
    lower: Vec<(u32, u32)>,
    /// (c, upper(c)) where they differ, sorted.
    upper: Vec<(u32, u32)>,
    lower_changed: CharSet,
    upper_changed: CharSet,
    /// `_sre.unicode_iscased`.
    cased: CharSet,
    /// `re._casefix._EXTRA_CASES`: lower-cased character → the other lower-cased characters with
    /// the same upper case.
    extra_cases: HashMap<u32, Vec<u32>>,
    word: CharSet,
    digit: CharSet,
    space: CharSet,
    alpha: CharSet,
    xid_start: CharSet,
    xid_continue: CharSet,
    nonprintable: CharSet,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(Tables::build)
}

/// The code points of a `regex-syntax` Unicode class expression.
fn unicode_class(class: &str) -> CharSet {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .unwrap_or_else(|e| panic!("built-in class {class} must parse: {e}"));
    match hir.kind() {
        HirKind::Class(Class::Unicode(set)) => CharSet::from_ranges(
            set.ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect(),
        ),
        other => panic!("built-in class {class} is not a Unicode class: {other:?}"),
    }
}

impl Tables {
    fn build() -> Tables {
        let mut lower = Vec::new();
        let mut upper = Vec::new();
        // Characters with a one-character full lower case, grouped by full upper case
        // (generate_re_casefix.py); only groups keyed by another character matter.
        let mut same_upper: HashMap<String, Vec<char>> = HashMap::new();
        for c in (0..=MAX_CHAR).filter_map(char::from_u32) {
            let mut lowers = c.to_lowercase();
            let l = lowers.next().unwrap_or(c);
            let single_lower = lowers.next().is_none();
            let u = c.to_uppercase().next().unwrap_or(c);
            if l != c {
                lower.push((c as u32, l as u32));
            }
            if u != c {
                upper.push((c as u32, u as u32));
                if single_lower {
                    same_upper
                        .entry(c.to_uppercase().collect())
                        .or_default()
                        .push(c);
                }
            }
        }
        // A character that is its own upper case joins the group keyed by itself.
        let keys: Vec<String> = same_upper.keys().cloned().collect();
        for key in keys {
            let mut chars = key.chars();
            if let (Some(k), None) = (chars.next(), chars.next())
                && k.to_uppercase().eq(std::iter::once(k))
                && k.to_lowercase().count() == 1
                && let Some(group) = same_upper.get_mut(&key)
            {
                group.push(k);
            }
        }
        let mut extra_cases: HashMap<u32, Vec<u32>> = HashMap::new();
        for group in same_upper.values().filter(|g| g.len() > 1) {
            let mut lowered: Vec<u32> = group
                .iter()
                .map(|c| c.to_lowercase().next().unwrap_or(*c) as u32)
                .collect();
            lowered.sort_unstable();
            lowered.dedup();
            if lowered.len() > 1 {
                for &i in &lowered {
                    let others = lowered.iter().copied().filter(|&j| j != i).collect();
                    extra_cases.insert(i, others);
                }
            }
        }
        let lower_changed = CharSet::from_points(lower.iter().map(|&(c, _)| c));
        let upper_changed = CharSet::from_points(upper.iter().map(|&(c, _)| c));
        let cased = lower_changed.union(&upper_changed);
        Tables {
            lower,
            upper,
            lower_changed,
            upper_changed,
            cased,
            extra_cases,
            // Python: str.isalnum() or "_", i.e. letters and numbers.
            word: unicode_class(r"[\p{L}\p{N}_]"),
            // Python: str.isdecimal().
            digit: unicode_class(r"\p{Nd}"),
            // Python: str.isspace(), which adds the information separators U+001C..U+001F.
            space: unicode_class(
                r"[\t\n\x0B\x0C\r\x1C-\x1F\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
            ),
            alpha: unicode_class(r"\p{L}"),
            xid_start: unicode_class(r"\p{XID_Start}"),
            xid_continue: unicode_class(r"\p{XID_Continue}"),
            nonprintable: unicode_class(r"[\p{C}\p{Z}]").difference(&CharSet::from_points([0x20])),
        }
    }

    fn lower(&self, c: u32) -> u32 {
        match self.lower.binary_search_by_key(&c, |&(k, _)| k) {
            Ok(i) => self.lower[i].1,
            Err(_) => c,
        }
    }

    fn is_cased(&self, c: u32) -> bool {
        self.cased.contains(c)
    }

    /// `{x : lower(x) ∈ targets}`.
    fn lower_preimage(&self, targets: &CharSet) -> CharSet {
        let unchanged = targets.difference(&self.lower_changed);
        let changed = self
            .lower
            .iter()
            .filter(|&&(_, l)| targets.contains(l))
            .map(|&(c, _)| c);
        unchanged.union(&CharSet::from_points(changed))
    }

    /// `{x : upper(x) ∈ targets}`.
    fn upper_preimage(&self, targets: &CharSet) -> CharSet {
        let unchanged = targets.difference(&self.upper_changed);
        let changed = self
            .upper
            .iter()
            .filter(|&&(_, u)| targets.contains(u))
            .map(|&(c, _)| c);
        unchanged.union(&CharSet::from_points(changed))
    }

    /// `{lower(x) : x ∈ [a, b]}`.
    fn lower_image(&self, a: u32, b: u32) -> CharSet {
        let range = CharSet {
            ranges: vec![(a, b)],
        };
        let unchanged = range.difference(&self.lower_changed);
        let start = self.lower.partition_point(|&(c, _)| c < a);
        let end = self.lower.partition_point(|&(c, _)| c <= b);
        let images = self.lower[start..end].iter().map(|&(_, l)| l);
        unchanged.union(&CharSet::from_points(images))
    }

    fn category(&self, category: Category) -> CharSet {
        match category {
            Category::Digit => self.digit.clone(),
            Category::NotDigit => self.digit.complement(),
            Category::Space => self.space.clone(),
            Category::NotSpace => self.space.complement(),
            Category::Word => self.word.clone(),
            Category::NotWord => self.word.complement(),
        }
    }

    /// The value of a Unicode decimal digit (`Nd` digits come in runs of ten, 0 to 9).
    fn decimal_value(&self, c: u32) -> Option<u8> {
        let &(start, end) = self.digit.ranges.iter().find(|&&(a, b)| a <= c && c <= b)?;
        debug_assert!((end - start + 1) % 10 == 0);
        Some(((c - start) % 10) as u8)
    }
}

// ---------------------------------------------------------------------------------------------
// What one character-matching item matches, as Python's engine decides it.
// ---------------------------------------------------------------------------------------------

/// A literal (`LITERAL`, `LITERAL_UNI_IGNORE`, or `IN_UNI_IGNORE` for characters with extra
/// case equivalents).
fn literal_set(c: u32, ignorecase: bool) -> CharSet {
    let t = tables();
    if !ignorecase || !t.is_cased(c) {
        return CharSet::from_points([c]);
    }
    let lo = t.lower(c);
    let mut targets = vec![lo];
    if let Some(extra) = t.extra_cases.get(&lo) {
        targets.extend(extra);
    }
    t.lower_preimage(&CharSet::from_points(targets))
}

/// A character set (`IN`), following `re._compiler._optimize_charset` and `_sre`'s `charset()`:
/// without case-insensitivity (or when no member is cased) the members are taken as they are;
/// otherwise the input character is lower-cased and looked up in a map of the lower-cased BMP
/// members (plus their extra equivalents), non-BMP literals as written, non-BMP ranges with an
/// upper-case retry, and categories.
fn class_set(items: &[SetItem], ignorecase: bool) -> CharSet {
    let t = tables();
    let (negate, items) = match items.split_first() {
        Some((SetItem::Negate, rest)) => (true, rest),
        _ => (false, items),
    };
    let plain = |items: &[SetItem]| {
        let mut ranges = Vec::new();
        let mut set = CharSet::default();
        for item in items {
            match *item {
                SetItem::Literal(c) => ranges.push((c, c)),
                SetItem::Range(a, b) => ranges.push((a, b)),
                SetItem::Category(cat) => set = set.union(&t.category(cat)),
                SetItem::Negate => {}
            }
        }
        set.union(&CharSet::from_ranges(ranges))
    };
    let finish = |set: CharSet| if negate { set.complement() } else { set };
    if !ignorecase {
        return finish(plain(items));
    }
    let mut charmap = CharSet::default();
    let mut tail_literals = Vec::new();
    let mut tail_ranges = Vec::new();
    let mut categories = CharSet::default();
    let mut hascased = false;
    for item in items {
        match *item {
            SetItem::Literal(c) => {
                let lo = t.lower(c);
                if lo > MAX_BMP {
                    tail_literals.push(c);
                    hascased = true;
                } else {
                    charmap = charmap.union(&CharSet::from_points([lo]));
                    if t.is_cased(c) {
                        hascased = true;
                    }
                }
            }
            SetItem::Range(a, b) => {
                if a <= MAX_BMP {
                    charmap = charmap.union(&t.lower_image(a, b.min(MAX_BMP)));
                }
                if b > MAX_BMP {
                    tail_ranges.push((a, b));
                    hascased = true;
                } else if !hascased {
                    hascased = t.cased.intersects(a, b);
                }
            }
            SetItem::Category(cat) => categories = categories.union(&t.category(cat)),
            SetItem::Negate => {}
        }
    }
    if !hascased {
        return finish(plain(items));
    }
    let extra: Vec<u32> = t
        .extra_cases
        .iter()
        .filter(|(k, _)| charmap.contains(**k))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let mut targets = charmap
        .union(&CharSet::from_points(extra))
        .union(&CharSet::from_points(tail_literals))
        .union(&categories);
    for (a, b) in tail_ranges {
        let range = CharSet {
            ranges: vec![(a, b)],
        };
        targets = targets.union(&range).union(&t.upper_preimage(&range));
    }
    finish(t.lower_preimage(&targets))
}

// ---------------------------------------------------------------------------------------------
// Translation to the regex crate's syntax.
// ---------------------------------------------------------------------------------------------

fn combine_flags(flags: u32, add: u32, del: u32) -> u32 {
    let mut flags = flags;
    if add & TYPE_FLAGS != 0 {
        flags &= !TYPE_FLAGS;
    }
    (flags | add) & !del
}

/// Appends a set as a class of `\x{..}` escapes, so no character is special to the regex crate
/// (`[`, `&&`, `--`, `~~`, `[:alpha:]`, ... mean nothing here). Surrogates cannot occur in a
/// Rust string and are left out.
fn emit_set(set: &CharSet, out: &mut String) {
    use std::fmt::Write;
    let set = set.difference(&CharSet {
        ranges: vec![(0xD800, 0xDFFF)],
    });
    match set.ranges.as_slice() {
        // Matches nothing.
        [] => out.push_str(r"[^\x{0}-\x{10FFFF}]"),
        [(a, b)] if a == b => {
            let _ = write!(out, r"\x{{{a:X}}}");
        }
        ranges => {
            out.push('[');
            for &(a, b) in ranges {
                if a == b {
                    let _ = write!(out, r"\x{{{a:X}}}");
                } else {
                    let _ = write!(out, r"\x{{{a:X}}}-\x{{{b:X}}}");
                }
            }
            out.push(']');
        }
    }
}

fn emit_seq(nodes: &[Node], flags: u32, out: &mut String) {
    for node in nodes {
        emit_node(node, flags, out);
    }
}

fn emit_node(node: &Node, flags: u32, out: &mut String) {
    let ignorecase = flags & FLAG_IGNORECASE != 0;
    let multiline = flags & FLAG_MULTILINE != 0;
    match node {
        Node::Literal(c) => emit_set(&literal_set(*c, ignorecase), out),
        Node::NotLiteral(c) => emit_set(&literal_set(*c, ignorecase).complement(), out),
        Node::In(items) => emit_set(&class_set(items, ignorecase), out),
        Node::Any => {
            if flags & FLAG_DOTALL != 0 {
                emit_set(&CharSet::full(), out)
            } else {
                emit_set(&CharSet::from_points(['\n' as u32]).complement(), out)
            }
        }
        Node::At(at) => out.push_str(match at {
            At::Beginning if multiline => "(?m:^)",
            At::Beginning | At::BeginningString => r"\A",
            // Python's `$` also matches before a final newline; ids have none (module docs).
            At::End if multiline => "(?m:$)",
            At::End | At::EndString => r"\z",
            At::Boundary => r"\b",
            At::NonBoundary if flags & EMIT_FOR_EMPTY_INPUT != 0 => r"[^\x{0}-\x{10FFFF}]",
            At::NonBoundary => r"\B",
        }),
        Node::Repeat {
            kind,
            min,
            max,
            item,
        } => {
            out.push_str("(?:");
            emit_seq(item, flags, out);
            out.push(')');
            match (*min, *max) {
                (0, MAXREPEAT) => out.push('*'),
                (1, MAXREPEAT) => out.push('+'),
                (0, 1) => out.push('?'),
                (m, MAXREPEAT) => out.push_str(&format!("{{{m},}}")),
                (m, n) if m == n => out.push_str(&format!("{{{m}}}")),
                (m, n) => out.push_str(&format!("{{{m},{n}}}")),
            }
            if *kind == RepeatKind::Lazy {
                out.push('?');
            }
        }
        Node::Subpattern {
            add_flags,
            del_flags,
            body,
            ..
        } => {
            out.push_str("(?:");
            emit_seq(body, combine_flags(flags, *add_flags, *del_flags), out);
            out.push(')');
        }
        Node::Branch(items) => {
            out.push_str("(?:");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                emit_seq(item, flags, out);
            }
            out.push(')');
        }
        // Refused before translation; never emitted.
        Node::Atomic(_) | Node::Assert { .. } | Node::GroupRef(_) | Node::GroupRefExists { .. } => {
            unreachable!("refused constructs are not translated")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> LookupPattern {
        LookupPattern::new(p).unwrap_or_else(|e| panic!("{p:?} must be accepted: {e}"))
    }

    fn m(p: &str, id: &str) -> bool {
        pat(p).matches(id)
    }

    fn err(p: &str) -> PatternError {
        match LookupPattern::new(p) {
            Ok(_) => panic!("{p:?} must be refused"),
            Err(e) => e,
        }
    }

    /// Refused because Python rejects it, with Python's message and position.
    fn python_rejects(p: &str, msg: &str) {
        let e = err(p);
        assert_eq!(e.kind(), PatternErrorKind::RejectedByPython, "{p:?}: {e}");
        assert!(e.to_string().contains(msg), "{p:?}: {e}");
        assert!(e.to_string().contains("Python"), "{p:?}: {e}");
        assert!(e.to_string().contains("rejects"), "{p:?}: {e}");
    }

    /// Refused as unsupported, naming the construct.
    fn unsupported(p: &str, construct: &str) {
        let e = err(p);
        assert_eq!(e.kind(), PatternErrorKind::Unsupported, "{p:?}: {e}");
        assert!(e.to_string().contains(construct), "{p:?}: {e}");
    }

    #[test]
    fn airflow_vectors() {
        assert!(m("^aws_", "AWS_default"));
        assert!(!m("aws_", "my_aws_x"));
        assert!(m("aws", "aws_default_extra"));
        assert!(!m("aws$", "aws_x"));
        assert!(m("aws$", "AWS"));
        assert_eq!(pat("^aws_").as_python(), "^aws_");
    }

    #[test]
    fn anchored_at_start_only_and_alternation_stays_anchored() {
        assert!(m("a|b", "b_x"));
        assert!(!m("a|b", "xb"));
        assert!(m("x|ab", "ab"));
        assert!(!m("ab|cd", "xcd"));
        assert!(m("", "anything"));
        assert!(m("", ""));
    }

    #[test]
    fn braces_that_are_not_quantifiers_are_literal() {
        assert!(m("{", "{"));
        assert!(m("a{", "a{"));
        assert!(m("a{}", "a{}"));
        assert!(m("a{x}", "a{x}"));
        assert!(m("a{1", "a{1"));
        assert!(m("a{1,2", "a{1,2"));
        assert!(m("a{ 1}", "a{ 1}"));
        assert!(m("}", "}"));
        assert!(m("a}", "a}"));
        assert!(m("{}", "{}"));
        // `{,n}` is `{0,n}`; `{,}` is `*`.
        assert!(m("xa{,2}y", "xy"));
        assert!(m("xa{,2}y", "xaay"));
        assert!(!m("xa{,2}y", "xaaay"));
        assert!(m("xa{,}y", "xaaaay"));
        assert!(m("a{2}$", "aa"));
        assert!(!m("a{2}$", "aaa"));
        assert!(m("a{2,}$", "aaaa"));
        assert!(m("x(?:ab){1,2}$", "xabab"));
    }

    #[test]
    fn class_syntax_is_pythons() {
        // `]` first (after `^`) is literal.
        assert!(m("[]a]", "]"));
        assert!(m("[]a]", "a"));
        assert!(m("[^]]", "x"));
        assert!(!m("[^]]", "]"));
        // `-` first or last is literal.
        assert!(m("[a-]", "-"));
        assert!(m("[-a]", "-"));
        assert!(!m("[a-]", "b"));
        // What the regex crate treats specially is plain here.
        assert!(m("[&&]", "&"));
        assert!(m("[a&&b]", "&"));
        assert!(m("[--a]", "-"));
        assert!(m("[%--]", "+"));
        assert!(m("[a~~b]", "~"));
        assert!(m("[[]", "["));
        assert!(m("[[:alpha:]]", ":]"));
        assert!(m("[[:alpha:]]", "a]"));
        assert!(!m("[[:alpha:]]", "b]"));
        // `\b` in a class is a backspace.
        assert!(m(r"[\b]", "\u{8}"));
        assert!(!m(r"[\b]", "b"));
        // Escapes and ranges.
        assert!(m(r"[\d_]+$", "12_3"));
        assert!(m(r"[\x41-\x43]", "b"));
        assert!(m(r"[^a-z]", "_"));
        assert!(!m(r"[^a-z]", "Q"));
        assert!(m(r"[\]]", "]"));
        assert!(m(r"[\-]", "-"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"\d+$", "0123"));
        assert!(!m(r"\D", "1"));
        assert!(m(r"\w+$", "aws_db1"));
        assert!(!m(r"\W", "a"));
        assert!(m(r"\s", " "));
        assert!(m(r"\s", "\u{1c}"));
        assert!(m(r"\S", "a"));
        assert!(m(r"a\b", "a-"));
        assert!(!m(r"a\b", "ab"));
        assert!(m(r"a\B", "ab"));
        // CPython (up to 3.13): `\B` never matches in an empty string; `\b` neither.
        assert!(!m(r"\B", ""));
        assert!(!m(r"x?\B", ""));
        assert!(m(r"x?\B", "."));
        assert!(m(r"(?:\B|)x?", ""));
        assert!(!m(r"\b", ""));
        assert!(m(r"x?", ""));
        assert!(m(r"\Aaws", "aws"));
        // `\Z` is the absolute end.
        assert!(m(r"aws\Z", "aws"));
        assert!(!m(r"aws\Z", "aws_"));
        assert!(!m(r"aws\Z", "aws\n"));
        // Character codes.
        assert!(m(r"\x41", "a"));
        assert!(m(r"\u0041", "A"));
        assert!(m(r"\U00000041", "a"));
        assert!(m(r"\101", "A"));
        assert!(m(r"\0", "\0"));
        assert!(m(r"\012", "\n"));
        assert!(m(r"[\101]", "a"));
        assert!(m(r"\t\n\r\f\v\a", "\t\n\r\x0c\x0b\x07"));
        // Escaped punctuation and non-ASCII stay literal.
        assert!(m(r"\.\-\/\+\=\@\ ", ".-/+=@ "));
        assert!(!m(r"a\.b", "axb"));
        assert!(m(r"\é", "É"));
    }

    #[test]
    fn bad_escapes_are_pythons_errors() {
        python_rejects(r"\q", "bad escape \\q at position 0");
        python_rejects(r"a\z", "bad escape \\z at position 1");
        python_rejects(r"[\A]", "bad escape \\A at position 1");
        python_rejects(r"\x4", "incomplete escape \\x4 at position 0");
        python_rejects(r"\u12", "incomplete escape \\u12");
        python_rejects(r"\U00110000", "bad escape \\U00110000");
        python_rejects(r"[\8]", "bad escape \\8");
        python_rejects(r"\400", "octal escape value \\400 outside of range 0-0o377");
        python_rejects("ab\\", "bad escape (end of pattern) at position 2");
        python_rejects(r"\1", "invalid group reference 1 at position 1");
    }

    #[test]
    fn groups_and_flags() {
        assert!(m("(?:aws|gcp)_", "gcp_x"));
        assert!(m("(aws)_", "aws_x"));
        assert!(m("(?P<cloud>aws)_", "AWS_x"));
        assert!(m("a(?#a comment)b", "ab"));
        assert!(m("(?#only a comment)", "x"));
        assert!(m("(?i)aws", "AWS"));
        assert!(m("(?u)aws", "AWS"));
        // Case-sensitive scopes.
        assert!(m("(?-i:aws)", "aws"));
        assert!(!m("(?-i:aws)", "AWS"));
        assert!(m("(?-i:a)b", "aB"));
        assert!(!m("(?-i:a)b", "Ab"));
        assert!(m("(?i:A)b", "aB"));
        assert!(m("(?s-i:a.)", "a\n"));
        assert!(!m("a.", "a\n"));
        assert!(m("(?s)a.", "a\n"));
        // MULTILINE.
        assert!(m("(?m)a$", "a\nb"));
        assert!(!m("a$", "a\nb"));
        assert!(m("(?m)a\n^b", "a\nb"));
        // Quantified groups.
        assert!(m("(?:ab)+$", "ABab"));
        assert!(!m("(?:ab)+$", "aba"));
        assert!(m("(a|bc)*d", "abcbcad"));
        assert!(m("(?:a|)*b", "b"));
        assert!(m("a*?b", "aab"));
        assert!(m("(a){0}b", "b"));
    }

    #[test]
    fn global_flags_must_lead() {
        python_rejects(
            "a(?i)",
            "global flags not at the start of the expression at position 1",
        );
        python_rejects("(?:(?i)a)", "global flags not at the start");
        python_rejects("a|(?i)b", "global flags not at the start");
        assert!(m("(?i)(?m)a", "A"));
        assert!(m("(?#c)(?s)a.", "a\n"));
    }

    #[test]
    fn python_syntax_errors() {
        python_rejects("a(b", "missing ), unterminated subpattern at position 1");
        python_rejects("a)b", "unbalanced parenthesis at position 1");
        python_rejects("*a", "nothing to repeat at position 0");
        python_rejects("a**", "multiple repeat at position 2");
        python_rejects("^*", "nothing to repeat at position 1");
        python_rejects(r"\b+", "nothing to repeat");
        python_rejects("[z-a]", "bad character range z-a at position 1");
        python_rejects(r"[\d-z]", "bad character range \\d-z");
        python_rejects("[a", "unterminated character set at position 0");
        python_rejects("[]", "unterminated character set");
        python_rejects("a{2,1}", "min repeat greater than max repeat at position 2");
        python_rejects("a{4294967295}", "the repetition number is too large");
        python_rejects("(?", "unexpected end of pattern");
        python_rejects("(?Q)", "unknown extension ?Q at position 1");
        python_rejects("(?<n>a)", "unknown extension ?<n at position 1");
        python_rejects("(?P<1>a)", "bad character in group name '1' at position 4");
        python_rejects(
            "(?P<a>x)(?P<a>y)",
            "redefinition of group name 'a' as group 2; was group 1",
        );
        python_rejects("(?P=a)", "unknown group name 'a'");
        python_rejects(
            "(?L)a",
            "bad inline flags: cannot use 'L' flag with a str pattern",
        );
        python_rejects(
            "(?au)a",
            "bad inline flags: flags 'a', 'u' and 'L' are incompatible",
        );
        python_rejects("(?i-i:a)", "bad inline flags: flag turned on and off");
        python_rejects("(?-u:a)", "cannot turn off flags 'a', 'u' and 'L'");
        python_rejects("(?t:a)", "cannot turn on global flag");
        python_rejects("(?iz)a", "unknown flag");
        python_rejects("(?#abc", "missing ), unterminated comment");
        python_rejects("(?<=a+)b", "look-behind requires fixed-width pattern");
        python_rejects("(?(2)a)", "invalid group reference 2");
        python_rejects(
            "(a)(?(1)b|c|d)",
            "conditional backref with more than two branches",
        );
        python_rejects("(a\\1)", "cannot refer to an open group");
        python_rejects("(?a)(?u)x", "ASCII and UNICODE flags are incompatible");
    }

    #[test]
    fn refused_constructs_are_named() {
        unsupported("(?=a)b", "look-ahead assertion `(?=...)` at position 0");
        unsupported(
            "a(?!b)",
            "negative look-ahead assertion `(?!...)` at position 1",
        );
        unsupported("(?<=a)b", "look-behind assertion `(?<=...)`");
        unsupported("(?<!a)b", "negative look-behind assertion `(?<!...)`");
        unsupported(r"(a)\1", "backreference `\\1` at position 3");
        unsupported(
            "(?P<x>a)(?P=x)",
            "named backreference `(?P=x)` at position 8",
        );
        unsupported(
            "(a)?(?(1)b|c)",
            "conditional group `(?(1)...)` at position 4",
        );
        unsupported("(?>a)", "atomic group `(?>...)` at position 0");
        unsupported("a*+", "possessive quantifier `*+` at position 1");
        unsupported("a++", "possessive quantifier `++`");
        unsupported("a?+", "possessive quantifier `?+`");
        unsupported("a{1,2}+", "possessive quantifier `{1,2}+` at position 1");
        unsupported(
            r"\N{EM DASH}",
            "named character escape `\\N{EM DASH}` at position 0",
        );
        unsupported(r"[\N{EM DASH}]", "named character escape");
        unsupported("(?a)aws", "ASCII-only flag `a`");
        unsupported("(?a:aws)", "ASCII-only flag `a`");
        unsupported("(?x)a b", "verbose flag `x`");
        unsupported("(?x:a b)", "verbose flag `x`");
        unsupported("(?t)ab", "template flag `t`");
        let e = err("(?=a)");
        assert!(e.to_string().contains("cannot be evaluated exactly"), "{e}");
        assert_eq!(e.position(), Some(0));
        // A Python error later in the pattern wins: Python would raise it.
        python_rejects("(?=a)(", "missing ), unterminated subpattern");
        // `(?-x:...)` only turns off a flag that is not on.
        assert!(m("(?-x:a b)", "a b"));
    }

    #[test]
    fn limits() {
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        assert_eq!(err(&long).kind(), PatternErrorKind::TooLarge);
        assert!(m(
            &"a".repeat(MAX_PATTERN_CHARS),
            &"a".repeat(MAX_PATTERN_CHARS)
        ));
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_eq!(err(&deep).kind(), PatternErrorKind::TooLarge);
        let ok = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(m(&ok, "a"));
        let big = err(r"\w{1000}");
        assert_eq!(big.kind(), PatternErrorKind::TooLarge);
        assert!(big.to_string().contains("MiB"), "{big}");
    }

    #[test]
    fn case_insensitivity_is_pythons() {
        // Kelvin sign and k, long s and s, dotless i and i: Python's lower-case comparison.
        assert!(m("k", "\u{212A}"));
        assert!(m("\u{212A}", "k"));
        assert!(m("\u{212A}", "K"));
        assert!(m("s", "\u{17F}"));
        assert!(m("\u{17F}", "S"));
        assert!(m("i", "\u{130}"));
        assert!(m("\u{131}", "I"));
        assert!(m("\u{130}", "i"));
        assert!(m("[\u{130}]", "I"));
        // ß has no one-character upper case: it matches ẞ, never "ss".
        assert!(m("ß", "ẞ"));
        assert!(m("ẞ", "ß"));
        assert!(!m("ß", "ss"));
        assert!(!m("ss$", "ß"));
        assert!(m("é", "É"));
        assert!(m("[à-ÿ]", "À"));
        assert!(m("[A-Z]", "a"));
        assert!(m("[a-z]", "\u{212A}"));
        assert!(m("[^a]", "b"));
        assert!(!m("[^a]", "A"));
        assert!(m("σ", "ς"));
        assert!(m("Σ", "ς"));
        assert!(m("µ", "Μ"));
        // CPython quirk: a non-BMP upper-case member of a multi-member set only matches inputs
        // whose lower case is that very character (none), while a single literal matches.
        assert!(m("\u{10400}", "\u{10428}"));
        assert!(m("[\u{10400}]", "\u{10400}"));
        assert!(!m("[\u{10400}x]", "\u{10400}"));
        assert!(!m("\u{10400}|x", "\u{10400}"));
        assert!(m("[\u{10400}-\u{10401}x]", "\u{10428}"));
    }

    #[test]
    fn unicode_tables_hold_what_the_translation_assumes() {
        let t = tables();
        // Lower-casing never crosses the BMP boundary (re._compiler relies on it too).
        for &(c, l) in &t.lower {
            assert_eq!(c <= MAX_BMP, l <= MAX_BMP, "{c:X} -> {l:X}");
        }
        // The extra equivalences of CPython 3.11's re._casefix, derived from the same data.
        let expected: &[(u32, &[u32])] = &[
            (0x69, &[0x131]),
            (0x73, &[0x17f]),
            (0xb5, &[0x3bc]),
            (0x345, &[0x3b9, 0x1fbe]),
            (0x3c2, &[0x3c3]),
            (0x442, &[0x1c84, 0x1c85]),
            (0x1e61, &[0x1e9b]),
            (0xfb05, &[0xfb06]),
        ];
        for (k, v) in expected {
            assert_eq!(t.extra_cases.get(k).map(Vec::as_slice), Some(*v), "{k:X}");
        }
        assert_eq!(t.decimal_value('٣' as u32), Some(3));
        assert_eq!(t.decimal_value('7' as u32), Some(7));
    }

    #[test]
    fn translation_escapes_everything() {
        let p = pat("[&&][[:a:]]a.b");
        let s = p.regex.as_str();
        assert!(s.starts_with(r"\A(?:"), "{s}");
        assert!(!s.contains("&&") && !s.contains("[:"), "{s}");
        assert!(!s.contains("(?i"), "{s}");
    }

    #[test]
    fn python_repr_and_int() {
        assert_eq!(py_repr("a'b"), "\"a'b\"");
        assert_eq!(py_repr("a\\b\n"), "'a\\\\b\\n'");
        assert_eq!(py_repr("é\u{200b}"), "'é\\u200b'");
        assert_eq!(py_int(" +1_0 ").map(|i| i.digits), Some("10".into()));
        assert!(py_int("1__0").is_none());
        assert!(py_int("_1").is_none());
        assert!(py_int("").is_none());
    }
}
