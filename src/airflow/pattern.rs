//! Lookup patterns with Python's `re.match(pattern, id, re.IGNORECASE)` semantics.
//!
//! Airflow's `SecretsManagerBackend` looks an id up only when `re.match(lookup_pattern, id,
//! re.IGNORECASE)` is not `None`. The operator decides the same way in two steps:
//!
//! 1. **A Python-syntax front end** (`Parser`): a port of CPython 3.11's `re._parser` (tokenizer,
//!    grammar, error messages and positions) plus the checks of `re._compiler` (look-behind
//!    width, the template flag), in Python's order. It translates as it parses: Python's group
//!    numbers (names become numbers), look-around, back-references, conditionals, atomic groups
//!    and possessive repeats map to fancy-regex's; flags (scoped or global), verbose mode and
//!    escapes (`\x`, `\u`, `\U`, octal, `\N{...}`) are resolved here.
//! 2. **fancy-regex is the engine**: the translation, compiled case-sensitively as `\A(?:...)`,
//!    tells whether a match starts at 0, all that `re.match(...) is not None` asks.
//!
//! ## Exact on ASCII ids
//!
//! Ids are Secrets Manager names: ASCII. On every ASCII id (control characters included) the
//! result is Python's, for every pattern Python accepts; other ids are refused ([`MatchError`]).
//! So each character item (literal, class, range, `.`, `\d`, `\s`, `\w`, negations) becomes the
//! class of the ASCII characters Python's engine matches with it under the flags in effect:
//!
//! - IGNORECASE (on unless `(?-i:...)`): Python compares lower cases plus `re._casefix`'s extra
//!   cases. On ASCII, a pattern character (alone, in a class, in a range) matches `x` when it is
//!   `x`, `x`'s other case, or, for `i`/`I`, `İ` or `ı`, for `s`/`S`, `ſ`, for `k`/`K`, the
//!   Kelvin sign; no other non-ASCII character matches an ASCII one. Under `a` only ASCII letters
//!   fold. Back-references compare ASCII case-insensitively, as Python's `lower()` does.
//! - `\d` is `0-9`, `\w` `[0-9A-Za-z_]`, `\s` `[\t\n\v\f\r ]` plus `\x1c`-`\x1f` unless `a`.
//! - `$` is the end or before a final newline (`(?m)`: before any newline), `\Z` the end, and
//!   `\B` never matches in an empty id (CPython up to 3.13).
//! - Repeats keep Python's bounds; counted ones run in fancy-regex's backtracking VM (never
//!   unrolled); a repeated zero-width item runs once or is optional, as in Python's engine.
//!   fancy-regex's optimizer, which can change what groups capture, runs only when nothing reads
//!   captures. A look-behind body has a fixed width: "that many characters back, the body
//!   matches forward".
//!
//! Left out, as they only matter for other ids: Unicode case mappings and categories, and
//! `_parse_sub`'s rewrites (common prefixes, single-character alternatives merged into a set).
//!
//! ## Refused: what Python refuses, with its message
//!
//! A pattern Python 3.11 rejects is rejected with its message and position
//! ([`PatternErrorKind::RejectedByPython`]); the Unicode-dependent checks (group names, `int()`
//! of group numbers, `\N{...}` names, `repr` in messages) use Unicode 14.0, as Python 3.11 does.
//! Patterns Python accepts are refused only for a `\N{...}` name alias (`\N{LINE FEED}`) or a
//! spelling that may be one (`\N{EMDASH}`) ([`PatternErrorKind::Unsupported`]: write
//! `\uXXXX`), and past [`MAX_PATTERN_CHARS`] or [`MAX_NESTING`] (fancy-regex nests 64 groups, a
//! Python group can take three) ([`PatternErrorKind::TooLarge`]).
//!
//! ## Known differences
//!
//! - Possessive repeats follow Python's documentation (`X*+` is `(?>X*)`), not a CPython 3.11 bug
//!   that leaves a group set by a failed last iteration: `(?:(a)|b)*+\1` matches `ab` there
//!   (`(?:(a)b|c)*+` raises `SystemError` on `abc`), `(?>(?:(a)|b)*)\1` does not; here neither.
//! - Other Python versions: the syntax, messages and Unicode version are 3.11's (global flags
//!   must lead the pattern; `(?<name>...)` is rejected, as up to 3.13).
//!
//! ## Backtracking is bounded
//!
//! Tenants write these patterns; `(a|aa)+\1b` backtracks exponentially in Python and here.
//! fancy-regex runs what needs no backtracking in linear time and the rest under a limit of
//! [`BACKTRACK_LIMIT`] steps: [`LookupPattern::matches`] reports a match that reaches it as a
//! [`MatchError`], never a hang or a silent "no match" (Python would take hours).

use std::collections::HashMap;
use std::sync::LazyLock;

use fancy_regex::{Error, Regex, RegexBuilder, RuntimeError};
use regex::Regex as Class;

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;
/// Deepest group nesting accepted.
pub const MAX_NESTING: usize = 20;
/// Backtracking steps one match may take (about a tenth of a second).
pub const BACKTRACK_LIMIT: usize = 1_000_000;

/// A lookup pattern with Python `re.match(pattern, id, re.IGNORECASE)` semantics.
#[derive(Debug, Clone)]
pub struct LookupPattern {
    python: String,
    regex: Regex,
}

impl LookupPattern {
    /// Parses `python_pattern` as Python's `re` module would and compiles it. Fails when Python
    /// rejects the pattern, and where the module docs say.
    pub fn new(python_pattern: &str) -> Result<Self, PatternError> {
        let large = |pos, d| PatternError::new(python_pattern, PatternErrorKind::TooLarge, pos, d);
        let (length, max) = (python_pattern.chars().count(), MAX_PATTERN_CHARS);
        if length > max {
            return Err(large(
                None,
                format!("it is {length} characters long; at most {max} are"),
            ));
        }
        let (translated, reads_captures, too_deep) = Parser::translate(python_pattern)?;
        if let Some(pos) = too_deep {
            let detail = format!("groups are nested more than {MAX_NESTING} levels deep");
            return Err(large(Some(pos), detail));
        }
        let regex = RegexBuilder::new(&translated)
            .optimize(!reads_captures)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| {
                large(
                    None,
                    format!("the regex engine refuses its translation ({e})"),
                )
            })?;
        let python = python_pattern.to_string();
        Ok(Self { python, regex })
    }

    /// Whether Python's `re.match(pattern, id, re.IGNORECASE)` returns a match. Fails when the
    /// id is not ASCII, and when the match needs more than [`BACKTRACK_LIMIT`] backtracking steps.
    pub fn matches(&self, id: &str) -> Result<bool, MatchError> {
        let why = match id.is_ascii().then(|| self.regex.is_match(id)) {
            Some(Ok(found)) => return Ok(found),
            None => "only ASCII ids (as Secrets Manager names are) are decided".to_string(),
            Some(Err(Error::RuntimeError(RuntimeError::BacktrackLimitExceeded))) => format!(
                "it needs more than {BACKTRACK_LIMIT} backtracking steps (catastrophic \
                 backtracking; Python's re would take very long on it too); simplify the pattern"
            ),
            Some(Err(e)) => e.to_string(),
        };
        let (pattern, id) = (shown(&self.python), shown(id));
        let message = format!("lookup pattern `{pattern}` cannot be decided on `{id}`: {why}");
        Err(MatchError { message })
    }

    /// The original (Python) pattern.
    pub fn as_python(&self) -> &str {
        &self.python
    }
}

/// Why a lookup pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// Python's `re` module itself rejects the pattern (Airflow would fail on it too).
    RejectedByPython,
    /// A `\N{...}` name alias, or a spelling that may be one; Python may accept it.
    Unsupported,
    /// The pattern exceeds a size limit (length, nesting, the engine's limits).
    TooLarge,
}

/// The pattern (or id) as shown in messages: long ones are cut.
fn shown(text: &str) -> String {
    match text.chars().count() {
        ..=80 => text.to_string(),
        _ => text.chars().take(77).chain("...".chars()).collect(),
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
        let pattern = shown(pattern);
        let at = position
            .map(|p| format!(" at position {p}"))
            .unwrap_or_default();
        let message = match kind {
            PatternErrorKind::RejectedByPython => format!(
                "invalid lookup pattern `{pattern}`: Python's re module rejects it: {detail}{at}"
            ),
            PatternErrorKind::Unsupported => format!(
                "unsupported lookup pattern `{pattern}`: {detail}{at} is a name alias or a \
                 spelling not known here; write the character as \\uXXXX"
            ),
            PatternErrorKind::TooLarge => {
                format!("lookup pattern `{pattern}` is too large: {detail}{at}")
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

/// A match that could not be decided: a non-ASCII id, or too much backtracking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MatchError {
    message: String,
}

/// `MAXREPEAT` (an unbounded repeat's maximum) and `MAXGROUPS` of CPython's `_sre`.
const MAXREPEAT: u64 = 4_294_967_295;
const MAXGROUPS: u64 = 1_073_741_823;
/// `re._parser.MAXWIDTH` and `re._compiler.MAXCODE`.
const MAXWIDTH: u128 = 1 << 64;
const MAXCODE: u128 = (1 << 32) - 1;
// Flag bits, as in re._constants: the flag letter `FLAGS[n]` is bit `1 << n` (4 is `L`; 128 is
// `DEBUG`, which has no letter).
const FLAGS: &str = "tiLmsux_a";
const TEMPLATE: u32 = 1;
const IGNORECASE: u32 = 2;
const MULTILINE: u32 = 8;
const DOTALL: u32 = 16;
const UNICODE: u32 = 32;
const VERBOSE: u32 = 64;
const ASCII: u32 = 256;
const TYPE_FLAGS: u32 = ASCII | 4 | UNICODE;
/// Any ASCII character, for look-behinds.
const ANY: &str = r"[\x{0}-\x{7F}]";

/// `raise source.error(msg, offset)`: Python's error `msg` (format arguments), at `offset`
/// characters before the tokenizer's position, or `at` a position.
macro_rules! fail {
    ($p:expr, at $pos:expr => $($msg:tt)+) => {
        return Err($p.python(Some($pos), format!($($msg)+)))
    };
    ($p:expr, $offset:expr => $($msg:tt)+) => {
        return Err($p.python(Some($p.tell().saturating_sub($offset)), format!($($msg)+)))
    };
}

/// [`fail!`] unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fail:tt)+) => {
        if !$cond {
            fail!($($fail)+)
        }
    };
}

/// Python's `len` of a string.
fn len(s: &str) -> usize {
    s.chars().count()
}

/// The character after the backslash of an escape token.
fn esc(token: &str) -> Option<char> {
    token.strip_prefix('\\')?.chars().next()
}

/// `FLAGS[token]`.
fn flag(token: &str) -> Option<u32> {
    FLAGS.find(token).filter(|_| token != "_").map(|n| 1 << n)
}

/// A translated item, sequence or alternation: its fancy-regex text (empty where Python splices
/// the item away), and what Python's checks and the translation of repeats need to know.
#[derive(Debug, Default)]
struct Item {
    re: String,
    /// `getwidth()`: the fewest and the most characters it matches.
    width: (u128, u128),
    /// Only zero-width assertions, or nothing.
    zero: bool,
    /// The first error `re._compiler` raises in it.
    err: Option<String>,
    /// Python's error for a repeat of it: an anchor's, a repeat's.
    unrepeatable: Option<&'static str>,
}

fn item(re: String, width: (u128, u128)) -> Item {
    Item {
        re,
        width,
        ..Item::default()
    }
}

impl Item {
    /// A character item: the ASCII characters (bit `c` for `c`) it matches.
    fn set(mask: u128) -> Item {
        let bit = |c: u32| c < 128 && mask >> c & 1 == 1;
        let mut class = String::new();
        for c in (0..128).filter(|&c| bit(c)) {
            if c == 0 || !bit(c - 1) {
                class += &format!(r"\x{{{c:X}}}-");
            }
            if !bit(c + 1) {
                class += &format!(r"\x{{{c:X}}}");
            }
        }
        let class = if mask == 0 {
            r"^\x{0}-\x{10FFFF}"
        } else {
            &class
        };
        item(format!("[{class}]"), (1, 1))
    }

    fn at(re: &str) -> Item {
        let unrepeatable = Some("nothing to repeat");
        Item {
            zero: true,
            unrepeatable,
            ..item(re.into(), (0, 0))
        }
    }

    /// A sequence (`SubPattern`), or alternatives (`BRANCH`) when `alt`.
    fn join(items: Vec<Item>, alt: bool) -> Item {
        let mut all = item(String::new(), (if alt { MAXWIDTH } else { 0 }, 0));
        let mut re = vec![];
        all.zero = !alt;
        for i in items {
            let ((lo, hi), (l, h)) = (all.width, i.width);
            all.width = if alt {
                (lo.min(l), hi.max(h))
            } else {
                (lo + l, hi + h)
            };
            (all.zero, all.err) = (all.zero && i.zero, all.err.or(i.err));
            re.push(i.re);
        }
        all.width = (all.width.0.min(MAXWIDTH), all.width.1.min(MAXWIDTH));
        all.re = re.join(if alt { "|" } else { "" });
        all
    }

    /// A group opened with `open` (`(`, `(?:` or `(?>`); `plain` when Python splices it away.
    fn group(open: &str, body: Item, plain: bool) -> Item {
        let re = match plain && body.re.is_empty() {
            true => String::new(),
            false => format!("{open}{})", body.re),
        };
        let (zero, err) = (open == "(?:" && body.zero, body.err);
        Item {
            zero,
            err,
            ..item(re, body.width)
        }
    }

    /// `item` repeated `min` to `max` times, greedily (`mode` 0), lazily (1) or possessively (2).
    fn repeat(item: Item, (min, max): (u64, u64), mode: usize, template: bool) -> Item {
        let x = &item.re;
        let re = if x.is_empty() {
            String::new()
        } else if max == 0 {
            // Never tried, but its groups exist (unset).
            format!("(?:(?!){x}|)")
        } else if item.zero {
            // `_sre` stops after an iteration that matched nothing, and an assertion decides the
            // same way each time: once (`min > 0`), or optional, first tried unless lazy.
            match (min, mode) {
                (1.., _) => format!("(?:{x})"),
                (0, 0) => format!("(?:{x}|)"),
                (0, 1) => format!("(?:|{x})"),
                _ => format!("(?>{x}|)"),
            }
        } else {
            let bounds = match (min, max) {
                (0, 1) => "?".to_string(),
                (0, MAXREPEAT) => "*".to_string(),
                (1, MAXREPEAT) => "+".to_string(),
                (m, MAXREPEAT) => format!("{{{m},}}"),
                (m, n) => format!("{{{m},{n}}}"),
            };
            // `(?=)` keeps counted repeats in the backtracking VM, which counts the iterations
            // (and the backtracking steps) instead of unrolling them.
            let atom = match bounds.starts_with('{') {
                true => format!("(?:(?=){x})"),
                false => x.clone(),
            };
            format!("{atom}{bounds}{}", ["", "?", "+"][mode])
        };
        let op = ["MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"][mode];
        let template = template.then(|| format!("internal: unsupported template operator {op}"));
        let (lo, hi) = item.width;
        let hi = match max == MAXREPEAT && hi != 0 {
            true => MAXWIDTH,
            false => hi * u128::from(max),
        };
        Item {
            re,
            width: (lo * u128::from(min), hi),
            zero: item.zero,
            err: template.or(item.err),
            unrepeatable: Some("multiple repeat"),
        }
    }

    /// A look-ahead or look-behind opened with `open`; a look-behind becomes "`lo` characters
    /// back, the body matches forward".
    fn look(open: &str, body: Item) -> Item {
        let (lo, hi) = body.width;
        let (re, err) = match open.len() {
            3 => (format!("{open}{})", body.re), body.err),
            _ => (
                format!("{open}(?={})(?:(?=){ANY}){{{lo}}})", body.re),
                match (lo > MAXCODE, lo != hi) {
                    (true, _) => Some("looks too much behind".to_string()),
                    (_, true) => Some("look-behind requires fixed-width pattern".to_string()),
                    _ => body.err,
                },
            ),
        };
        Item {
            zero: true,
            err,
            ..item(re, (0, 0))
        }
    }
}

/// `re._parser`'s `Tokenizer` and `State`, translating as it goes.
#[derive(Default)]
struct Parser<'a> {
    pattern: &'a str,
    chars: Vec<char>,
    index: usize,
    /// The next token: a character, or a backslash and the character after it.
    next: Option<String>,
    /// The flags in effect: the global ones, changed by the scoped flags of enclosing groups.
    flags: u32,
    names: HashMap<String, usize>,
    /// `groupwidths`: one per group (group 0 included), `None` while the group is open.
    widths: Vec<Option<(u128, u128)>>,
    lookbehind: Option<usize>,
    grouprefpos: Vec<(u64, usize)>,
    depth: usize,
    too_deep: Option<usize>,
    reads_captures: bool,
}

type PResult<T> = Result<T, PatternError>;

impl Parser<'_> {
    /// `re._parser.parse(pattern, re.IGNORECASE)` and `re._compiler.compile`'s checks: the
    /// translation, whether it reads captures, and where groups nest too deeply.
    fn translate(pattern: &str) -> PResult<(String, bool, Option<usize>)> {
        let (chars, flags, widths) = (pattern.chars().collect(), IGNORECASE, vec![None]);
        let mut p = Parser {
            pattern,
            chars,
            flags,
            widths,
            ..Parser::default()
        };
        p.advance()?;
        let body = p.alternation(true)?;
        if p.flags & ASCII != 0 && p.flags & UNICODE != 0 {
            return Err(p.python(None, "ASCII and UNICODE flags are incompatible".into()));
        }
        ensure!(p.next.is_none(), p, 0 => "unbalanced parenthesis");
        let groups = p.widths.len() as u64;
        if let Some(&(g, pos)) = p.grouprefpos.iter().find(|(g, _)| *g >= groups) {
            fail!(p, at pos => "invalid group reference {g}");
        }
        match body.err {
            Some(msg) => Err(p.python(None, msg)),
            None => Ok((format!(r"\A(?:{})", body.re), p.reads_captures, p.too_deep)),
        }
    }

    fn python(&self, pos: Option<usize>, msg: String) -> PatternError {
        PatternError::new(self.pattern, PatternErrorKind::RejectedByPython, pos, msg)
    }

    /// `__next`: a trailing backslash is reported as soon as the token before it is consumed.
    fn advance(&mut self) -> PResult<()> {
        let i = self.index;
        self.next = match (self.chars.get(i), self.chars.get(i + 1)) {
            (None, _) => None,
            (Some('\\'), Some(c)) => Some(format!("\\{c}")),
            (Some('\\'), None) => fail!(self, at i => "bad escape (end of pattern)"),
            (Some(c), _) => Some(c.to_string()),
        };
        self.index += self.next.as_deref().map_or(0, len);
        Ok(())
    }

    fn get(&mut self) -> PResult<Option<String>> {
        let this = self.next.take();
        self.advance()?;
        Ok(this)
    }

    fn peek(&self, token: &str) -> bool {
        self.next.as_deref() == Some(token)
    }

    /// `match`.
    fn eat(&mut self, token: &str) -> PResult<bool> {
        let hit = self.peek(token);
        if hit {
            self.advance()?;
        }
        Ok(hit)
    }

    fn tell(&self) -> usize {
        self.index - self.next.as_deref().map_or(0, len)
    }

    /// `getwhile`: up to `n` (unescaped) characters `accept`s.
    fn getwhile(&mut self, n: usize, accept: fn(&char) -> bool) -> PResult<String> {
        let mut out = String::new();
        while let Some(c) = self.next.as_ref().and_then(|t| t.chars().next()) {
            if !accept(&c) || out.len() == n {
                break;
            }
            out.push(c);
            self.advance()?;
        }
        Ok(out)
    }

    fn getuntil(&mut self, end: &str, what: &str) -> PResult<String> {
        let mut name = String::new();
        loop {
            match self.get()? {
                None if name.is_empty() => fail!(self, 0 => "missing {what}"),
                None => fail!(self, len(&name) => "missing {end}, unterminated name"),
                Some(t) if t == end && name.is_empty() => fail!(self, 1 => "missing {what}"),
                Some(t) if t == end => return Ok(name),
                Some(t) => name += &t,
            }
        }
    }

    /// The `)` that closes a group opened at `start`.
    fn close(&mut self, start: usize) -> PResult<()> {
        let offset = self.tell() - start;
        ensure!(self.eat(")")?, self, offset => "missing ), unterminated subpattern");
        Ok(())
    }

    /// A group name up to `end`, and `checkgroupname`.
    fn name(&mut self, end: &str) -> PResult<String> {
        let name = self.getuntil(end, "group name")?;
        let (offset, shown) = (len(&name) + 1, repr(&name));
        ensure!(IDENTIFIER.is_match(&name), self, offset => "bad character in group name {shown}");
        Ok(name)
    }

    fn closed(&self, gid: usize) -> bool {
        self.widths.get(gid).is_some_and(Option::is_some)
    }

    /// `checklookbehindgroup`.
    fn check_lookbehind(&self, gid: usize) -> PResult<()> {
        if let Some(first) = self.lookbehind {
            ensure!(self.closed(gid), self, 0 => "cannot refer to an open group");
            let same = "cannot refer to group defined in the same lookbehind subpattern";
            ensure!(gid < first, self, 0 => "{same}");
        }
        Ok(())
    }

    /// A back-reference to group `gid`, whose reference ends `offset` characters back.
    fn reference(&mut self, gid: usize, offset: usize) -> PResult<Item> {
        ensure!(self.closed(gid), self, offset => "cannot refer to an open group");
        self.check_lookbehind(gid)?;
        self.reads_captures = true;
        let re = match self.flags & IGNORECASE {
            0 => format!(r"\{gid}"),
            _ => format!(r"(?i:\{gid})"),
        };
        Ok(item(re, self.widths[gid].unwrap_or_default()))
    }

    /// The ASCII characters a pattern character in `lo..=hi` matches under the flags in effect.
    fn chars(&self, lo: u32, hi: u32) -> u128 {
        let fold = self.flags & IGNORECASE != 0;
        let unicode = fold && self.flags & ASCII == 0;
        let matches = |x: u8| {
            let extra: &[u32] = match x.to_ascii_lowercase() {
                b'i' if unicode => &[0x130, 0x131],
                b's' if unicode => &[0x17F],
                b'k' if unicode => &[0x212A],
                _ => &[],
            };
            let cases = [x, x.to_ascii_lowercase(), x.to_ascii_uppercase()].map(u32::from);
            let mut cases = cases[..if fold { 3 } else { 1 }].iter().chain(extra);
            cases.any(|c| (lo..=hi).contains(c))
        };
        (0..128).filter(|&x| matches(x)).fold(0, |m, x| m | 1 << x)
    }

    /// `\d`, `\D`, `\s`, `\S`, `\w`, `\W`.
    fn category(&self, c: char) -> u128 {
        let range = |a: u8, b: u8| (u128::MAX >> (127 - b)) & (u128::MAX << a);
        let set = match c.to_ascii_lowercase() {
            'd' => range(b'0', b'9'),
            's' if self.flags & ASCII != 0 => range(9, 13) | 1 << b' ',
            's' => range(9, 13) | range(0x1C, 0x1F) | 1 << b' ',
            _ => range(b'0', b'9') | range(b'A', b'Z') | range(b'a', b'z') | 1 << b'_',
        };
        if c.is_ascii_uppercase() { !set } else { set }
    }

    fn literal(&self, code: u32) -> Item {
        Item::set(self.chars(code, code))
    }

    /// `_parse_sub`: alternatives.
    fn alternation(&mut self, top: bool) -> PResult<Item> {
        let mut branches = vec![self.sequence(top)?];
        while self.eat("|")? {
            branches.push(self.sequence(false)?);
        }
        match branches.len() {
            1 => Ok(branches.remove(0)),
            _ => Ok(Item::join(branches, true)),
        }
    }

    /// `_parse`: a sequence of items; `first` where global flags may appear.
    fn sequence(&mut self, first: bool) -> PResult<Item> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(this) = self.next.clone().filter(|t| t != "|" && t != ")") {
            let start = self.tell();
            self.advance()?;
            if self.flags & VERBOSE != 0 && " \t\n\r\x0b\x0c#".contains(&this) {
                while this == "#" && self.get()?.is_some_and(|t| t != "\n") {}
                continue;
            }
            let multiline = self.flags & MULTILINE != 0;
            let item = match (esc(&this), this.as_str()) {
                (Some(c), _) => self.escape(c)?,
                (_, "[") => self.class()?,
                (_, "*" | "+" | "?" | "{") => {
                    self.repeat(&this, &mut items)?;
                    continue;
                }
                (_, ".") if self.flags & DOTALL != 0 => Item::set(u128::MAX),
                (_, ".") => Item::set(!(1 << b'\n')),
                (_, "(") => {
                    self.depth += 1;
                    let group = self.group(start, first && items.is_empty())?;
                    self.depth -= 1;
                    let Some(item) = group else { continue };
                    item
                }
                (_, "^") => Item::at(if multiline { "(?m:^)" } else { r"\A" }),
                (_, "$") => Item::at(if multiline { "(?m:$)" } else { r"(?=\n?\z)" }),
                (_, c) => self.literal(c.chars().next().unwrap_or_default() as u32),
            };
            items.push(item);
        }
        Ok(Item::join(items, false))
    }

    /// A quantifier (`this` is `*`, `+`, `?` or `{`) on the last item; a `{` that does not start
    /// a valid repeat is a literal.
    fn repeat(&mut self, this: &str, items: &mut Vec<Item>) -> PResult<()> {
        let here = self.tell();
        let bounds = match this {
            "?" => (0, 1),
            "*" => (0, MAXREPEAT),
            "+" => (1, MAXREPEAT),
            _ => match self.bounds()? {
                Some(bounds) => bounds,
                None => {
                    items.push(self.literal('{' as u32));
                    self.index = here;
                    return self.advance();
                }
            },
        };
        let offset = self.tell() - here + 1;
        let item = items.pop();
        let refused = item
            .as_ref()
            .map_or(Some("nothing to repeat"), |i| i.unrepeatable);
        let (Some(item), None) = (item, refused) else {
            fail!(self, offset => "{}", refused.unwrap_or_default())
        };
        let mode = match self.eat("?")? {
            true => 1,
            false => 2 * usize::from(self.eat("+")?),
        };
        items.push(Item::repeat(item, bounds, mode, self.flags & TEMPLATE != 0));
        Ok(())
    }

    /// After `{`: the bounds of `{m,n}`, or `None` when the `{` is a literal.
    fn bounds(&mut self) -> PResult<Option<(u64, u64)>> {
        let here = self.tell();
        if self.peek("}") {
            return Ok(None);
        }
        let lo = self.getwhile(usize::MAX, char::is_ascii_digit)?;
        let hi = match self.eat(",")? {
            true => self.getwhile(usize::MAX, char::is_ascii_digit)?,
            false => lo.clone(),
        };
        if !self.eat("}")? {
            return Ok(None);
        }
        // `int(digits)`, which must be below MAXREPEAT.
        let count = |digits: &str, empty| match digits.parse::<u128>() {
            _ if digits.is_empty() => Ok(empty),
            Ok(n) if n < MAXREPEAT.into() => Ok(n as u64),
            _ => Err(self.python(None, "the repetition number is too large".into())),
        };
        let (min, max) = (count(&lo, 0)?, count(&hi, MAXREPEAT)?);
        ensure!(max >= min, self, at here => "min repeat greater than max repeat");
        Ok(Some((min, max)))
    }

    /// Everything after a `(` at `start`: `None` for a comment or global flags.
    fn group(&mut self, start: usize, first: bool) -> PResult<Option<Item>> {
        if self.depth > MAX_NESTING {
            self.too_deep.get_or_insert(start);
        }
        let (mut open, mut name, mut scoped) = ("(", None, None);
        if self.eat("?")? {
            let Some(t) = self.get()? else {
                fail!(self, 0 => "unexpected end of pattern")
            };
            match t.as_str() {
                "P" if self.eat("<")? => name = Some(self.name(">")?),
                "P" if self.eat("=")? => {
                    let name = self.name(")")?;
                    let (offset, shown) = (len(&name) + 1, repr(&name));
                    let Some(&gid) = self.names.get(&name) else {
                        fail!(self, offset => "unknown group name {shown}")
                    };
                    return self.reference(gid, offset).map(Some);
                }
                "P" => match self.get()? {
                    None => fail!(self, 0 => "unexpected end of pattern"),
                    Some(t) => fail!(self, len(&t) + 2 => "unknown extension ?P{t}"),
                },
                ":" => open = "(?:",
                ">" => open = "(?>",
                "#" => loop {
                    let offset = self.tell() - start;
                    ensure!(self.next.is_some(), self, offset => "missing ), unterminated comment");
                    if self.get()?.is_some_and(|t| t == ")") {
                        return Ok(None);
                    }
                },
                "=" => open = "(?=",
                "!" => open = "(?!",
                "<" => match self.get()?.as_deref() {
                    Some("=") => open = "(?<=",
                    Some("!") => open = "(?<!",
                    None => fail!(self, 0 => "unexpected end of pattern"),
                    Some(t) => fail!(self, len(t) + 2 => "unknown extension ?<{t}"),
                },
                "(" => return self.conditional(start).map(Some),
                _ if t == "-" || flag(&t).is_some() => match self.parse_flags(t)? {
                    Some(flags) => (open, scoped) = ("(?:", Some(flags)),
                    None if first => return Ok(None),
                    None => {
                        fail!(self, at start => "global flags not at the start of the expression")
                    }
                },
                _ => fail!(self, len(&t) + 1 => "unknown extension ?{t}"),
            }
        }
        let gid = self.widths.len();
        if open == "(" {
            self.widths.push(None);
        }
        if let Some(n) = &name
            && let Some(was) = self.names.insert(n.clone(), gid)
        {
            let (offset, n) = (len(n) + 1, repr(n));
            fail!(self, offset => "redefinition of group name {n} as group {gid}; was group {was}");
        }
        let outer = (self.flags, self.lookbehind);
        if let Some((add, del)) = scoped {
            let kept = match add & TYPE_FLAGS {
                0 => outer.0,
                _ => outer.0 & !TYPE_FLAGS,
            };
            self.flags = (kept | add) & !del;
        }
        if open.starts_with("(?<") {
            self.lookbehind.get_or_insert(self.widths.len());
        }
        let body = self.alternation(false)?;
        (self.flags, self.lookbehind) = outer;
        self.close(start)?;
        if open == "(" {
            self.widths[gid] = Some(body.width);
        }
        let plain = open == "(?:" && scoped.is_none();
        Ok(Some(match open {
            "(" | "(?:" | "(?>" => Item::group(open, body, plain),
            _ => Item::look(open, body),
        }))
    }

    /// `_parse_flags` from `t`, a flag or `-`: `None` for global flags (now in effect), else the
    /// scoped flags turned on and off.
    fn parse_flags(&mut self, t: String) -> PResult<Option<(u32, u32)>> {
        let (bad, types) = ("bad inline flags:", "flags 'a', 'u' and 'L'");
        let (mut add, mut del, mut next) = (0, 0, flag(&t).ok_or(t));
        while let Ok(flag) = next {
            ensure!(flag != 4, self, 0 => "{bad} cannot use 'L' flag with a str pattern");
            add |= flag;
            let clash = flag & TYPE_FLAGS != 0 && add & TYPE_FLAGS != flag;
            ensure!(!clash, self, 0 => "{bad} {types} are incompatible");
            next = self.next_flag(&[")", "-", ":"], "missing -, : or )")?;
        }
        let end = next.err().unwrap_or_default();
        if end == ")" {
            self.flags |= add;
            return Ok(None);
        }
        ensure!(add & TEMPLATE == 0, self, 1 => "{bad} cannot turn on global flag");
        if end == "-" {
            next = self.next_flag(&[], "missing flag")?;
            while let Ok(flag) = next {
                ensure!(flag & TYPE_FLAGS == 0, self, 0 => "{bad} cannot turn off {types}");
                del |= flag;
                next = self.next_flag(&[":"], "missing :")?;
            }
        }
        ensure!(del & TEMPLATE == 0, self, 1 => "{bad} cannot turn off global flag");
        ensure!(add & del == 0, self, 1 => "{bad} flag turned on and off");
        Ok(Some((add, del)))
    }

    /// The next token of inline flags: a flag, or (`Err`) one of `ends`; Python's error else.
    fn next_flag(&mut self, ends: &[&str], missing: &str) -> PResult<Result<u32, String>> {
        let Some(t) = self.get()? else {
            fail!(self, 0 => "{missing}")
        };
        if ends.contains(&t.as_str()) {
            return Ok(Err(t));
        }
        match flag(&t) {
            Some(flag) => Ok(Ok(flag)),
            None if t.chars().all(|c| is(&ALPHA, c)) => fail!(self, len(&t) => "unknown flag"),
            None => fail!(self, len(&t) => "{missing}"),
        }
    }

    /// After `(?(`: a conditional `(?(group)yes|no)`.
    fn conditional(&mut self, start: usize) -> PResult<Item> {
        let name = self.getuntil(")", "group name")?;
        let (offset, shown) = (len(&name) + 1, repr(&name));
        let named = IDENTIFIER.is_match(&name);
        let gid = match py_int(&name) {
            _ if named => match self.names.get(&name) {
                Some(&gid) => gid,
                None => fail!(self, offset => "unknown group name {shown}"),
            },
            Some(n) if n == "0" => fail!(self, offset => "bad group number"),
            Some(n) if !n.starts_with('-') => match n.parse::<u64>() {
                Ok(gid) if gid < MAXGROUPS => gid as usize,
                _ => fail!(self, offset => "invalid group reference {n}"),
            },
            _ => fail!(self, offset => "bad character in group name {shown}"),
        };
        if !named && self.grouprefpos.iter().all(|&(g, _)| g != gid as u64) {
            self.grouprefpos.push((gid as u64, self.tell() - offset));
        }
        self.check_lookbehind(gid)?;
        self.reads_captures = true;
        let yes = self.sequence(false)?;
        let no = match self.eat("|")? {
            true => self.sequence(false)?,
            false => Item::default(),
        };
        let many = "conditional backref with more than two branches";
        ensure!(!self.peek("|"), self, 0 => "{many}");
        self.close(start)?;
        let width = (yes.width.0.min(no.width.0), yes.width.1.max(no.width.1));
        let re = format!("(?({gid}){}|{})", yes.re, no.re);
        let err = yes.err.or(no.err);
        Ok(Item {
            err,
            ..item(re, width)
        })
    }

    /// `_escape`: an escape outside a class.
    fn escape(&mut self, c: char) -> PResult<Item> {
        match c {
            'A' => return Ok(Item::at(r"\A")),
            'Z' => return Ok(Item::at(r"\z")),
            'b' => return Ok(Item::at(r"\b")),
            // CPython up to 3.13: never in an empty string.
            'B' => return Ok(Item::at(r"(?!\A\z)\B")),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => return Ok(Item::set(self.category(c))),
            '1'..='9' => {}
            _ => {
                let code = self.char_escape(c)?;
                return Ok(self.literal(code));
            }
        }
        // An octal escape of three digits, or a group reference.
        let (mut escape, oct) = (format!("\\{c}"), |c: &char| ('0'..='7').contains(c));
        let digit = |p: &Self| p.next.as_ref().and_then(|t| t.chars().next());
        if let Some(d) = digit(self).filter(char::is_ascii_digit) {
            self.advance()?;
            escape.push(d);
            if oct(&c) && oct(&d) && digit(self).is_some_and(|n| oct(&n)) {
                escape += &self.getwhile(1, oct)?;
                return Ok(self.literal(self.octal(&escape)?));
            }
        }
        let gid: usize = escape[1..].parse().unwrap_or_default();
        let offset = escape.len();
        ensure!(gid < self.widths.len(), self, offset - 1 => "invalid group reference {gid}");
        self.reference(gid, offset)
    }

    /// The value of an octal escape (just read).
    fn octal(&self, escape: &str) -> PResult<u32> {
        let code = u32::from_str_radix(&escape[1..], 8).unwrap_or(u32::MAX);
        let msg = format!("octal escape value {escape} outside of range 0-0o377");
        ensure!(code <= 0o377, self, escape.len() => "{msg}");
        Ok(code)
    }

    /// An escape for one character, in a class or not (but not `\1`..`\9` outside a class).
    fn char_escape(&mut self, c: char) -> PResult<u32> {
        if let Some(i) = "abfnrtv".find(c) {
            return Ok([7, 8, 12, 10, 13, 9, 11][i]);
        }
        let digits = match c {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            'N' => return self.named_char(),
            '0'..='7' => {
                let more = self.getwhile(2, |c| ('0'..='7').contains(c))?;
                return self.octal(&format!("\\{c}{more}"));
            }
            _ if c.is_ascii_alphanumeric() => fail!(self, 2 => "bad escape \\{c}"),
            _ => return Ok(c as u32),
        };
        let escape = format!("\\{c}{}", self.getwhile(digits, char::is_ascii_hexdigit)?);
        let offset = escape.len();
        ensure!(offset == digits + 2, self, offset => "incomplete escape {escape}");
        match u32::from_str_radix(&escape[2..], 16) {
            Ok(code) if code <= 0x10FFFF => Ok(code),
            _ => fail!(self, offset => "bad escape {escape}"),
        }
    }

    /// After `\N`: `{name}`, looked up as `unicodedata.lookup` does.
    fn named_char(&mut self) -> PResult<u32> {
        ensure!(self.eat("{")?, self, 0 => "missing {{");
        let name = self.getuntil("}", "character name")?;
        let length = len(&name) + 4;
        match lookup_char_name(&name) {
            Ok(Some(code)) => Ok(code),
            Ok(None) => fail!(self, length => "undefined character name {}", repr(&name)),
            Err(()) => {
                let (kind, pos) = (PatternErrorKind::Unsupported, Some(self.tell() - length));
                let detail = format!("`\\N{{{name}}}`");
                Err(PatternError::new(self.pattern, kind, pos, detail))
            }
        }
    }

    /// A character class after its `[`.
    fn class(&mut self) -> PResult<Item> {
        let here = self.tell() - 1;
        let (negate, mut mask, mut members) = (self.eat("^")?, 0, 0);
        loop {
            let Some(this) = self.get()? else {
                fail!(self, at here => "unterminated character set")
            };
            if this == "]" && members > 0 {
                break;
            }
            members += 1;
            let (code1, set1) = self.member(&this)?;
            if !self.eat("-")? {
                mask |= set1;
                continue;
            }
            let Some(that) = self.get()? else {
                fail!(self, at here => "unterminated character set")
            };
            if that == "]" {
                mask |= set1 | self.chars('-' as u32, '-' as u32);
                break;
            }
            match (code1, self.member(&that)?.0) {
                (Some(lo), Some(hi)) if lo <= hi => mask |= self.chars(lo, hi),
                _ => {
                    fail!(self, len(&this) + 1 + len(&that) => "bad character range {this}-{that}")
                }
            }
        }
        Ok(Item::set(if negate { !mask } else { mask }))
    }

    /// A class member: its code point (none for a category) and the ASCII characters it matches.
    fn member(&mut self, t: &str) -> PResult<(Option<u32>, u128)> {
        let code = match esc(t) {
            Some(c @ ('d' | 'D' | 's' | 'S' | 'w' | 'W')) => return Ok((None, self.category(c))),
            Some(c) => self.char_escape(c)?,
            None => t.chars().next().unwrap_or_default() as u32,
        };
        Ok((Some(code), self.chars(code, code)))
    }
}

/// Python 3.11's Unicode 14.0 properties, for what its parser checks and says.
static IDENTIFIER: LazyLock<Class> =
    LazyLock::new(|| unicode(r"^[_\p{XID_Start}&&\p{Age=14.0}][\p{XID_Continue}&&\p{Age=14.0}]*$"));
static INT: LazyLock<Class> =
    LazyLock::new(|| unicode(r"^\s*([+-]?)([\d&&\p{Age=14.0}]+(?:_[\d&&\p{Age=14.0}]+)*)\s*$"));
static DIGIT: LazyLock<Class> = LazyLock::new(|| unicode(r"^\d$"));
static ALPHA: LazyLock<Class> = LazyLock::new(|| unicode(r"^[\p{L}&&\p{Age=14.0}]$"));
static PRINTABLE: LazyLock<Class> = LazyLock::new(|| unicode(r"^[[^\p{C}\p{Z}]&&\p{Age=14.0}]$"));
static ASSIGNED: LazyLock<Class> = LazyLock::new(|| unicode(r"^\p{Age=14.0}$"));
/// What every character name and name alias looks like.
static NAME: LazyLock<Class> = LazyLock::new(|| unicode(r"^[A-Z0-9-]+(?: [A-Z0-9-]+)*$"));

fn unicode(re: &str) -> Class {
    Class::new(re).unwrap_or_else(|e| panic!("built-in regex {re} must compile: {e}"))
}

/// Whether `c` is in the one-character class `class`.
fn is(class: &Class, c: char) -> bool {
    class.is_match(c.encode_utf8(&mut [0; 4]))
}

/// `str(int(s))` of a group number; `None` where Python's `int` raises `ValueError`.
fn py_int(s: &str) -> Option<String> {
    let caps = INT.captures(s)?;
    // Unicode decimal digits come in runs of ten, 0 to 9.
    let below = |c: char, k| char::from_u32(c as u32 - k).is_some_and(|d| is(&DIGIT, d));
    let value = |c| char::from(b'0' + ((1..).take_while(|&k| below(c, k)).count() % 10) as u8);
    let digits: String = caps[2].chars().filter(|&c| c != '_').map(value).collect();
    let sign = if &caps[1] == "-" { "-" } else { "" };
    match digits.trim_start_matches('0') {
        "" => Some("0".into()),
        digits => Some(format!("{sign}{digits}")),
    }
}

/// `repr(str)`, for names quoted in Python's messages.
fn repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let escape = |c: char| match (c, c as u32) {
        _ if c == quote || c == '\\' => format!("\\{c}"),
        ('\t' | '\n' | '\r', _) => c.escape_default().to_string(),
        (' '..='~', _) => c.to_string(),
        (_, 0x80..) if is(&PRINTABLE, c) => c.to_string(),
        (_, code @ ..=0xFF) => format!("\\x{code:02x}"),
        (_, code @ ..=0xFFFF) => format!("\\u{code:04x}"),
        (_, code) => format!("\\U{code:08x}"),
    };
    format!(
        "{quote}{}{quote}",
        s.chars().map(escape).collect::<String>()
    )
}

/// `unicodedata.lookup` of Python 3.11 (Unicode 14.0): `Ok(None)` where it fails, `Err(())` for
/// a name alias or a spelling this module cannot tell from one.
fn lookup_char_name(name: &str) -> Result<Option<u32>, ()> {
    // unicode_names2 also takes aliases, and matches loosely (spaces, `_`, `-` and case aside).
    let Some(c) = unicode_names2::character(name).filter(|&c| is(&ASSIGNED, c)) else {
        return Ok(None);
    };
    let upper = name.to_ascii_uppercase();
    if unicode_names2::name(c).is_some_and(|n| n.to_string() == upper) {
        // Python compares names without case, but the computed names of Hangul syllables and
        // CJK ideographs with it.
        let computed = ["HANGUL SYLLABLE ", "CJK UNIFIED IDEOGRAPH-"].map(|p| upper.starts_with(p));
        return Ok((computed == [false; 2] || name == upper).then_some(c as u32));
    }
    if NAME.is_match(&upper) {
        Err(())
    } else {
        Ok(None)
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
        assert!(m("aws$", "aws\n"));
        assert_eq!(pat("^aws_").as_python(), "^aws_");
    }

    #[test]
    fn patterns_people_write() {
        assert!(m("^(?!tmp_)", "prod_db"));
        assert!(!m("^(?!tmp_)", "TMP_db"));
        assert!(!m("^(?!.*_test$)", "db_test"));
        assert!(m(r"^(aws|gcp)_(?!sandbox)\w+$", "gcp_main"));
        assert!(!m(r"^(aws|gcp)_(?!sandbox)\w+$", "aws_sandbox1"));
        assert!(m(r"^\w+(?<!_test)$", "db_prod"));
        assert!(m(r"^(?P<env>dev|prod)_(?P=env)_", "PROD_prod_db"));
        assert!(m("(a)?(?(1)b|c)", "ab"));
        assert!(!m("(a)?(?(1)b|c)", "b"));
        assert!(!m("(?>a+)ab", "aab"));
        assert!(!m("a*+a", "aaa"));
    }

    #[test]
    fn case_insensitivity_on_ascii_ids() {
        assert!(m("k", "K"));
        assert!(m("\u{212A}", "k"));
        assert!(m("[\u{2100}-\u{2200}]", "K"));
        assert!(m("ſ", "S"));
        assert!(m("[İ]", "i"));
        assert!(m("ı", "I"));
        assert!(!m("é", "e"));
        assert!(!m("(?a)\u{212A}", "k"));
        assert!(!m("(?-i:k)", "K"));
        assert!(!m("[^a]", "A"));
        assert!(m(r"(a)\1", "aA"));
        assert!(!m(r"(?-i:(a)\1)", "aA"));
        // Python's `\s` has the information separators, but not under `a`.
        assert!(m(r"\s", "\u{1c}"));
        assert!(!m(r"(?a)\s", "\u{1c}"));
        // CPython (up to 3.13): `\B` never matches in an empty string.
        assert!(!m(r"\B", ""));
        assert!(m(r"x?\B", "."));
    }

    #[test]
    fn translation_is_ascii_classes_without_case_folding() {
        let re = pat("[&&][[:a:]]a.|b").regex.as_str().to_string();
        assert!(re.starts_with(r"\A(?:"), "{re}");
        assert!(
            !re.contains("&&") && !re.contains("[:") && !re.contains("(?i"),
            "{re}"
        );
        assert_eq!(
            pat("k").regex.as_str(),
            r"\A(?:[\x{4B}-\x{4B}\x{6B}-\x{6B}])"
        );
    }

    #[test]
    fn only_ascii_ids_are_decided() {
        let e = pat("a").matches("é").expect_err("non-ASCII id");
        assert!(e.to_string().contains("only ASCII ids"), "{e}");
        assert!(m(".", "\u{7f}"));
    }

    #[test]
    fn character_names() {
        assert!(m(r"\N{low line}\N{LATIN SMALL LETTER A}", "_A"));
        assert!(m(r"[\N{SPACE}-\N{EM DASH}]", "~"));
        assert!(m(r"\N{KELVIN SIGN}", "k"));
        assert!(m(r"[^\N{EM DASH}]", "a"));
        python_rejects(
            r"\N{EM  DASH}",
            "undefined character name 'EM  DASH' at position 0",
        );
        python_rejects(r"\N{hangul syllable ga}", "undefined character name");
        python_rejects(r"\N{NO SUCH NAME}", "undefined character name");
        // Assigned after Unicode 14.0 (Python 3.11).
        python_rejects(r"\N{SHAKING FACE}", "undefined character name");
        assert!(pat(r"\N{HANGUL SYLLABLE GA}x").matches("x").is_ok());
        let e = err(r"a\N{LINE FEED}");
        assert_eq!(e.kind(), PatternErrorKind::Unsupported, "{e}");
        assert_eq!(e.position(), Some(1));
        assert!(e.to_string().contains(r"\N{LINE FEED}"), "{e}");
    }

    #[test]
    fn python_errors() {
        python_rejects("a(b", "missing ), unterminated subpattern at position 1");
        python_rejects("a)b", "unbalanced parenthesis at position 1");
        python_rejects("a**", "multiple repeat at position 2");
        python_rejects(r"\b+", "nothing to repeat at position 2");
        python_rejects("[z-a]", "bad character range z-a at position 1");
        python_rejects("a{4294967295}", "the repetition number is too large");
        python_rejects("(?<n>a)", "unknown extension ?<n at position 1");
        python_rejects(
            "(?P<a'b>x)",
            "bad character in group name \"a'b\" at position 4",
        );
        python_rejects("(?P<a\u{200b}>x)", r"bad character in group name 'a\u200b'");
        python_rejects("(?iä)", "unknown flag at position 3");
        python_rejects("(?i1)", "missing -, : or ) at position 3");
        python_rejects(
            "a(?i)",
            "global flags not at the start of the expression at position 1",
        );
        python_rejects("(?(1)a|b)", "invalid group reference 1 at position 3");
        python_rejects("(?(-1)a)", "bad character in group name '-1' at position 3");
        python_rejects("(?(٠)a)", "bad group number at position 3");
        python_rejects(
            r"(a)(?<=\1(b)\2)",
            "cannot refer to group defined in the same lookbehind",
        );
        python_rejects("(?<=a+)b", "look-behind requires fixed-width pattern");
        python_rejects(
            "(?t)a*",
            "internal: unsupported template operator MAX_REPEAT",
        );
        python_rejects("(?a)(?u)x", "ASCII and UNICODE flags are incompatible");
        python_rejects("ab\\", "bad escape (end of pattern) at position 2");
        // Python's `int()`: whitespace, a sign, Unicode digits, single underscores.
        assert!(m("(a)(?( +1 )b|c)", "ab"));
        assert!(m("(a)(?(١)b|c)", "ab"));
        assert_eq!(py_int(" +1_0 "), Some("10".into()));
        assert_eq!(py_int("-٣"), Some("-3".into()));
        assert_eq!(py_int("-0_0"), Some("0".into()));
        assert!(py_int("1__0").is_none());
    }

    #[test]
    fn limits() {
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        assert_eq!(err(&long).kind(), PatternErrorKind::TooLarge);
        let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        let e = err(&nested(MAX_NESTING + 1));
        assert_eq!(
            (e.kind(), e.position()),
            (PatternErrorKind::TooLarge, Some(MAX_NESTING))
        );
        assert!(m(&nested(MAX_NESTING), "a"));
        // Python's errors come first.
        assert_eq!(
            err(&format!("{}*", nested(MAX_NESTING + 1))).kind(),
            PatternErrorKind::TooLarge
        );
        python_rejects(
            &format!("{})", nested(MAX_NESTING + 1)),
            "unbalanced parenthesis",
        );
        // The deepest translation: repeated look-behinds, `\B` inside, after alternatives.
        let deepest = format!(
            "x|a{}",
            "(?<=".repeat(MAX_NESTING) + r"a\B" + &r"\B)?".repeat(MAX_NESTING)
        );
        assert!(m(&deepest, "aa"), "{deepest}");
        assert!(m(
            &r"\w".repeat(MAX_PATTERN_CHARS / 2),
            &"a".repeat(MAX_PATTERN_CHARS / 2)
        ));
        assert!(m(r"\w{1000}|x", "x"));
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
    }

    /// The difference the module docs list, pinned (Python's answers in the comments).
    #[test]
    fn documented_differences() {
        // CPython 3.11: True (its possessive-repeat bug); documented equivalent: False.
        assert!(!m(r"(?:(a)|b)*+\1", "ab"));
        assert!(!m(r"(?>(?:(a)|b)*)\1", "ab"));
    }

    #[test]
    fn python_repr() {
        assert_eq!(repr("a'b"), "\"a'b\"");
        assert_eq!(repr("a\\b\n"), "'a\\\\b\\n'");
        assert_eq!(repr("é\u{200b}\u{1FAE8}"), "'é\\u200b\\U0001fae8'");
    }
}
