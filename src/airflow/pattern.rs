//! Lookup patterns with Python's `re.match(pattern, id, re.IGNORECASE)` semantics.
//!
//! Airflow's `SecretsManagerBackend` only looks up a connection id / variable key / config key when
//! `re.match(lookup_pattern, id, re.IGNORECASE)` returns a match: anchored at the start only (not
//! a full match), case-insensitive, Unicode (`str` patterns). The operator has to decide exactly
//! as Python would. A pattern goes through two steps here:
//!
//! 1. **A Python front end.** The parser is a port of CPython's `re._parser` (3.11): the same
//!    tokenizer (with its one-token look-ahead), grammar, errors and error positions, the same
//!    post-parse checks and the checks `re._compiler` makes (look-behind width, the template
//!    flag). A pattern Python rejects is rejected with Python's own message. The parser also
//!    keeps the tree rewrites that change what a pattern matches (alternatives of single
//!    characters merged into one set, common prefixes moved out of alternations).
//! 2. **fancy-regex as the engine.** The tree is emitted in fancy-regex syntax and compiled as
//!    `\A...`: `\A` gives `re.match`'s start anchoring and `is_match` reports whether a match
//!    starting at 0 exists, which is all `re.match(...) is not None` asks. Every construct Python
//!    accepts has a counterpart: groups keep Python's numbering (names are not passed on, all
//!    references are by number), look-ahead and look-behind, back-references, conditionals
//!    `(?(1)a|b)`, atomic groups and possessive quantifiers map to fancy-regex's, and the
//!    flags `i`, `m`, `s`, `a`, `x`, `u` and `t` are applied by the front end itself.
//!
//! ## Matching is computed as Python's engine does it
//!
//! - **Characters.** Every character-matching item (literal, class, `.`, `\w`, ...) becomes an
//!   explicit class of code points, computed the way CPython's `_sre` decides a match. Python does
//!   not use Unicode case folding: under IGNORECASE a cased literal `c` matches `x` when
//!   `lower(x) == lower(c)` (`lower` is the first character of the full lower-case mapping),
//!   extended by `re._casefix`'s characters that share an upper case (`i`/`ı`, `s`/`ſ`, ...).
//!   So `İ`, `ı` and `i` all match `i` and `I`, `ſ` matches `s`, the Kelvin sign matches `k`.
//!   Classes are evaluated on `lower(x)` with CPython's quirks for non-BMP members. Under the
//!   `a` flag case-insensitivity and `\w`/`\d`/`\s`/`\b` are ASCII-only, as in Python. The
//!   regex is compiled case-sensitively: fancy-regex's `(?i)` would re-fold these classes.
//! - **Anchors.** `$` is Python's (end, or before a final newline), `\Z` is the absolute end,
//!   `\b`/`\B` use Python's word characters (letters, numbers, `_`), and `\B` never matches in
//!   an empty id, as in CPython up to 3.13.
//! - **Repeats** keep Python's bounds. Counted repeats (`{m,n}`) run in fancy-regex's
//!   backtracking VM (with counters, never unrolled); repeats of zero-width items (`(?=a)*`,
//!   `(?:$){2}`) become "once" or "optional", which is what Python's engine does with them.
//! - **Look-behind** bodies have a fixed width (Python checks it); they are emitted as "that
//!   many characters back, the body matches forward", which fancy-regex evaluates for every
//!   body, back-references and conditionals included.
//!
//! ## Backtracking is bounded
//!
//! Tenants write these patterns, and both Python and fancy-regex backtrack: a pattern like
//! `(a|aa)+\1b` takes exponential time on a long id. fancy-regex runs the parts of a pattern that
//! need no backtracking (no look-around, back-reference, ... inside) in linear time; the rest
//! runs under a backtrack limit of [`BACKTRACK_LIMIT`] steps. [`LookupPattern::matches`] reports
//! a match that hits it as a [`MatchError`] (never a hang, never a silent "no match"). Python
//! itself has no limit: it would spend minutes or hours on the same id.
//!
//! ## Assumptions and known differences
//!
//! Secret names (and so ids) are ASCII: letters, digits and `/_+=.@-`. On ASCII ids the result
//! is Python's for every pattern Python accepts, but for one CPython bug, which is not
//! reproduced:
//!
//! - **Possessive repeats** follow Python's documentation (`X*+` is `(?>X*)`). CPython 3.11 leaves
//!   a group set to the empty string when the last, failed iteration entered it:
//!   `(?:(a)|b)*+\1` matches `ab` there (and `(?:(a)b|c)*+` raises `SystemError` on `abc`),
//!   while its own `(?>(?:(a)|b)*)\1` does not. Here neither does.
//!
//! The remaining differences concern other ids:
//!
//! - **Back-references under IGNORECASE** compare with fancy-regex's Unicode simple case folding
//!   (and the same UTF-8 length) instead of Python's `lower()`: `(.)\1` matches `ςσ` and `µμ`
//!   here, not in Python, and `Kk` (Kelvin sign) or `İi` in Python, not here. Identical on ASCII.
//! - **Unicode data** (case mappings, categories) comes from the Rust standard library and
//!   `regex-syntax`; each Python release ships its own Unicode version, so characters assigned
//!   in between can differ. ASCII never does.
//!
//! And on the patterns:
//!
//! - **`\N{...}`** knows the names of the printable ASCII characters and of the four non-ASCII
//!   characters that match ASCII letters under IGNORECASE (Kelvin sign, `İ`, `ı`, `ſ`); there is
//!   no Unicode name table here. Other names are refused ([`PatternErrorKind::Unsupported`]);
//!   write the character as `\uXXXX` instead.
//! - **Global flags must lead the pattern** (Python 3.11+); older Pythons only warned.
//! - **`(?<name>...)` is rejected**, as CPython up to 3.13 rejects it: only `(?P<name>...)`.
//! - **Limits:** patterns over [`MAX_PATTERN_CHARS`] characters, groups nested deeper than
//!   [`MAX_NESTING`], and patterns whose compiled form exceeds the engine's size limits are
//!   refused ([`PatternErrorKind::TooLarge`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use fancy_regex::{Regex, RegexBuilder, RuntimeError};

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;
/// Deepest group nesting accepted. fancy-regex nests at most 63 groups, and one Python group can
/// take three (a repeated look-behind), plus a few for `\b`/`\B` inside.
pub const MAX_NESTING: usize = 20;
/// fancy-regex's backtrack limit: steps one match may take before it is reported as a
/// [`MatchError`] (about a tenth of a second).
pub const BACKTRACK_LIMIT: usize = 1_000_000;
/// Bytes of compiled program each part of a pattern that fancy-regex hands to the `regex`
/// engine may use (Python's `\w` is a large class: a few hundred of them in a row reach it).
const DELEGATE_SIZE_LIMIT: usize = 32 << 20;
/// Bytes of lazy-DFA cache per delegated part.
const DELEGATE_DFA_SIZE_LIMIT: usize = 2 << 20;

/// A lookup pattern with Python `re.match(pattern, id, re.IGNORECASE)` semantics.
#[derive(Debug, Clone)]
pub struct LookupPattern {
    python: String,
    regex: Regex,
}

impl LookupPattern {
    /// Parses `python_pattern` as Python's `re` module would and compiles it. Fails when Python
    /// rejects the pattern, and (rarely) at one of this module's limits.
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
        let parsed = parse(python_pattern).map_err(|f| f.into_error(python_pattern))?;
        let optimize = !reads_captures(&parsed.nodes);
        let regex = compile(python_pattern, &translate(&parsed), optimize)?;
        Ok(Self {
            python: python_pattern.to_string(),
            regex,
        })
    }

    /// Whether Python's `re.match(pattern, id, re.IGNORECASE)` returns a match. Fails when the
    /// match needs more than [`BACKTRACK_LIMIT`] backtracking steps on this id.
    pub fn matches(&self, id: &str) -> Result<bool, MatchError> {
        self.regex
            .is_match(id)
            .map_err(|e| MatchError::new(&self.python, id, e))
    }

    /// The original (Python) pattern.
    pub fn as_python(&self) -> &str {
        &self.python
    }
}

/// Compiles a translated pattern with this module's limits. fancy-regex's optimizer rewrites
/// nested repeats, which keeps many catastrophic patterns linear but can change what a group
/// captures (`(a*)+` ends with an empty iteration in Python); it only runs when nothing reads
/// the captures.
fn compile(python_pattern: &str, translated: &str, optimize: bool) -> Result<Regex, PatternError> {
    RegexBuilder::new(translated)
        .optimize(optimize)
        .backtrack_limit(BACKTRACK_LIMIT)
        .delegate_size_limit(DELEGATE_SIZE_LIMIT)
        .delegate_dfa_size_limit(DELEGATE_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let detail = match e {
                fancy_regex::Error::ParseError(_, fancy_regex::ParseError::RecursionExceeded) => {
                    "its groups are nested too deeply for the regex engine".to_string()
                }
                fancy_regex::Error::CompileError(c)
                    if matches!(*c, fancy_regex::CompileError::InnerError(_)) =>
                {
                    format!(
                        "its compiled form exceeds the limit of {} MiB (long runs of wide classes such as `\\w` grow it)",
                        DELEGATE_SIZE_LIMIT >> 20
                    )
                }
                other => format!("its translation could not be compiled: {other}"),
            };
            PatternError::new(python_pattern, PatternErrorKind::TooLarge, None, detail)
        })
}

/// Why a lookup pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// Python's `re` module itself rejects the pattern (Airflow would fail on it too).
    RejectedByPython,
    /// A `\N{...}` name this module does not know (see the module docs); Python may accept it.
    Unsupported,
    /// The pattern exceeds a size limit (length, nesting, compiled size).
    TooLarge,
}

/// The pattern as shown in messages: long ones are cut.
fn shown(pattern: &str) -> String {
    if pattern.chars().count() > 80 {
        pattern.chars().take(77).chain("...".chars()).collect()
    } else {
        pattern.to_string()
    }
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
        let shown = shown(pattern);
        let at = position
            .map(|p| format!(" at position {p}"))
            .unwrap_or_default();
        let message = match kind {
            PatternErrorKind::RejectedByPython => format!(
                "invalid lookup pattern `{shown}`: Python's re module rejects it: {detail}{at}"
            ),
            PatternErrorKind::Unsupported => format!(
                "unsupported lookup pattern `{shown}`: {detail}{at} is not known here; write the character as \\uXXXX"
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

/// A match that could not be decided: the pattern backtracks too much on this id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MatchError {
    message: String,
}

impl MatchError {
    fn new(pattern: &str, id: &str, error: fancy_regex::Error) -> Self {
        let why = match error {
            fancy_regex::Error::RuntimeError(RuntimeError::BacktrackLimitExceeded) => {
                format!("it needs more than {BACKTRACK_LIMIT} backtracking steps")
            }
            fancy_regex::Error::RuntimeError(RuntimeError::StackOverflow) => {
                "its backtracking stack overflows".to_string()
            }
            other => other.to_string(),
        };
        Self {
            message: format!(
                "lookup pattern `{}` cannot be decided on `{}`: {why} (catastrophic backtracking; Python's re would take very long on it too); simplify the pattern",
                shown(pattern),
                shown(id)
            ),
        }
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
        negate: bool,
        /// The body's width (fixed when `behind`; Python checks it).
        width: u128,
        body: Vec<Node>,
    },
    GroupRef(usize),
    GroupRefExists {
        group: usize,
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
    /// A `\N{...}` name not in this module's table.
    UnknownName { what: String, pos: usize },
}

impl Failure {
    fn into_error(self, pattern: &str) -> PatternError {
        match self {
            Failure::Python { msg, pos } => {
                PatternError::new(pattern, PatternErrorKind::RejectedByPython, pos, msg)
            }
            Failure::Limit { what, pos } => {
                PatternError::new(pattern, PatternErrorKind::TooLarge, pos, what)
            }
            Failure::UnknownName { what, pos } => {
                PatternError::new(pattern, PatternErrorKind::Unsupported, Some(pos), what)
            }
        }
    }
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

/// `re._parser.State`, plus what this module records on the way.
struct State {
    flags: u32,
    groupdict: HashMap<String, usize>,
    groupwidths: Vec<Option<(u128, u128)>>,
    lookbehindgroups: Option<usize>,
    grouprefpos: Vec<(u64, usize)>,
}

impl State {
    fn groups(&self) -> usize {
        self.groupwidths.len()
    }

    fn checkgroup(&self, gid: usize) -> bool {
        gid < self.groups() && self.groupwidths[gid].is_some()
    }

    /// `opengroup`: the number of a new capturing group.
    fn open_group(&mut self, name: Option<&str>, src: &Tokenizer) -> PResult<usize> {
        let gid = self.groups();
        self.groupwidths.push(None);
        if let Some(name) = name {
            if let Some(&ogid) = self.groupdict.get(name) {
                return Err(src.error(
                    format!(
                        "redefinition of group name {} as group {gid}; was group {ogid}",
                        py_repr(name)
                    ),
                    name.chars().count() + 1,
                ));
            }
            self.groupdict.insert(name.to_string(), gid);
        }
        Ok(gid)
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
}

/// A parsed pattern: its tree and its global flags.
struct Parsed {
    nodes: Vec<Node>,
    flags: u32,
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
    let mut subpattern = common_prefix(&mut items);
    subpattern.push(match single_characters(&items) {
        Some(set) => Node::In(uniq(set)),
        None => Node::Branch(items),
    });
    Ok(subpattern)
}

/// Removes the items every alternative starts with (as Python compares them), returning them.
fn common_prefix(items: &mut [Vec<Node>]) -> Vec<Node> {
    let mut prefix = Vec::new();
    loop {
        let Some(head) = items[0].first() else {
            return prefix;
        };
        let common = items[1..]
            .iter()
            .all(|item| item.first().is_some_and(|h| python_item_eq(h, head)));
        if !common {
            return prefix;
        }
        let head = items[0].remove(0);
        for item in &mut items[1..] {
            item.remove(0);
        }
        prefix.push(head);
    }
}

/// The members of one set when every alternative is a single character or a plain set.
fn single_characters(items: &[Vec<Node>]) -> Option<Vec<SetItem>> {
    let mut set = Vec::new();
    for item in items {
        match item.as_slice() {
            [Node::Literal(c)] => set.push(SetItem::Literal(*c)),
            [Node::In(av)] if av.first() != Some(&SetItem::Negate) => {
                set.extend(av.iter().copied())
            }
            _ => return None,
        }
    }
    Some(set)
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
        if verbose && skip_verbose(src, this)? {
            continue;
        }
        let c = match this {
            Tok::Esc(e) => {
                sub.push(parse_escape(src, e, state)?);
                continue;
            }
            Tok::Char(c) => c,
        };
        match c {
            _ if !SPECIAL_CHARS.contains(c) => sub.push(Node::Literal(c as u32)),
            '[' => sub.push(parse_class(src)?),
            '*' | '+' | '?' | '{' => parse_repeat(src, c, &mut sub)?,
            '.' => sub.push(Node::Any),
            '(' => {
                let start = src.tell() - 1;
                if nested >= 2 * MAX_NESTING {
                    return Err(Failure::Limit {
                        what: format!("groups are nested more than {MAX_NESTING} levels deep"),
                        pos: Some(start),
                    });
                }
                let at_start = first && sub.is_empty();
                match parse_group(src, state, verbose, nested, at_start, start)? {
                    GroupOutcome::Node(node) => sub.push(node),
                    GroupOutcome::Nothing => {}
                    GroupOutcome::GlobalFlags => verbose = state.flags & FLAG_VERBOSE != 0,
                }
            }
            '^' => sub.push(Node::At(At::Beginning)),
            '$' => sub.push(Node::At(At::End)),
            _ => unreachable!("every special character is handled"),
        }
    }
    splice_plain_groups(&mut sub);
    Ok(sub)
}

/// In verbose mode, skips whitespace and `#` comments (up to a newline); true when `this` was
/// one of them.
fn skip_verbose(src: &mut Tokenizer, this: Tok) -> PResult<bool> {
    match this {
        Tok::Char(c) if VERBOSE_WHITESPACE.contains(c) => Ok(true),
        Tok::Char('#') => {
            while !matches!(src.get()?, None | Some(Tok::Char('\n'))) {}
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Non-capturing groups without flags are spliced into their parent.
fn splice_plain_groups(sub: &mut Vec<Node>) {
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
}

/// A quantifier (`c` is `*`, `+`, `?` or `{`) applied to the last item of `sub`; a `{` that
/// does not start a valid repeat is a literal.
fn parse_repeat(src: &mut Tokenizer, c: char, sub: &mut Vec<Node>) -> PResult<()> {
    let here = src.tell();
    let (min, max) = match c {
        '?' => (0, 1),
        '*' => (0, MAXREPEAT),
        '+' => (1, MAXREPEAT),
        _ => match brace_bounds(src, here)? {
            Some(bounds) => bounds,
            None => {
                sub.push(Node::Literal('{' as u32));
                return Ok(());
            }
        },
    };
    let item = match sub.pop() {
        None | Some(Node::At(_)) => {
            return Err(src.error("nothing to repeat", src.tell() - here + 1));
        }
        Some(Node::Repeat { .. }) => {
            return Err(src.error("multiple repeat", src.tell() - here + 1));
        }
        Some(Node::Subpattern {
            group: None,
            add_flags: 0,
            del_flags: 0,
            body,
        }) => body,
        Some(other) => vec![other],
    };
    let kind = if src.eat('?')? {
        RepeatKind::Lazy
    } else if src.eat('+')? {
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
    Ok(())
}

/// The bounds of `{m,n}` after its `{`, or `None` when it is a literal `{` (the tokenizer is
/// then back after the `{`).
fn brace_bounds(src: &mut Tokenizer, here: usize) -> PResult<Option<(u64, u64)>> {
    if src.next_is('}') {
        return Ok(None);
    }
    let lo = digits(src)?;
    let hi = if src.eat(',')? {
        digits(src)?
    } else {
        lo.clone()
    };
    if !src.eat('}')? {
        src.seek(here)?;
        return Ok(None);
    }
    let min = if lo.is_empty() { 0 } else { repeat_count(&lo)? };
    let max = if hi.is_empty() {
        MAXREPEAT
    } else {
        repeat_count(&hi)?
    };
    if max < min {
        return Err(src.error("min repeat greater than max repeat", src.tell() - here));
    }
    Ok(Some((min, max)))
}

/// ASCII digits at the tokenizer.
fn digits(src: &mut Tokenizer) -> PResult<String> {
    let mut out = String::new();
    while src.next_is_digit() {
        if let Some(t) = src.get()? {
            out.push_str(&t.text());
        }
    }
    Ok(out)
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

/// Where a group is parsed: the verbose flag in effect, the nesting depth (as `_parse` counts
/// it) and the position of its `(`.
#[derive(Clone, Copy)]
struct Scope {
    verbose: bool,
    nested: usize,
    start: usize,
}

/// What an ordinary group is, after its opening.
enum Opening {
    Capture(Option<String>),
    Scoped { add: u32, del: u32 },
    Atomic,
}

/// Everything after `(`; `at_start` tells whether global flags may appear here.
fn parse_group(
    src: &mut Tokenizer,
    state: &mut State,
    verbose: bool,
    nested: usize,
    at_start: bool,
    start: usize,
) -> PResult<GroupOutcome> {
    let scope = Scope {
        verbose,
        nested,
        start,
    };
    if !src.eat('?')? {
        return parse_group_body(src, state, scope, Opening::Capture(None));
    }
    let Some(ch) = src.get()? else {
        return Err(src.error("unexpected end of pattern", 0));
    };
    let opening = match ch {
        Tok::Char('P') => match parse_named(src, state)? {
            Ok(name) => Opening::Capture(Some(name)),
            Err(reference) => return Ok(GroupOutcome::Node(reference)),
        },
        Tok::Char(':') => Opening::Scoped { add: 0, del: 0 },
        Tok::Char('>') => Opening::Atomic,
        Tok::Char('#') => return parse_comment(src, start),
        Tok::Char(c @ ('=' | '!' | '<')) => return parse_lookaround(src, state, scope, c),
        Tok::Char('(') => return parse_conditional(src, state, scope),
        Tok::Char(c) if c == '-' || flag_bit(c).is_some() => match parse_flags(src, state, c)? {
            Some((add, del)) => Opening::Scoped { add, del },
            None if at_start => return Ok(GroupOutcome::GlobalFlags),
            None => {
                return Err(src.error(
                    "global flags not at the start of the expression",
                    src.tell() - start,
                ));
            }
        },
        other => {
            return Err(src.error(
                format!("unknown extension ?{}", other.text()),
                other.len() + 1,
            ));
        }
    };
    parse_group_body(src, state, scope, opening)
}

/// After `(?P`: the name of a new group (`<name>`), or a reference `=name)`.
fn parse_named(src: &mut Tokenizer, state: &mut State) -> PResult<Result<String, Node>> {
    if src.eat('<')? {
        let name = src.getuntil('>', "group name")?;
        src.checkgroupname(&name, 1)?;
        return Ok(Ok(name));
    }
    if !src.eat('=')? {
        let Some(c) = src.get()? else {
            return Err(src.error("unexpected end of pattern", 0));
        };
        return Err(src.error(format!("unknown extension ?P{}", c.text()), c.len() + 2));
    }
    let name = src.getuntil(')', "group name")?;
    src.checkgroupname(&name, 1)?;
    let offset = name.chars().count() + 1;
    let Some(&gid) = state.groupdict.get(&name) else {
        return Err(src.error(format!("unknown group name {}", py_repr(&name)), offset));
    };
    if !state.checkgroup(gid) {
        return Err(src.error("cannot refer to an open group", offset));
    }
    state.checklookbehindgroup(gid, src)?;
    Ok(Err(Node::GroupRef(gid)))
}

/// After `(?#`: a comment up to `)`.
fn parse_comment(src: &mut Tokenizer, start: usize) -> PResult<GroupOutcome> {
    loop {
        if src.next.is_none() {
            return Err(src.error("missing ), unterminated comment", src.tell() - start));
        }
        if src.get()? == Some(Tok::Char(')')) {
            return Ok(GroupOutcome::Nothing);
        }
    }
}

/// The `)` that closes a group opened at `start`.
fn close_group(src: &mut Tokenizer, start: usize) -> PResult<()> {
    if src.eat(')')? {
        Ok(())
    } else {
        Err(src.error("missing ), unterminated subpattern", src.tell() - start))
    }
}

/// After `(?=`, `(?!` or `(?<`: a look-ahead or look-behind assertion.
fn parse_lookaround(
    src: &mut Tokenizer,
    state: &mut State,
    scope: Scope,
    c: char,
) -> PResult<GroupOutcome> {
    let mut kind = c;
    let behind = c == '<';
    let outer_lookbehind = state.lookbehindgroups;
    if behind {
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
        state
            .lookbehindgroups
            .get_or_insert(state.groupwidths.len());
    }
    let body = parse_sub(src, state, scope.verbose, scope.nested + 1)?;
    if behind && outer_lookbehind.is_none() {
        state.lookbehindgroups = None;
    }
    close_group(src, scope.start)?;
    Ok(GroupOutcome::Node(Node::Assert {
        behind,
        negate: kind == '!',
        width: width(&body, state).0,
        body,
    }))
}

/// After `(?(`: a conditional `(?(group)yes|no)`.
fn parse_conditional(
    src: &mut Tokenizer,
    state: &mut State,
    scope: Scope,
) -> PResult<GroupOutcome> {
    let group = condition_group(src, state)?;
    state.checklookbehindgroup(group, src)?;
    let yes = parse_seq(src, state, scope.verbose, scope.nested + 1, false)?;
    let no = if src.eat('|')? {
        let no = parse_seq(src, state, scope.verbose, scope.nested + 1, false)?;
        if src.next_is('|') {
            return Err(src.error("conditional backref with more than two branches", 0));
        }
        Some(no)
    } else {
        None
    };
    close_group(src, scope.start)?;
    Ok(GroupOutcome::Node(Node::GroupRefExists { group, yes, no }))
}

/// The group a conditional tests: a name, or a number (checked once the pattern is parsed).
fn condition_group(src: &mut Tokenizer, state: &mut State) -> PResult<usize> {
    let name = src.getuntil(')', "group name")?;
    let offset = name.chars().count() + 1;
    let bad_name = |src: &Tokenizer| {
        src.error(
            format!("bad character in group name {}", py_repr(&name)),
            offset,
        )
    };
    if is_identifier(&name) {
        src.checkgroupname(&name, 1)?;
        return match state.groupdict.get(&name) {
            Some(&gid) => Ok(gid),
            None => Err(src.error(format!("unknown group name {}", py_repr(&name)), offset)),
        };
    }
    let Some(number) = py_int(&name) else {
        return Err(bad_name(src));
    };
    if number.is_zero() {
        return Err(src.error("bad group number", offset));
    }
    if number.negative {
        return Err(bad_name(src));
    }
    let Some(value) = number.value().filter(|v| *v < MAXGROUPS) else {
        return Err(src.error(format!("invalid group reference {}", number.digits), offset));
    };
    if !state.grouprefpos.iter().any(|(g, _)| *g == value) {
        state.grouprefpos.push((value, src.tell() - offset));
    }
    Ok(value as usize)
}

/// The body of an ordinary group (capturing, scoped flags, atomic) and its `)`.
fn parse_group_body(
    src: &mut Tokenizer,
    state: &mut State,
    scope: Scope,
    opening: Opening,
) -> PResult<GroupOutcome> {
    let group = match &opening {
        Opening::Capture(name) => Some(state.open_group(name.as_deref(), src)?),
        _ => None,
    };
    let (add_flags, del_flags) = match opening {
        Opening::Scoped { add, del } => (add, del),
        _ => (0, 0),
    };
    let verbose = (scope.verbose || add_flags & FLAG_VERBOSE != 0) && del_flags & FLAG_VERBOSE == 0;
    let body = parse_sub(src, state, verbose, scope.nested + 1)?;
    close_group(src, scope.start)?;
    if let Some(gid) = group {
        state.groupwidths[gid] = Some(width(&body, state));
    }
    Ok(GroupOutcome::Node(match opening {
        Opening::Atomic => Node::Atomic(body),
        _ => Node::Subpattern {
            group,
            add_flags,
            del_flags,
            body,
        },
    }))
}

/// The message for a token that is not a flag where one may follow.
fn flag_error(src: &Tokenizer, t: Tok, otherwise: &str) -> Failure {
    let msg = if t.is_alpha() {
        "unknown flag"
    } else {
        otherwise
    };
    src.error(msg, t.len())
}

/// `_parse_flags`: `None` for global flags (already added to the state), else the scoped flags.
fn parse_flags(src: &mut Tokenizer, state: &mut State, first: char) -> PResult<Option<(u32, u32)>> {
    let (add, ch) = if first == '-' {
        (0, Some(Tok::Char('-')))
    } else {
        parse_add_flags(src, first)?
    };
    if ch == Some(Tok::Char(')')) {
        state.flags |= add;
        return Ok(None);
    }
    if add & GLOBAL_FLAGS != 0 {
        return Err(src.error("bad inline flags: cannot turn on global flag", 1));
    }
    let del = if ch == Some(Tok::Char('-')) {
        parse_del_flags(src)?
    } else {
        0
    };
    if del & GLOBAL_FLAGS != 0 {
        return Err(src.error("bad inline flags: cannot turn off global flag", 1));
    }
    if add & del != 0 {
        return Err(src.error("bad inline flags: flag turned on and off", 1));
    }
    Ok(Some((add, del)))
}

/// The flags turned on, from `first`, and the token that ends them (`)`, `-` or `:`).
fn parse_add_flags(src: &mut Tokenizer, first: char) -> PResult<(u32, Option<Tok>)> {
    let mut add = 0;
    let mut ch = Some(Tok::Char(first));
    while let Some((c, flag)) = ch.and_then(Tok::flag) {
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
            Some(t) => return Err(flag_error(src, t, "missing -, : or )")),
        }
    }
    Ok((add, ch))
}

/// The flags turned off, after `-`, up to the `:`.
fn parse_del_flags(src: &mut Tokenizer) -> PResult<u32> {
    let mut del = 0;
    let mut ch = src.get()?;
    match ch {
        None => return Err(src.error("missing flag", 0)),
        Some(t) if t.flag().is_none() => return Err(flag_error(src, t, "missing flag")),
        Some(_) => {}
    }
    while let Some((_, flag)) = ch.and_then(Tok::flag) {
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
            Some(t) => return Err(flag_error(src, t, "missing :")),
        }
    }
    Ok(del)
}

/// A character class after its `[`.
fn parse_class(src: &mut Tokenizer) -> PResult<Node> {
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
            Tok::Esc(e) => parse_class_escape(src, e)?,
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
                Tok::Esc(e) => parse_class_escape(src, e)?,
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
fn parse_code_escape(src: &mut Tokenizer, c: char) -> PResult<Option<u32>> {
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
            return match lookup_char_name(&name) {
                Some(code) => Ok(Some(code)),
                None => Err(Failure::UnknownName {
                    what: format!("the character name in `\\N{{{name}}}`"),
                    pos: start,
                }),
            };
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
fn parse_class_escape(src: &mut Tokenizer, c: char) -> PResult<SetItem> {
    if let Some(code) = simple_escape(c) {
        return Ok(SetItem::Literal(code));
    }
    if let Some(category) = category_escape(c) {
        return Ok(SetItem::Category(category));
    }
    if let Some(code) = parse_code_escape(src, c)? {
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
    if let Some(code) = parse_code_escape(src, c)? {
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
            Node::GroupRefExists { yes, no, .. } => {
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
            Node::Assert { behind, body, .. } => {
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
            Node::GroupRefExists { yes, no, .. } => {
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

    fn range(a: u32, b: u32) -> Self {
        CharSet {
            ranges: vec![(a, b)],
        }
    }

    fn contains(&self, c: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, b)| b < c);
        self.ranges.get(i).is_some_and(|&(a, _)| a <= c)
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
        if self.ranges.last().is_none_or(|&(_, b)| b < MAX_CHAR) {
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

/// A character mapping, stored as the characters it changes: Python's `lower` (Unicode or
/// ASCII) or `upper`.
struct Mapping {
    /// (c, f(c)) where they differ, sorted.
    pairs: Vec<(u32, u32)>,
    changed: CharSet,
}

impl Mapping {
    fn new(pairs: Vec<(u32, u32)>) -> Self {
        let changed = CharSet::from_points(pairs.iter().map(|&(c, _)| c));
        Mapping { pairs, changed }
    }

    fn apply(&self, c: u32) -> u32 {
        match self.pairs.binary_search_by_key(&c, |&(k, _)| k) {
            Ok(i) => self.pairs[i].1,
            Err(_) => c,
        }
    }

    /// `{f(x) : x ∈ [a, b]}`.
    fn image(&self, a: u32, b: u32) -> CharSet {
        let start = self.pairs.partition_point(|&(c, _)| c < a);
        let end = self.pairs.partition_point(|&(c, _)| c <= b);
        let images = self.pairs[start..end].iter().map(|&(_, l)| l);
        let unchanged = CharSet::range(a, b).difference(&self.changed);
        unchanged.union(&CharSet::from_points(images))
    }

    /// `{x : f(x) ∈ targets}`.
    fn preimage(&self, targets: &CharSet) -> CharSet {
        let unchanged = targets.difference(&self.changed);
        let changed = self
            .pairs
            .iter()
            .filter(|&&(_, l)| targets.contains(l))
            .map(|&(c, _)| c);
        unchanged.union(&CharSet::from_points(changed))
    }
}

/// The Unicode data: Python's case mappings (`_PyUnicode_ToLowercase`/`ToUppercase`: the first
/// character of the full mapping), Python's `\w`, `\d`, `\s`, and what the parser's messages
/// need.
struct Tables {
    lower: Mapping,
    upper: Mapping,
    /// `_sre.ascii_tolower`.
    ascii_lower: Mapping,
    /// `_sre.unicode_iscased`.
    cased: CharSet,
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
        let (mut lower, mut upper) = (Vec::new(), Vec::new());
        for c in (0..=MAX_CHAR).filter_map(char::from_u32) {
            let l = c.to_lowercase().next().unwrap_or(c);
            let u = c.to_uppercase().next().unwrap_or(c);
            if l != c {
                lower.push((c as u32, l as u32));
            }
            if u != c {
                upper.push((c as u32, u as u32));
            }
        }
        let ascii_lower = (u32::from(b'A')..=u32::from(b'Z'))
            .map(|c| (c, c + 32))
            .collect();
        let (lower, upper) = (Mapping::new(lower), Mapping::new(upper));
        Tables {
            cased: lower.changed.union(&upper.changed),
            lower,
            upper,
            ascii_lower: Mapping::new(ascii_lower),
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

    /// The value of a Unicode decimal digit (`Nd` digits come in runs of ten, 0 to 9).
    fn decimal_value(&self, c: u32) -> Option<u8> {
        let &(start, end) = self.digit.ranges.iter().find(|&&(a, b)| a <= c && c <= b)?;
        debug_assert!((end - start + 1) % 10 == 0);
        Some(((c - start) % 10) as u8)
    }
}

/// `re._casefix._EXTRA_CASES` of CPython 3.11: lower-case characters that share an upper case
/// without being each other's lower case. Under Unicode IGNORECASE each matches the others.
const EXTRA_CASES: &[&[u32]] = &[
    &[0x0069, 0x0131],
    &[0x0073, 0x017F],
    &[0x00B5, 0x03BC],
    &[0x0345, 0x03B9, 0x1FBE],
    &[0x0390, 0x1FD3],
    &[0x03B0, 0x1FE3],
    &[0x03B2, 0x03D0],
    &[0x03B5, 0x03F5],
    &[0x03B8, 0x03D1],
    &[0x03BA, 0x03F0],
    &[0x03C0, 0x03D6],
    &[0x03C1, 0x03F1],
    &[0x03C2, 0x03C3],
    &[0x03C6, 0x03D5],
    &[0x0432, 0x1C80],
    &[0x0434, 0x1C81],
    &[0x043E, 0x1C82],
    &[0x0441, 0x1C83],
    &[0x0442, 0x1C84, 0x1C85],
    &[0x044A, 0x1C86],
    &[0x0463, 0x1C87],
    &[0x1C88, 0xA64B],
    &[0x1E61, 0x1E9B],
    &[0xFB05, 0xFB06],
];

/// The characters `lo` gains from [`EXTRA_CASES`].
fn extra_cases(lo: u32) -> impl Iterator<Item = u32> {
    EXTRA_CASES
        .iter()
        .filter(move |group| group.contains(&lo))
        .flat_map(move |group| group.iter().copied().filter(move |&c| c != lo))
}

// ---------------------------------------------------------------------------------------------
// What one character-matching item matches, as Python's engine decides it.
// ---------------------------------------------------------------------------------------------

/// How `_sre` compares characters under the flags in effect (`re._compiler._compile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Sensitive,
    /// IGNORECASE with the `a` flag: `_sre.ascii_tolower`, no extra cases.
    Ascii,
    /// IGNORECASE on a `str` pattern: `_sre.unicode_tolower` and `re._casefix`.
    Unicode,
}

impl Case {
    fn of(flags: u32) -> Case {
        if flags & FLAG_IGNORECASE == 0 {
            Case::Sensitive
        } else if flags & FLAG_UNICODE != 0 {
            Case::Unicode
        } else {
            Case::Ascii
        }
    }

    /// The lower-casing the engine applies to the input, `None` when case-sensitive.
    fn lower(self) -> Option<&'static Mapping> {
        match self {
            Case::Sensitive => None,
            Case::Ascii => Some(&tables().ascii_lower),
            Case::Unicode => Some(&tables().lower),
        }
    }

    /// `_sre.ascii_iscased` / `_sre.unicode_iscased` for some character in `[a, b]`.
    fn any_cased(self, a: u32, b: u32) -> bool {
        match self {
            Case::Sensitive => false,
            Case::Ascii => CharSet::from_ranges(vec![(0x41, 0x5A), (0x61, 0x7A)]).intersects(a, b),
            Case::Unicode => tables().cased.intersects(a, b),
        }
    }

    fn is_cased(self, c: u32) -> bool {
        self.any_cased(c, c)
    }
}

/// `\d`, `\s`, `\w` and their negations: Unicode (`str.isdecimal`, `str.isspace`, letters,
/// numbers and `_`) or, under the `a` flag, ASCII.
fn category_set(category: Category, unicode: bool) -> CharSet {
    let t = tables();
    let set = match (category, unicode) {
        (Category::Digit | Category::NotDigit, true) => t.digit.clone(),
        (Category::Space | Category::NotSpace, true) => t.space.clone(),
        (Category::Word | Category::NotWord, true) => t.word.clone(),
        (Category::Digit | Category::NotDigit, false) => CharSet::range(0x30, 0x39),
        (Category::Space | Category::NotSpace, false) => {
            CharSet::from_ranges(vec![(0x09, 0x0D), (0x20, 0x20)])
        }
        (Category::Word | Category::NotWord, false) => {
            CharSet::from_ranges(vec![(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
        }
    };
    match category {
        Category::NotDigit | Category::NotSpace | Category::NotWord => set.complement(),
        _ => set,
    }
}

/// A literal: `LITERAL`, `LITERAL_(UNI_)IGNORE`, or `IN_UNI_IGNORE` for characters with extra
/// cases.
fn literal_set(c: u32, flags: u32) -> CharSet {
    let case = Case::of(flags);
    let Some(lower) = case.lower() else {
        return CharSet::from_points([c]);
    };
    if !case.is_cased(c) {
        return CharSet::from_points([c]);
    }
    let lo = lower.apply(c);
    let mut targets = vec![lo];
    if case == Case::Unicode {
        targets.extend(extra_cases(lo));
    }
    lower.preimage(&CharSet::from_points(targets))
}

/// The members of a set taken as written (`IN`), without a leading negation.
fn plain_set(items: &[SetItem], unicode: bool) -> CharSet {
    let mut ranges = Vec::new();
    let mut set = CharSet::default();
    for item in items {
        match *item {
            SetItem::Literal(c) => ranges.push((c, c)),
            SetItem::Range(a, b) => ranges.push((a, b)),
            SetItem::Category(cat) => set = set.union(&category_set(cat, unicode)),
            SetItem::Negate => {}
        }
    }
    set.union(&CharSet::from_ranges(ranges))
}

/// A character set (`IN`), following `re._compiler._optimize_charset` and `_sre`'s `charset()`:
/// without case-insensitivity (or when no member is cased) the members are taken as they are;
/// otherwise the input character is lower-cased and looked up in a map of the lower-cased BMP
/// members (plus their extra cases), non-BMP literals as written, non-BMP ranges with an
/// upper-case retry, and categories.
fn class_set(items: &[SetItem], flags: u32) -> CharSet {
    let unicode = flags & FLAG_UNICODE != 0;
    let (negate, items) = match items.split_first() {
        Some((SetItem::Negate, rest)) => (true, rest),
        _ => (false, items),
    };
    let finish = |set: CharSet| if negate { set.complement() } else { set };
    let case = Case::of(flags);
    let Some(lower) = case.lower() else {
        return finish(plain_set(items, unicode));
    };
    let mut charmap = Vec::new();
    let mut tail = Vec::new();
    let mut tail_ranges = Vec::new();
    let mut hascased = false;
    for item in items {
        match *item {
            SetItem::Literal(c) if lower.apply(c) > MAX_BMP => {
                tail.push((c, c));
                hascased = true;
            }
            SetItem::Literal(c) => {
                charmap.push((lower.apply(c), lower.apply(c)));
                hascased |= case.is_cased(c);
            }
            SetItem::Range(a, b) => {
                if a <= MAX_BMP {
                    charmap.extend(lower.image(a, b.min(MAX_BMP)).ranges);
                }
                if b > MAX_BMP {
                    tail_ranges.push((a, b));
                    hascased = true;
                } else if !hascased {
                    hascased = case.any_cased(a, b);
                }
            }
            SetItem::Category(cat) => tail.extend(category_set(cat, unicode).ranges),
            SetItem::Negate => {}
        }
    }
    if !hascased {
        return finish(plain_set(items, unicode));
    }
    let charmap = CharSet::from_ranges(charmap);
    let mut targets = charmap.clone();
    if case == Case::Unicode {
        let extra = EXTRA_CASES
            .iter()
            .flat_map(|group| group.iter().copied())
            .filter(|&c| charmap.contains(c))
            .flat_map(extra_cases);
        targets = targets.union(&CharSet::from_points(extra));
    }
    targets = targets.union(&CharSet::from_ranges(tail));
    for (a, b) in tail_ranges {
        // RANGE_UNI_IGNORE: the lower-cased input, or its (Unicode) upper case, in the range.
        let range = CharSet::range(a, b);
        targets = targets
            .union(&range)
            .union(&tables().upper.preimage(&range));
    }
    finish(lower.preimage(&targets))
}

/// `.`: anything but a newline, or anything under DOTALL.
fn any_set(flags: u32) -> CharSet {
    let all = CharSet::range(0, MAX_CHAR);
    if flags & FLAG_DOTALL != 0 {
        all
    } else {
        all.difference(&CharSet::from_points([u32::from(b'\n')]))
    }
}

/// `unicodedata.lookup` for the names known here (see the module docs): the printable ASCII
/// characters and the four non-ASCII characters that match ASCII letters under IGNORECASE.
/// Python compares names case-insensitively.
fn lookup_char_name(name: &str) -> Option<u32> {
    const SPECIAL: &[(&str, u32)] = &[
        ("KELVIN SIGN", 0x212A),
        ("LATIN CAPITAL LETTER I WITH DOT ABOVE", 0x130),
        ("LATIN SMALL LETTER DOTLESS I", 0x131),
        ("LATIN SMALL LETTER LONG S", 0x17F),
    ];
    /// The names of the printable ASCII characters that are neither letters nor digits.
    const PUNCTUATION: &str = "SPACE,EXCLAMATION MARK,QUOTATION MARK,NUMBER SIGN,DOLLAR SIGN,\
        PERCENT SIGN,AMPERSAND,APOSTROPHE,LEFT PARENTHESIS,RIGHT PARENTHESIS,ASTERISK,PLUS SIGN,\
        COMMA,HYPHEN-MINUS,FULL STOP,SOLIDUS,COLON,SEMICOLON,LESS-THAN SIGN,EQUALS SIGN,\
        GREATER-THAN SIGN,QUESTION MARK,COMMERCIAL AT,LEFT SQUARE BRACKET,REVERSE SOLIDUS,\
        RIGHT SQUARE BRACKET,CIRCUMFLEX ACCENT,LOW LINE,GRAVE ACCENT,LEFT CURLY BRACKET,\
        VERTICAL LINE,RIGHT CURLY BRACKET,TILDE";
    const DIGITS: &str = "ZERO,ONE,TWO,THREE,FOUR,FIVE,SIX,SEVEN,EIGHT,NINE";
    let name = name.to_ascii_uppercase();
    let position = |names: &str, name: &str| names.split(',').position(|n| n == name);
    let letter = |rest: &str| match rest.as_bytes() {
        [c @ b'A'..=b'Z'] => Some(u32::from(*c)),
        _ => None,
    };
    if let Some(&(_, code)) = SPECIAL.iter().find(|(n, _)| *n == name) {
        Some(code)
    } else if let Some(i) = position(PUNCTUATION, &name) {
        (0x20..0x7F_u32)
            .filter(|&c| !(c as u8).is_ascii_alphanumeric())
            .nth(i)
    } else if let Some(digit) = name.strip_prefix("DIGIT ") {
        position(DIGITS, digit).map(|i| 0x30 + i as u32)
    } else if let Some(rest) = name.strip_prefix("LATIN CAPITAL LETTER ") {
        letter(rest)
    } else {
        let rest = name.strip_prefix("LATIN SMALL LETTER ")?;
        letter(rest).map(|c| c + 32)
    }
}

// ---------------------------------------------------------------------------------------------
// Emission in fancy-regex syntax.
// ---------------------------------------------------------------------------------------------

/// Any character, newline included.
const ANY_CHAR: &str = r"[\x{0}-\x{10FFFF}]";

fn combine_flags(flags: u32, add: u32, del: u32) -> u32 {
    let mut flags = flags;
    if add & TYPE_FLAGS != 0 {
        flags &= !TYPE_FLAGS;
    }
    (flags | add) & !del
}

/// The pattern in fancy-regex syntax, anchored at the start as `re.match` is.
fn translate(parsed: &Parsed) -> String {
    let mut out = String::from(r"\A");
    emit_seq(&parsed.nodes, parsed.flags, &mut out);
    out
}

fn emit_seq(nodes: &[Node], flags: u32, out: &mut String) {
    for node in nodes {
        emit_node(node, flags, out);
    }
}

/// The inside of a group: a lone alternation needs no group of its own.
fn emit_body(nodes: &[Node], flags: u32, out: &mut String) {
    match nodes {
        [Node::Branch(items)] => emit_alternatives(items, flags, out),
        _ => emit_seq(nodes, flags, out),
    }
}

fn emit_alternatives(items: &[Vec<Node>], flags: u32, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        emit_seq(item, flags, out);
    }
}

/// `open`, the body, `)`.
fn emit_group(open: &str, body: &[Node], flags: u32, out: &mut String) {
    out.push_str(open);
    emit_body(body, flags, out);
    out.push(')');
}

fn emit_node(node: &Node, flags: u32, out: &mut String) {
    match node {
        Node::Literal(c) => emit_set(&literal_set(*c, flags), out),
        Node::NotLiteral(c) => emit_set(&literal_set(*c, flags).complement(), out),
        Node::In(items) => emit_set(&class_set(items, flags), out),
        Node::Any => emit_set(&any_set(flags), out),
        Node::At(at) => emit_at(*at, flags, out),
        Node::Repeat {
            kind,
            min,
            max,
            item,
        } => emit_repeat(*kind, (*min, *max), item, flags, out),
        Node::Subpattern {
            group,
            add_flags,
            del_flags,
            body,
        } => {
            let open = if group.is_some() { "(" } else { "(?:" };
            emit_group(
                open,
                body,
                combine_flags(flags, *add_flags, *del_flags),
                out,
            );
        }
        Node::Atomic(body) => emit_group("(?>", body, flags, out),
        Node::Branch(items) => {
            out.push_str("(?:");
            emit_alternatives(items, flags, out);
            out.push(')');
        }
        Node::Assert {
            behind: false,
            negate,
            body,
            ..
        } => emit_group(if *negate { "(?!" } else { "(?=" }, body, flags, out),
        Node::Assert {
            behind: true,
            negate,
            width,
            body,
        } => emit_lookbehind(*negate, *width, body, flags, out),
        Node::GroupRef(group) if flags & FLAG_IGNORECASE != 0 => {
            out.push_str(&format!(r"(?i:\{group})"));
        }
        Node::GroupRef(group) => out.push_str(&format!(r"\{group}")),
        Node::GroupRefExists { group, yes, no } => {
            out.push_str(&format!("(?({group})"));
            emit_seq(yes, flags, out);
            out.push('|');
            emit_seq(no.as_deref().unwrap_or_default(), flags, out);
            out.push(')');
        }
    }
}

/// A look-behind whose body is `width` characters wide (Python checks that the width is fixed):
/// go back that many characters, and match the body forward from there. This keeps fancy-regex
/// from having to size the body itself (back-references, conditionals, zero-width repeats).
fn emit_lookbehind(negate: bool, width: u128, body: &[Node], flags: u32, out: &mut String) {
    out.push_str(if negate { "(?<!" } else { "(?<=" });
    emit_group("(?=", body, flags, out);
    match width {
        0 => {}
        1 => out.push_str(ANY_CHAR),
        n => out.push_str(&format!("(?:(?=){ANY_CHAR}){{{n}}}")),
    }
    out.push(')');
}

fn emit_at(at: At, flags: u32, out: &mut String) {
    let multiline = flags & FLAG_MULTILINE != 0;
    match at {
        At::Beginning if multiline => out.push_str("(?m:^)"),
        At::Beginning | At::BeginningString => out.push_str(r"\A"),
        At::End if multiline => out.push_str("(?m:$)"),
        // At the end, or before a newline that ends the string.
        At::End => out.push_str(r"(?=\n?\z)"),
        At::EndString => out.push_str(r"\z"),
        At::Boundary | At::NonBoundary => {
            // Python's word characters; `\B` never matches in an empty string (CPython <= 3.13).
            let mut word = String::new();
            emit_set(
                &category_set(Category::Word, flags & FLAG_UNICODE != 0),
                &mut word,
            );
            let w = word.as_str();
            if at == At::Boundary {
                out.push_str(&format!("(?:(?<={w})(?!{w})|(?<!{w})(?={w}))"));
            } else {
                out.push_str(&format!(r"(?!\A\z)(?:(?<={w})(?={w})|(?<!{w})(?!{w}))"));
            }
        }
    }
}

/// Whether a back-reference or a conditional reads what groups captured.
fn reads_captures(nodes: &[Node]) -> bool {
    nodes.iter().any(|node| match node {
        Node::GroupRef(_) | Node::GroupRefExists { .. } => true,
        Node::Repeat { item: body, .. }
        | Node::Subpattern { body, .. }
        | Node::Atomic(body)
        | Node::Assert { body, .. } => reads_captures(body),
        Node::Branch(items) => items.iter().any(|item| reads_captures(item)),
        _ => false,
    })
}

/// Whether an item emits zero-width assertions only, or nothing (fancy-regex cannot repeat
/// those).
fn zero_width(nodes: &[Node]) -> bool {
    nodes.iter().all(|node| match node {
        Node::At(_) | Node::Assert { .. } => true,
        Node::Subpattern {
            group: None, body, ..
        } => zero_width(body),
        Node::Repeat { item, .. } => zero_width(item),
        _ => false,
    })
}

fn emit_repeat(
    kind: RepeatKind,
    (min, max): (u64, u64),
    item: &[Node],
    flags: u32,
    out: &mut String,
) {
    if item.is_empty() {
        // `(?:)*`, `(?:){3}`: the empty string, however often.
        return;
    }
    if max == 0 {
        // Never tried, but its groups exist (unset).
        out.push_str("(?:(?!)");
        emit_seq(item, flags, out);
        return out.push_str("|)");
    }
    if zero_width(item) {
        return emit_zero_width_repeat(kind, min, item, flags, out);
    }
    // Counted repeats run in the backtracking VM, which counts iterations instead of unrolling
    // them (`(?=)` is what sends them there); each iteration then also counts towards the
    // backtrack limit, which bounds nested counted repeats too.
    let counted = !matches!((min, max), (0, 1) | (0, MAXREPEAT) | (1, MAXREPEAT));
    if counted {
        out.push_str("(?:(?=)");
        emit_seq(item, flags, out);
        out.push(')');
    } else {
        emit_group("(?:", item, flags, out);
    }
    match (min, max) {
        (0, 1) => out.push('?'),
        (0, MAXREPEAT) => out.push('*'),
        (1, MAXREPEAT) => out.push('+'),
        (m, MAXREPEAT) => out.push_str(&format!("{{{m},}}")),
        (m, n) if m == n => out.push_str(&format!("{{{m}}}")),
        (m, n) => out.push_str(&format!("{{{m},{n}}}")),
    }
    match kind {
        RepeatKind::Greedy => {}
        RepeatKind::Lazy => out.push('?'),
        RepeatKind::Possessive => out.push('+'),
    }
}

/// A repeat of zero-width assertions: `_sre` stops repeating once an iteration matched the empty
/// string, and a zero-width assertion decides the same way each time, so the item is tried once
/// (`min > 0`) or is optional, tried first unless the repeat is lazy.
fn emit_zero_width_repeat(kind: RepeatKind, min: u64, item: &[Node], flags: u32, out: &mut String) {
    let (open, close) = match (min, kind) {
        (1.., _) => ("(?:", ")"),
        (0, RepeatKind::Greedy) => ("(?:", "|)"),
        (0, RepeatKind::Lazy) => ("(?:|", ")"),
        (0, RepeatKind::Possessive) => ("(?>", "|)"),
    };
    out.push_str(open);
    emit_seq(item, flags, out);
    out.push_str(close);
}

/// Appends a set as a class of `\x{..}` escapes, so no character is special to fancy-regex
/// (`[`, `&&`, `--`, `~~`, `[:alpha:]`, ... mean nothing here). Surrogates cannot occur in a
/// Rust string and are left out.
fn emit_set(set: &CharSet, out: &mut String) {
    use std::fmt::Write;
    let set = set.difference(&CharSet::range(0xD800, 0xDFFF));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pat(p: &str) -> LookupPattern {
        LookupPattern::new(p).unwrap_or_else(|e| panic!("{p:?} must be accepted: {e}"))
    }

    fn m(p: &str, id: &str) -> bool {
        pat(p)
            .matches(id)
            .unwrap_or_else(|e| panic!("{p:?} on {id:?}: {e}"))
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
        assert!(
            e.to_string().contains("Python's re module rejects it"),
            "{p:?}: {e}"
        );
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
    fn patterns_people_write() {
        assert!(m("^(?!tmp_)", "prod_db"));
        assert!(!m("^(?!tmp_)", "TMP_db"));
        assert!(m("^(?!.*_test$)", "db_prod"));
        assert!(!m("^(?!.*_test$)", "db_test"));
        assert!(m("^prod_(?!legacy)", "prod_api"));
        assert!(!m("^prod_(?!legacy)", "prod_legacy_api"));
        assert!(m(r"^(aws|gcp)_(?!sandbox)\w+$", "gcp_main"));
        assert!(!m(r"^(aws|gcp)_(?!sandbox)\w+$", "aws_sandbox1"));
        assert!(!m(r"^(aws|gcp)_(?!sandbox)\w+$", "aws_main-1"));
        assert!(m("^(?:team|shared)/(?!tmp)", "team/db"));
        assert!(!m("^(?:team|shared)/(?!tmp)", "shared/tmp_x"));
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
    fn look_around() {
        assert!(m("(?=db)", "db_x"));
        assert!(!m("(?=db)", "xdb"));
        // `re.match` starts at 0: there is nothing behind the first character.
        assert!(!m("(?<=a)b", "ab"));
        assert!(m("a(?<=a)b", "ab"));
        assert!(m(".(?<!a)b", "xb"));
        assert!(!m(".(?<!a)b", "Ab"));
        assert!(m("(?<!a)b", "b"));
        assert!(m(r"(a)b(?<=\1b)", "ab"));
        assert!(m(r"(a)?b(?<=(?(1)a|x)b)", "ab"));
        assert!(m("ab(?<=a(?:){3}b)", "ab"));
        assert!(m("(?=a)*b", "b"));
        assert!(!m("(?=a){2}b", "b"));
        assert!(m("(?:$)*a", "a"));
        python_rejects("(?<=a+)b", "look-behind requires fixed-width pattern");
    }

    #[test]
    fn back_references_and_conditionals() {
        assert!(m(r"(a)\1", "aA"));
        assert!(!m(r"(a)\1", "ab"));
        assert!(m("(?P<x>a)(?P=x)", "Aa"));
        assert!(m(r"(?-i:(a)\1)", "aa"));
        assert!(!m(r"(?-i:(a))(?-i:\1)", "aA"));
        assert!(!m(r"(a)|\1", "b"));
        assert!(m("(a)?(?(1)b|c)", "ab"));
        assert!(m("(a)?(?(1)b|c)", "c"));
        assert!(!m("(a)?(?(1)b|c)", "b"));
        assert!(m("(?P<n>a)?(?(n)b)c", "c"));
        python_rejects("(?(1)a|b)", "invalid group reference 1 at position 3");
    }

    #[test]
    fn atomic_groups_and_possessive_quantifiers() {
        assert!(m("(?>a+)b", "aab"));
        assert!(!m("(?>a+)ab", "aab"));
        assert!(!m("a*+a", "aaa"));
        assert!(m("a++b", "aab"));
        assert!(!m("a?+a$", "a"));
        assert!(m("(?:ab){1,2}+$", "abab"));
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
        assert!(!m("a{4294967294}", "aaa"));
        assert!(m(r"\w{1000}|x", "x"));
    }

    #[test]
    fn class_syntax_is_pythons() {
        assert!(m("[]a]", "]"));
        assert!(m("[]a]", "a"));
        assert!(m("[^]]", "x"));
        assert!(!m("[^]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[-a]", "-"));
        assert!(!m("[a-]", "b"));
        // What fancy-regex treats specially is plain here.
        assert!(m("[&&]", "&"));
        assert!(m("[a&&b]", "&"));
        assert!(m("[--a]", "-"));
        assert!(m("[%--]", "+"));
        assert!(m("[a~~b]", "~"));
        assert!(m("[a||b]", "|"));
        assert!(m("[[]", "["));
        assert!(m("[[:alpha:]]", ":]"));
        assert!(m("[[:alpha:]]", "a]"));
        assert!(!m("[[:alpha:]]", "b]"));
        // `\b` in a class is a backspace.
        assert!(m(r"[\b]", "\u{8}"));
        assert!(!m(r"[\b]", "b"));
        assert!(m(r"[\d_]+$", "12_3"));
        assert!(m(r"[\x41-\x43]", "b"));
        assert!(m(r"[^a-z]", "_"));
        assert!(!m(r"[^a-z]", "Q"));
        assert!(m(r"[\]]", "]"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"\d+$", "0123"));
        assert!(!m(r"\D", "1"));
        assert!(m(r"\w+$", "aws_db1"));
        assert!(!m(r"\W", "a"));
        assert!(m(r"\s", "\u{1c}"));
        assert!(m(r"a\b", "a-"));
        assert!(!m(r"a\b", "ab"));
        assert!(m(r"a\B", "ab"));
        // Python's word characters: `²` is one (a number), the regex crate's `\b` disagrees.
        assert!(!m(r"a\b", "a²"));
        assert!(m(r"a\b", "a\u{301}"));
        // CPython (up to 3.13): `\B` never matches in an empty string; `\b` neither.
        assert!(!m(r"\B", ""));
        assert!(!m(r"x?\B", ""));
        assert!(m(r"x?\B", "."));
        assert!(m(r"(?:\B|)x?", ""));
        assert!(!m(r"\b", ""));
        assert!(m(r"\Aaws", "aws"));
        // `$` also matches before a final newline, `\Z` only at the end.
        assert!(m("aws$", "aws\n"));
        assert!(!m("aws$", "aws\n\n"));
        assert!(m(r"aws\Z", "aws"));
        assert!(!m(r"aws\Z", "aws\n"));
        assert!(m(r"\x41", "a"));
        assert!(m(r"\u0041", "A"));
        assert!(m(r"\U00000041", "a"));
        assert!(m(r"\101", "A"));
        assert!(m(r"\0", "\0"));
        assert!(m(r"[\101]", "a"));
        assert!(m(r"\t\n\r\f\v\a", "\t\n\r\x0c\x0b\x07"));
        assert!(m(r"\.\-\/\+\=\@\ ", ".-/+=@ "));
        assert!(m(r"\é", "É"));
        assert!(m(r"\N{low line}\N{LATIN SMALL LETTER A}", "_A"));
        assert!(m(r"[\N{DIGIT ZERO}-\N{DIGIT NINE}]", "7"));
        assert!(m(r"\N{KELVIN SIGN}", "k"));
        let e = err(r"a\N{EM DASH}");
        assert_eq!(e.kind(), PatternErrorKind::Unsupported, "{e}");
        assert_eq!(e.position(), Some(1));
        assert!(e.to_string().contains(r"\N{EM DASH}"), "{e}");
    }

    #[test]
    fn bad_escapes_are_pythons_errors() {
        python_rejects(r"\q", "bad escape \\q at position 0");
        python_rejects(r"a\z", "bad escape \\z at position 1");
        python_rejects(r"[\A]", "bad escape \\A at position 1");
        python_rejects(r"\x4", "incomplete escape \\x4 at position 0");
        python_rejects(r"\U00110000", "bad escape \\U00110000");
        python_rejects(r"\400", "octal escape value \\400 outside of range 0-0o377");
        python_rejects("ab\\", "bad escape (end of pattern) at position 2");
        python_rejects(r"\1", "invalid group reference 1 at position 1");
        python_rejects(r"\N", "missing {");
    }

    #[test]
    fn groups_and_flags() {
        assert!(m("(?P<cloud>aws)_", "AWS_x"));
        assert!(m("a(?#a comment)b", "ab"));
        assert!(m("(?-i:aws)", "aws"));
        assert!(!m("(?-i:aws)", "AWS"));
        assert!(m("(?i:A)b", "aB"));
        assert!(m("(?s-i:a.)", "a\n"));
        assert!(!m("a.", "a\n"));
        assert!(m("(?s)a.", "a\n"));
        assert!(m("(?m)a$", "a\nb"));
        assert!(!m("a$", "a\nb"));
        assert!(m("(?m)a\n^b", "a\nb"));
        assert!(m("(?:a|)*b", "b"));
        assert!(m("(a){0}b", "b"));
        // Verbose: whitespace and comments are not part of the pattern.
        assert!(m("(?x) a b # c\n c", "abc"));
        assert!(m("(?x:a b)c", "abc"));
        assert!(m("(?-x:a b)", "a b"));
        // ASCII: case-insensitivity and classes are ASCII-only.
        assert!(m("k", "\u{212A}"));
        assert!(!m("(?a)k", "\u{212A}"));
        assert!(m("(?a)k", "K"));
        assert!(!m(r"(?a)\w", "é"));
        assert!(m(r"(?a:\w)é", "_É"));
        assert!(!m(r"(?a)é", "É"));
        // The deprecated template flag only forbids repeats.
        assert!(m("(?t)ab", "AB"));
        python_rejects(
            "(?t)a*",
            "internal: unsupported template operator MAX_REPEAT",
        );
    }

    #[test]
    fn python_syntax_errors() {
        python_rejects("a(b", "missing ), unterminated subpattern at position 1");
        python_rejects("a)b", "unbalanced parenthesis at position 1");
        python_rejects("*a", "nothing to repeat at position 0");
        python_rejects("a**", "multiple repeat at position 2");
        python_rejects(r"\b+", "nothing to repeat");
        python_rejects("[z-a]", "bad character range z-a at position 1");
        python_rejects("[a", "unterminated character set at position 0");
        python_rejects("a{2,1}", "min repeat greater than max repeat at position 2");
        python_rejects("a{4294967295}", "the repetition number is too large");
        python_rejects("(?<n>a)", "unknown extension ?<n at position 1");
        python_rejects("(?P<1>a)", "bad character in group name '1' at position 4");
        python_rejects("(?P=a)", "unknown group name 'a'");
        python_rejects(
            "(?L)a",
            "bad inline flags: cannot use 'L' flag with a str pattern",
        );
        python_rejects("(?i-i:a)", "bad inline flags: flag turned on and off");
        python_rejects(
            "a(?i)",
            "global flags not at the start of the expression at position 1",
        );
        python_rejects(
            "(a)(?(1)b|c|d)",
            "conditional backref with more than two branches",
        );
        python_rejects(r"(a\1)", "cannot refer to an open group");
        python_rejects(
            r"(a)(?<=\1(b)\2)",
            "cannot refer to group defined in the same lookbehind",
        );
        python_rejects("(?a)(?u)x", "ASCII and UNICODE flags are incompatible");
    }

    #[test]
    fn limits() {
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        assert_eq!(err(&long).kind(), PatternErrorKind::TooLarge);
        assert!(m(
            &"a".repeat(MAX_PATTERN_CHARS),
            &"a".repeat(MAX_PATTERN_CHARS)
        ));
        let nested =
            |n: usize, open: &str, close: &str| format!("{}a{}", open.repeat(n), close.repeat(n));
        assert_eq!(
            err(&nested(MAX_NESTING + 1, "(", ")")).kind(),
            PatternErrorKind::TooLarge
        );
        assert!(m(&nested(MAX_NESTING, "(", ")"), "a"));
        // The deepest translation: repeated look-behinds, `\B` inside.
        let deepest = format!(
            "a{}",
            nested(MAX_NESTING, "(?<=", r"\B)?").replace('a', r"a\B")
        );
        assert!(m(&deepest, "aa"), "{deepest}");
        // Long runs of wide classes fit.
        assert!(m(
            &r"\w".repeat(MAX_PATTERN_CHARS / 2),
            &"a".repeat(MAX_PATTERN_CHARS / 2)
        ));
    }

    #[test]
    fn catastrophic_backtracking_is_an_error_not_a_hang() {
        let id = format!("{}!", "a".repeat(64));
        for p in [
            r"(a|aa)+\1b",
            r"(?:a|aa)+(?<!a)$",
            r"((a)|aa)+(?(2)b|c)",
            r"(?:(?:(?:a?){100}){100}){100}b",
        ] {
            let started = Instant::now();
            let e = pat(p).matches(&id).expect_err(p);
            assert!(started.elapsed() < Duration::from_secs(5), "{p}");
            assert!(e.to_string().contains("backtracking"), "{e}");
        }
        // What needs no backtracking is decided in linear time, even where Python backtracks.
        assert!(!m("(a+)+$", &id));
        assert!(!m("(a|aa)+b", &id));
        assert!(!m("(?>(a|aa)+)b", &id));
    }

    /// The differences the module docs list, pinned (Python's answers in the comments).
    #[test]
    fn documented_differences() {
        // CPython 3.11: True (its possessive-repeat bug); documented equivalent: False.
        assert!(!m(r"(?:(a)|b)*+\1", "ab"));
        assert!(!m(r"(?>(?:(a)|b)*)\1", "ab"));
        // Back-references on non-ASCII ids: Python compares lower(), we fold.
        assert!(m(r"(.)\1", "ςσ")); // Python: False
        assert!(m(r"(.)\1", "µμ")); // Python: False
        assert!(!m(r"(.)\1", "\u{212A}k")); // Python: True
        assert!(!m(r"(.)\1", "İi")); // Python: True
        assert!(!m(r"(.)\1", "ſs")); // Python: False, as here
        assert!(m(r"(.)\1", "ǅǆ")); // Python: True, as here
    }

    #[test]
    fn case_insensitivity_is_pythons() {
        // Kelvin sign and k, long s and s, dotless i and i: Python's lower-case comparison.
        assert!(m("k", "\u{212A}"));
        assert!(m("\u{212A}", "k"));
        assert!(m("s", "\u{17F}"));
        assert!(m("\u{17F}", "S"));
        assert!(m("i", "\u{130}"));
        assert!(m("\u{131}", "I"));
        assert!(m("\u{130}", "i"));
        assert!(m("[\u{130}]", "I"));
        assert!(m("ß", "ẞ"));
        assert!(!m("ß", "ss"));
        assert!(m("[à-ÿ]", "À"));
        assert!(m("[a-z]", "\u{212A}"));
        assert!(!m("[^a]", "A"));
        assert!(m("σ", "ς"));
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
        for &(c, l) in &t.lower.pairs {
            assert_eq!(c <= MAX_BMP, l <= MAX_BMP, "{c:X} -> {l:X}");
        }
        // Each group of extra cases is lower-case and shares one upper case.
        for group in EXTRA_CASES {
            let upper: Vec<u32> = group.iter().map(|&c| t.upper.apply(c)).collect();
            assert!(upper.iter().all(|&u| u == upper[0]), "{group:X?}");
            assert!(group.iter().all(|&c| t.lower.apply(c) == c), "{group:X?}");
        }
        assert_eq!(t.decimal_value('٣' as u32), Some(3));
        assert_eq!(lookup_char_name("hyphen-minus"), Some(u32::from(b'-')));
        assert_eq!(lookup_char_name("TILDE"), Some(u32::from(b'~')));
        assert_eq!(
            lookup_char_name("LATIN SMALL LETTER Z"),
            Some(u32::from(b'z'))
        );
        assert_eq!(lookup_char_name("LATIN SMALL LETTER"), None);
    }

    #[test]
    fn translation_escapes_everything() {
        let p = pat("[&&][[:a:]]a.b");
        let s = p.regex.as_str();
        assert!(s.starts_with(r"\A"), "{s}");
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
        assert!(py_int("").is_none());
    }
}
