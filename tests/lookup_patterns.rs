//! Lookup patterns decide exactly as Python's `re.match(pattern, id, re.IGNORECASE)`.
//!
//! The real `python3` is the oracle: one process receives every pattern and id as JSON on stdin
//! and answers, per pattern, either Python's error or the match result for every id. Then, for
//! each pattern:
//! - Python rejects it → `LookupPattern::new` must reject it too, and (on the Python version the
//!   parser was ported from) with Python's own message and position;
//! - Python accepts it → so must we, and `matches` must give Python's result for every id,
//!   without error (no pattern of the corpus reaches the backtrack limit on these ids).
//!
//! The only refusals of patterns Python accepts are `\N{...}` name aliases (or spellings the
//! module cannot tell from one; documented in `airflow::pattern`); no curated or generated
//! pattern exceeds the length or nesting limits. No comparison is skipped.
//!
//! The corpus is a curated list of patterns (the tricky corners of Python's syntax and of its
//! case-insensitive matching, the backtracking constructs, and lookup patterns people write) plus
//! a deterministic batch of generated ones. Patterns use non-ASCII characters freely; the ids are
//! ASCII only, because ids are Secrets Manager secret names, which cannot hold anything else
//! (`LookupPattern::matches` refuses other ids): names shaped like secret names, and ASCII
//! corner cases (control characters, newlines, braces).

mod support;

use airflow_secrets_operator::airflow::pattern::{LookupPattern, PatternErrorKind};
use serde_json::{Value, json};
use support::pipe;

/// Curated patterns.
const PATTERNS: &[&str] = &[
    // Airflow-style lookup patterns.
    "^aws_",
    "aws_",
    "aws",
    "aws$",
    "^AWS",
    "^aws_.*$",
    "db_.*",
    ".*_prod$",
    "^(?:team|shared)/",
    "^(team/)?db",
    "^(?!tmp)",
    "^[a-z][a-z0-9_]*$",
    "[a-z0-9_]+$",
    r"^\w+$",
    r"\w+/\w+",
    "[/_+=.@-]+",
    r"^prod[-_]",
    r"^(dev|stg|prod)_(db|api)",
    r"^smtp_default$",
    r"^google_cloud_default$",
    r".*default.*",
    r"(?i)^AWS_DEFAULT$",
    // Lookup patterns people write with look-around and back-references.
    "^(?!tmp_)",
    "^(?:team|shared)/(?!tmp)",
    "^(?!.*_test$)",
    "^prod_(?!legacy)",
    r"^(aws|gcp)_(?!sandbox)\w+$",
    "^(?!tmp|test)",
    "^(?!(?:tmp|test)_)[a-z]",
    "^(?=.*prod)",
    "^(?=.*_db$)(?!legacy)",
    "^(?:(?!_old).)*$",
    r"^(?!.*(?:_old|_bak)$)\w+$",
    r"^[a-z]+_(?:db|api)$(?<!_old_db)",
    r"^\w+(?<!_test)$",
    r"^\w+(?<![_-]tmp)$",
    r"^(?!aws_)(?!gcp_)\w+",
    r"^(prod|dev)_\w+(?<=_db)$",
    r"^(?:(?!/).)+$",
    r"^[^/]+/(?!internal/)",
    r"^(?P<env>dev|prod)_(?P=env)_",
    r"^(\w)\1",
    r"^(?P<team>\w+)/(?P=team)_",
    r"^(?>\w+)_db$",
    r"^\w++/",
    r"^(a)?(?(1)ws|gcp)_",
    r"^(?i:AWS)_(?-i:DB)",
    r"^(?x) aws _ (db|api)  # comment",
    r"(?a)^\w+$",
    // Start anchoring and alternation.
    "a|b",
    "^a|b",
    "a|^b",
    "x|ab",
    "ab|cd",
    "^(a|b)c",
    "(a|b)c$",
    "a|",
    "|a",
    "|",
    "",
    "a||b",
    "(?:)",
    "()",
    "ab|ac",
    "aws_(db|api)|gcp_(db|api)",
    // Braces.
    "{",
    "}",
    "{}",
    "{,}",
    "a{",
    "a}",
    "a{}",
    "a{,}",
    "a{,2}",
    "xa{,2}y",
    "a{2}",
    "a{2}$",
    "a{2,}",
    "a{1,3}$",
    "a{0}",
    "a{0,0}b",
    "x{a}",
    "a{1",
    "a{1,2",
    "a{ 1}",
    "a{1, 2}",
    "a{-1}",
    "a{1}{2}",
    "a{2,1}",
    "a{3,1}",
    "{1}",
    "{1,2}",
    "x{2}?",
    "a{01}",
    "a{4294967294}",
    "a{4294967295}",
    "a{99999999999999999999}",
    // Character classes.
    "[]a]",
    "[]]",
    "[^]]",
    "[^]a]",
    "[]",
    "[^]",
    "[a",
    "[a-]",
    "[-a]",
    "[-]",
    "[--]",
    "[---]",
    "[--a]",
    "[%--]",
    "[a--b]",
    "[a-c-e]",
    "[&&]",
    "[a&&b]",
    "[a~~b]",
    "[a||b]",
    "[[]",
    "[[a]",
    "[[:alpha:]]",
    "[[:alpha:]]+$",
    "[[=a=]]",
    "[z-a]",
    "[a-a]",
    r"[\d-z]",
    r"[a-\d]",
    r"[\d-]",
    r"[a\-z]",
    r"[\]]",
    r"[\\]",
    r"[\b]",
    r"[\x41-\x43]",
    r"[\101]",
    r"[\0]",
    r"[\8]",
    r"[\A]",
    r"[\Z]",
    r"[\B]",
    r"[\q]",
    r"[\w.-]+$",
    r"[^\w]",
    r"[\W]",
    r"[\s\S]",
    r"[^\d\s]",
    r"[A-Z]",
    r"[^a]",
    r"[^A]",
    r"[^a-z]",
    r"[k]",
    "[K]",
    "[\u{212A}]",
    "[à-ÿ]",
    "[À-Þ]",
    "[ß]",
    "[ſ]",
    "[ı]",
    "[İ]",
    "[\u{10400}]",
    "[\u{10400}x]",
    "[\u{10400}-\u{1044F}]",
    "[^\u{10400}x]",
    "[\u{0}-\u{10FFFF}]",
    "[^\u{0}-\u{10FFFF}]",
    "[ǅ]",
    "[ǆa]",
    "[σ]",
    "[Σ_]",
    "[µ]",
    "[µa]",
    // Escapes.
    r"\d+",
    r"\D",
    r"\w",
    r"\W",
    r"\s",
    r"\S",
    r"\bdb",
    r"db\b",
    r"\Bb",
    r"a\B",
    r"\Aab",
    r"a\Z",
    r"aws\Z",
    r"\x41",
    r"\x4",
    r"\x4g",
    r"\u00e9",
    r"\u00E9x",
    r"\U0001F600",
    r"\U00110000",
    r"\101",
    r"\1010",
    r"\0",
    r"\012",
    r"\08",
    r"\400",
    r"\777",
    r"\1",
    r"(a)\1",
    r"(a)\2",
    r"(a)\10",
    r"\8",
    r"\q",
    r"\z",
    r"\e",
    r"\G",
    r"\p{L}",
    r"\N{EM DASH}",
    r"\N",
    r"\N{",
    r"\N{}",
    r"a\.b",
    r"a\-b",
    r"\/",
    r"\_",
    r"\é",
    r"\ ",
    r"\t\n",
    r"\a\f\v",
    "a\\",
    "\\",
    // Groups.
    "(?:aws|gcp)_",
    "(aws)_",
    "(?P<cloud>aws)_",
    "(?P<cloud>aws)_(?P<kind>db)",
    "(?P<a>x)(?P<a>y)",
    "(?P<1>a)",
    "(?P<>a)",
    "(?P<a",
    "(?P<é>a)",
    "(?P<a-b>a)",
    "(?<n>a)b",
    "(?P=a)",
    "(?P<a>x)(?P=a)",
    "(?Px)",
    "(?",
    "(?Q)",
    "(?#comment)aws",
    "a(?#c)b",
    "a(?#c",
    "(?#c)*",
    "a(?#c)*",
    "(a",
    "a)",
    "a(b",
    "((a)",
    "(a))",
    ")",
    "(?:a)*",
    "(?:ab)+$",
    "(a|bc)*d",
    "(?:a|)*b",
    "(?:)*",
    "(?:^)*a",
    "(a)?b",
    "(a){0}b",
    "((a|b)c)+$",
    // Flags.
    "(?i)x",
    "(?i)(?m)a",
    "(?m)^a$",
    "(?m)a$",
    "(?s).",
    "(?s)a.b",
    "a.b",
    "(?u)aws",
    "(?i:A)b",
    "(?-i:A)b",
    "(?-i:a)B",
    "(?s-i:a.)",
    "(?i-s:a.)",
    "(?m-s:^a)",
    "(?-x:a b)",
    "a(?i)b",
    "a|(?i)b",
    "(?:(?i)a)",
    "(?L)a",
    "(?a)a",
    "(?a:a)",
    "(?au)a",
    "(?a)(?u)a",
    "(?x)a b",
    "(?x:a b)",
    "(?t)ab",
    "(?t)a*",
    "(?t:a)",
    "(?-t:a)",
    "(?i-i:a)",
    "(?-u:a)",
    "(?iz)a",
    "(?i",
    "(?-)a",
    "(?-i)a",
    "(?i-:a)",
    // Quantifiers.
    "*a",
    "+a",
    "?a",
    "a**",
    "a*?",
    "a+?",
    "a??",
    "a{1,2}?",
    "a*+",
    "a++",
    "a?+",
    "a{1,2}+",
    "^*",
    "$+",
    r"\b*",
    r"\A?",
    "a?b",
    ".*",
    ".+$",
    // Look-around, back-references, conditionals, atomic groups, possessive quantifiers.
    "(?=db)",
    "(?P<x>a)(?P=x)",
    "(?(1)a|b)",
    "(a)?(?(1)b|c)",
    "(?>a+)b",
    "a*+a",
    "a++b",
    "(a)(?(1)b|c)",
    "(?P<n>a)?(?(n)b|c)",
    "(a)?(?(1)|c)",
    "(?(1)a|b)(x)",
    "(?=a)*b",
    r"(?i)(?s-i:(?<!\d(?:)*){2})?",
    "(?i:){0}a",
    "(?i:$){0}a",
    "(?i:(?:)*)?a",
    "(?s:(?=a){2})*a",
    r"(a){0}\1",
    r"(a){0}b|\1",
    "(?:(?=(a))){0}(?(1)a|b)",
    r"(a?)*?\1$",
    r"(a*)+\1$",
    r"(a*)*?b\1",
    r"(?:(a)|(b))+\1\2",
    r"(?:(a)|b)*?\1",
    r"(a)|b(?(1)c|d)",
    r"((a)|b)+(?(2)c|d)",
    r"(?:(a)|b)+(?(1)c|d)",
    r"(a)?(?(1)b)+c",
    r"(?>(a+))\1",
    r"(?>(a|ab))(?<=\1)c",
    r"(a|ab)++\1",
    r"(?=(a))a(?<=\1)",
    r"(?!(b))(a)?\2",
    r"(?=(a+))a*b\1",
    r"(a+?)\1$",
    r"(a{1,3}?)\1b",
    r"(?:a|b)*?(?=c)",
    r"(?:(a)|b)(?(1)(?<=a)|(?<!a))c",
    r"(a)(?:\1|b){2,}+",
    r"(?i)(s)\1",
    r"(?i)(ı)\1",
    "(?=a){2}b",
    "(?!a)?b",
    "(?=a)??a",
    "(?:$)*a",
    "(?:\\b)+a",
    "a(?:\\B){0}b",
    "(?:(?=(a)))+\\1",
    "(?:(?=(a))){0}b",
    "(a)(?<=\\1)",
    "(a)b(?<=\\1b)",
    "(a)?b(?<=(?(1)a|x)b)",
    "ab(?<=a(?:){3}b)",
    "ab(?<=b(?:)*)",
    "a(?<=(?<=a))",
    "(a|ab)(?<=\\1)c",
    "(?<=(?=a)a)",
    "(a*)*\\1b",
    "(a|)+\\1b",
    "(?:(a)|b)+\\1",
    "(a)|\\1",
    "(?>a|ab)c",
    "(?>(a))\\1",
    "a{1,3}+a",
    "a?+a",
    "(?:ab)*+ab",
    "(?i)(a)\\1",
    "(?-i:(a))\\1",
    "(?-i:(a)\\1)",
    "(?a)(k)\\1",
    "(?a)\\w+",
    "(?a)k",
    "(?a)[k-m]",
    r"(?a)[\u212a]",
    "(?a:\\b)a",
    "(?a)\\s",
    "(?x)a b c",
    "(?x)a#comment\nb",
    "(?x)a#\\\nb\nc",
    "(?x)a\\\n#c\nb",
    "(?x)[ ]a",
    "(?x)a\\ b",
    "(?x)a {2}",
    "(?t)a|b",
    r"\N{LOW LINE}",
    r"\N{latin small letter a}b",
    r"[\N{DIGIT ZERO}-\N{DIGIT NINE}]+",
    r"\N{KELVIN SIGN}",
    r"\N{NO SUCH NAME}",
    "$",
    "a$",
    r"(?=a)b",
    r"(?!a)",
    r"(?<=a)b",
    r"(?<!a)b",
    r"(?<=a+)b",
    r"(?<=a|bc)d",
    r"(?>a)",
    r"(?(1)a)",
    r"(?P<x>a)(?(x)b)",
    r"(a)(?(1)b|c|d)",
    // Unicode and case-insensitivity.
    "é",
    "É",
    "K",
    "k",
    "\u{212A}",
    "ß",
    "ẞ",
    "ss",
    "straße",
    "STRASSE",
    "ſ",
    "s",
    "ı",
    "i",
    "İ",
    "I",
    "µ",
    "μ",
    "ς",
    "σ",
    "Σ",
    "ǅ",
    "ǆ",
    "\u{10400}",
    "\u{10428}",
    "\u{10400}|x",
    "ﬅ",
    "٣",
    r"\d",
    "²",
    r"\u0130",
    "a\u{301}",
    // ASCII ids against non-ASCII pattern characters: the case folds that reach ASCII (`İ`, `ı`,
    // `ſ`, the Kelvin sign), alone, in classes and in ranges, under the flags in effect.
    "[\u{100}-\u{200}]",
    "[^\u{100}-\u{200}]",
    "(?a)[\u{100}-\u{200}]",
    "(?-i:[\u{100}-\u{200}])",
    "[\u{2100}-\u{2200}]",
    "[^\u{2100}-\u{2200}x]",
    "[İ-ı]",
    "[ſ-ſ]",
    "[\u{131}-\u{17F}]",
    "[\u{17F}-\u{212A}]",
    "[\u{130}\u{17F}\u{212A}]+$",
    "(?a:[\u{130}\u{17F}])",
    "(?a)(?u:ſ)",
    "(?u:(?a:ı))i",
    "[h-j]",
    "[H-J]",
    "[^H-J]",
    "[r-t]",
    "(?-i)[r-t]",
    "[@-`]",
    "[Z-a]",
    "[^Z-a]",
    r"[\x00-\x7f]",
    r"[^\x00-\x7f]",
    "[\u{80}-\u{10FFFF}]",
    "[^\u{80}-\u{10FFFF}]",
    "(?a)[\u{80}-\u{10FFFF}]",
    r"[^\W\d]",
    r"[\W\d]",
    r"(?a)[\S]",
    r"(?a)[^\s]",
    r"[\s\x1c]",
    r"(?a)\S",
    r"(?a)\W",
    r"\x1c",
    r"\x1f\s*$",
    r"(?u:(?a:\s))\s",
    r"(?a)(?u:\s)",
    // Character names: exact names (case aside), and what Python refuses.
    r"\N{em dash}",
    r"[\N{SPACE}-\N{EM DASH}]",
    r"[^\N{EM DASH}]",
    r"\N{EM  DASH}",
    r"\N{ EM DASH}",
    r"\N{EM_DASH}",
    r"\N{EMDASH}",
    r"\N{LINE FEED}",
    r"\N{HANGUL SYLLABLE GA}",
    r"\N{hangul syllable ga}",
    r"\N{Hangul Syllable GA}",
    r"\N{CJK UNIFIED IDEOGRAPH-4E00}",
    r"\N{cjk unified ideograph-4E00}",
    r"\N{CJK UNIFIED IDEOGRAPH-4e00}",
    r"\N{SHAKING FACE}",
    r"\N{LATIN CAPITAL LETTER A WITH MACRON AND GRAVE}",
    r"\N{LATIN CAPITAL LETTER I WITH DOT ABOVE}",
    r"\N{latin small letter long s}+",
    r"\N{DIGIT ONE}{2}",
    r"[\N{LATIN SMALL LETTER A}-\N{LATIN SMALL LETTER DOTLESS I}]",
    // Group names and numbers (`str.isidentifier`, `int()`, `repr` in messages).
    "(?P<ā>a)(?P=ā)",
    "(?P<a\u{200b}>x)",
    "(?P<a'b>x)",
    "(?P<a\"b'>x)",
    r"(?P<a\tb>x)",
    "(?P<\u{1FAE8}>x)",
    "(?P<_>x)(?P=_)",
    "(?P<a b>x)",
    "(a)(?( 1)b|c)",
    "(a)(?(+1)b|c)",
    "(a)(?(1 )b|c)",
    "(a)(?(١)b|c)",
    "(a)(?(01)b|c)",
    "(a)(?(1_0)b|c)",
    "(?(1__0)a)",
    "(?(-1)a)",
    "(?(-0)a)",
    "(?(0)a)",
    "(?(99999999999)a)",
    "(?(1.0)a)",
    "(?(١٢)a)",
    "(?(٠)a)",
    // Flag errors.
    "(?ä)",
    "(?iä)",
    "(?i1)",
    "(?i-ä:a)",
    "(?i-1:a)",
    "(?-ä:a)",
    "(?-:a)",
    r"(?i\d)",
    // Anchors.
    "(?m)^$",
    "(?m)$\n",
    "\n$",
    "(?m)^b",
    "$\n?",
    "a$\n",
    "(?s).$",
    r"\B",
    r"(?:\B)?",
    r"\b",
    r"(?<=\b)a",
    r"a(?<=a\b)",
    r"a(?<!\B)",
    // Repeats of empty and zero-width items.
    "(?:)+",
    "(?:(?:))*a",
    "(?i:)*a",
    "()*a",
    "(?:)?",
    "(?:(?#c))*",
    "(?:a|)+?b",
    r"(?:\b|$)*a",
    "(?:(?=a)|b)*a",
    "(?:(?=a))*+a",
    "a{0}?b",
    "(?:a{0})*b",
    "(?=a){0,1}?a",
    // Look-behinds and back-references.
    r"(?<=\N{LATIN SMALL LETTER A})b",
    "ab(?<=[^x]b)",
    "a(?<=(?i)A)",
    "aa(?<=a{2})",
    "ab(?<=(?:a|b){2})",
    r"(?i)(k)\1",
    r"(?-i:(k))(?i:\1)",
    r"(.)\1",
    r"(?i)(.)(?-i:\1)",
    // Size limits.
    r"\w{100}",
    r"(?:a|b){500}",
    "((((((((((a))))))))))",
];

/// Patterns on which CPython 3.11 contradicts its own documentation, with the equivalent the
/// documentation gives (`X*+` is `(?>X*)`): a possessive repeat whose last, failed iteration
/// entered a group leaves that group set to an empty string (or raises `SystemError`). We follow
/// the documentation: our result on the pattern must be Python's result on the equivalent.
const CPYTHON_BUGS: &[(&str, &str)] = &[
    (r"(?:(a)|b)*+\1", r"(?>(?:(a)|b)*)\1"),
    (r"(?:(a)|b)++\1", r"(?>(?:(a)|b)+)\1"),
    (r"(?:(a)b|c)*+$", r"(?>(?:(a)b|c)*)$"),
];

/// Ids: Secrets Manager secret names and ASCII corner cases.
const IDS: &[&str] = &[
    "",
    "a",
    "A",
    "b",
    "B",
    "ab",
    "aB",
    "AB",
    "ac",
    "bc",
    "aa",
    "aaa",
    "aaaa",
    "xy",
    "xay",
    "xaay",
    "xaaay",
    "a{",
    "a{}",
    "a{1",
    "a{,2}",
    "{",
    "}",
    "{}",
    "]",
    "-",
    "&",
    "[",
    ":",
    "a]",
    ":]",
    "_",
    "0",
    "1234",
    "a.b",
    "a-b",
    "a b",
    "/",
    "aws",
    "AWS",
    "aws_default",
    "AWS_default",
    "aws_default_extra",
    "my_aws_x",
    "aws_x",
    "aws_db",
    "gcp_api",
    "db_prod",
    "Db_x",
    "team/db",
    "shared/x",
    "tmp_x",
    "dev_db",
    "prod-api",
    "smtp_default",
    "google_cloud_default",
    "airflow/connections/aws_default",
    "a/b@c+d=e.f-g_h",
    "x{a}",
    "k",
    "K",
    "s",
    "S",
    "i",
    "I",
    "ss",
    "SS",
    "STRASSE",
    "e",
    "\u{8}",
    "\u{1c}",
    "\t",
    "prod_db",
    "prod_api",
    "prod_legacy_api",
    "prod_prod_x",
    "dev_dev_db",
    "gcp_main",
    "aws_sandbox1",
    "aws_main-1",
    "aws_db_old",
    "db_test",
    "db_bak",
    "db_old_x",
    "my_tmp",
    "x-tmp",
    "tmp_db",
    "TMP_db",
    "test_conn",
    "team/tmp_x",
    "team/team_db",
    "shared/tmp",
    "shared/internal/x",
    "legacy_db",
    "app_db",
    "app_old_db",
    "aaws_db",
    "AWS_DB",
    "aws_Db",
    "gcp_x",
    "aa_b",
    "aab",
    "aaab",
    "abab",
    "abc",
    "abac",
    "c",
    "bx",
    "ax",
    "a_",
    "aws\n",
    "a\n",
    "a\nb",
    "\u{1f}",
    "\u{7f}",
    "a\u{1c}b",
    "Kk",
    "sS",
    "iI",
];

/// A small deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Generated patterns, first kind: random sequences of syntax fragments. Most are errors, which
/// exercises the ported parser's error paths, messages and positions.
fn fragment_patterns(count: usize, rng: &mut Rng) -> Vec<String> {
    const FRAGMENTS: &[&str] = &[
        "a",
        "b",
        "A",
        "k",
        "K",
        "\u{212A}",
        "é",
        "ß",
        "ſ",
        "ı",
        "_",
        "-",
        "/",
        ".",
        "*",
        "+",
        "?",
        "{",
        "}",
        ",",
        "0",
        "1",
        "2",
        "(",
        ")",
        "(?:",
        "(?i:",
        "(?-i:",
        "(?s:",
        "(?P<n>",
        "(?P<m>",
        "(?=",
        "(?!",
        "(?<=",
        "(?<!",
        "(?>",
        "(?#c)",
        "(?P=n)",
        "(?(1)",
        "[",
        "]",
        "^",
        "^",
        "$",
        "|",
        "|",
        "\\",
        "\\d",
        "\\w",
        "\\W",
        "\\s",
        "\\b",
        "\\B",
        "\\A",
        "\\Z",
        "\\x41",
        "\\1",
        "\\0",
        "\\12",
        "\\.",
        "\\-",
        "\\]",
        "\\q",
        "&&",
        "--",
        "~~",
        "[:alpha:]",
        "(?m)",
        "(?s)",
        "(?i)",
        "(?a)",
        "(?x)",
        "(?u)",
        "{,2}",
        "{2}",
        "{1,}",
        "{2,1}",
        "*+",
        "*?",
        "++",
        "?+",
        "{1,2}+",
        "\\2",
        "(?P=m)",
        "(?(n)",
        "(?(2)",
        "(?a:",
        "(?x:",
        "\\N{LOW LINE}",
        "\u{10400}",
        "ǅ",
        "σ",
        " ",
        "#",
    ];
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let length = 1 + rng.below(7);
        let pattern: String = (0..length).map(|_| rng.pick(FRAGMENTS)).collect();
        if !out.contains(&pattern) && !PATTERNS.contains(&pattern.as_str()) {
            out.push(pattern);
        }
    }
    out
}

/// Characters for generated literals and ids: ASCII and the case-insensitivity corner cases.
const ALPHABET: &[&str] = &[
    "a",
    "A",
    "b",
    "B",
    "k",
    "K",
    "\u{212A}",
    "s",
    "S",
    "ſ",
    "ß",
    "ẞ",
    "i",
    "I",
    "ı",
    "İ",
    "é",
    "É",
    "_",
    "-",
    "/",
    ".",
    "0",
    "1",
    "σ",
    "ς",
    "Σ",
    "µ",
    "μ",
    "Μ",
    "\u{10400}",
    "\u{10428}",
    "ǅ",
    "ǆ",
    "Ǆ",
    "x",
    "@",
    "٣",
];

/// Class range end points, in code point order.
const RANGE_POINTS: &[char] = &[
    '\u{0}',
    '-',
    '0',
    '9',
    '@',
    'A',
    'K',
    'Z',
    '_',
    'a',
    'k',
    'z',
    '\u{B5}',
    'À',
    'Þ',
    'ß',
    'à',
    'ÿ',
    'Ā',
    'İ',
    'ı',
    'ſ',
    'ž',
    'ǅ',
    'Σ',
    'ς',
    'σ',
    'μ',
    '\u{1E9E}',
    '\u{212A}',
    '\u{FFFF}',
    '\u{10400}',
    '\u{10428}',
    '\u{1044F}',
    '\u{10FFFF}',
];

/// Capture groups of a generated pattern: how many were opened, and which are closed (only those
/// can be referred to), with their names.
#[derive(Default)]
struct Groups {
    opened: usize,
    closed: Vec<(usize, Option<String>)>,
}

/// How a generated atom may be quantified.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeatable {
    Not,
    Bounded,
    Freely,
}

/// Generated patterns, second kind: built from the grammar, so most are valid and exercise
/// matching (classes and ranges under IGNORECASE, scoped flags, quantified groups, look-around,
/// back-references, conditionals, atomic groups, possessive quantifiers).
fn structured_patterns(count: usize, rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let mut groups = Groups::default();
        let flags = rng.pick(&["", "", "", "", "(?s)", "(?m)", "(?i)", "(?-i:x)", "(?a)"]);
        let mut pattern = flags.to_string();
        // Often a leading group, for back-references and conditionals to refer to.
        if rng.below(5) < 2 {
            groups.opened = 1;
            let (body, _) = sequence(rng, 1, &mut groups);
            groups.closed.push((1, None));
            pattern.push_str(&format!("({body})"));
        }
        pattern.push_str(&alternation(rng, 0, &mut groups).0);
        if pattern.chars().count() <= 60 && !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    out
}

fn class_member(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 | 1 => rng.pick(ALPHABET).to_string(),
        2 => rng
            .pick(&[
                "\\d", "\\w", "\\W", "\\s", "\\S", "\\D", "\\x41", "\\u0130", "\\-",
            ])
            .to_string(),
        _ => {
            let a = RANGE_POINTS[rng.below(RANGE_POINTS.len())];
            let b = RANGE_POINTS[rng.below(RANGE_POINTS.len())];
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let escape = |c: char| {
                if c == '-' || c < ' ' {
                    format!("\\x{:02x}", c as u32)
                } else {
                    c.to_string()
                }
            };
            format!("{}-{}", escape(lo), escape(hi))
        }
    }
}

/// A class.
fn class(rng: &mut Rng) -> String {
    let negate = if rng.below(3) == 0 { "^" } else { "" };
    let members: String = (0..1 + rng.below(3)).map(|_| class_member(rng)).collect();
    format!("[{negate}{members}]")
}

/// One character-wide item: what a look-behind body is made of.
fn single(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 | 1 => rng.pick(ALPHABET).to_string(),
        2 => rng.pick(&[".", "\\d", "\\w", "\\W", "\\x41"]).to_string(),
        _ => class(rng),
    }
}

/// A look-behind body, mostly of a fixed width (Python requires it).
fn lookbehind_body(rng: &mut Rng, groups: &Groups) -> String {
    let width = 1 + rng.below(2);
    let branch = |rng: &mut Rng| -> String {
        let mut text: String = (0..width).map(|_| single(rng)).collect();
        match rng.below(6) {
            0 if !groups.closed.is_empty() => {
                let (n, _) = &groups.closed[rng.below(groups.closed.len())];
                text.push_str(&format!("\\{n}"));
            }
            1 => text.push_str(rng.pick(&["\\b", "(?:)*", "(?=a)", "a?", "$"])),
            _ => {}
        }
        text
    };
    let mut body = branch(rng);
    if rng.below(3) == 0 {
        body.push('|');
        body.push_str(&branch(rng));
    }
    body
}

/// A reference to a closed group, if there is one: `\N` or `(?P=name)`.
fn backref(rng: &mut Rng, groups: &Groups) -> Option<String> {
    if groups.closed.is_empty() {
        return None;
    }
    let (n, name) = &groups.closed[rng.below(groups.closed.len())];
    Some(match name {
        Some(name) if rng.below(2) == 0 => format!("(?P={name})"),
        _ => format!("\\{n}"),
    })
}

/// An atom: its text and how it may be quantified.
fn atom(rng: &mut Rng, depth: usize, groups: &mut Groups) -> (String, Repeatable) {
    match rng.below(if depth < 3 { 19 } else { 10 }) {
        0..=2 => (rng.pick(ALPHABET).to_string(), Repeatable::Freely),
        3 => (".".into(), Repeatable::Freely),
        4 => (
            rng.pick(&[
                "\\d", "\\w", "\\W", "\\s", "\\S", "\\x41", "\\u0130", "\\101", "\\.",
            ])
            .to_string(),
            Repeatable::Freely,
        ),
        5 | 6 => (class(rng), Repeatable::Freely),
        7 => (
            rng.pick(&["^", "$", "\\A", "\\Z", "\\b", "\\B"])
                .to_string(),
            Repeatable::Not,
        ),
        8 | 9 => match backref(rng, groups) {
            Some(text) => (text, Repeatable::Freely),
            None => (rng.pick(ALPHABET).to_string(), Repeatable::Freely),
        },
        10 | 11 => {
            let open = rng.pick(&["(?=", "(?!"]);
            let (body, _) = alternation(rng, depth + 1, groups);
            (format!("{open}{body})"), Repeatable::Bounded)
        }
        12 => {
            let open = rng.pick(&["(?<=", "(?<!"]);
            let body = lookbehind_body(rng, groups);
            (format!("{open}{body})"), Repeatable::Bounded)
        }
        13 | 14 if groups.opened > 0 => {
            let n = 1 + rng.below(groups.opened);
            let (yes, _) = sequence(rng, depth + 1, groups);
            let no = if rng.below(2) == 0 {
                format!("|{}", sequence(rng, depth + 1, groups).0)
            } else {
                String::new()
            };
            (format!("(?({n}){yes}{no})"), Repeatable::Bounded)
        }
        _ => group(rng, depth, groups),
    }
}

/// A group: capturing (numbered, sometimes named), non-capturing, with flags, or atomic.
fn group(rng: &mut Rng, depth: usize, groups: &mut Groups) -> (String, Repeatable) {
    let kind = rng.pick(&[
        "(", "(", "(?:", "(?i:", "(?-i:", "(?s:", "(?m:", "(?s-i:", "(?a:", "(?>", "(?P<",
    ]);
    let number = matches!(kind, "(" | "(?P<").then(|| {
        groups.opened += 1;
        groups.opened
    });
    let name = (kind == "(?P<").then(|| format!("g{}", groups.opened));
    let open = match &name {
        Some(name) => format!("(?P<{name}>"),
        None => kind.to_string(),
    };
    let (body, quantified) = alternation(rng, depth + 1, groups);
    if let Some(number) = number {
        groups.closed.push((number, name));
    }
    // Unbounded repeats of something already repeated make Python's backtracking exponential;
    // keep those groups to bounded counts.
    let repeatable = if quantified {
        Repeatable::Bounded
    } else {
        Repeatable::Freely
    };
    (format!("{open}{body})"), repeatable)
}

/// A sequence of quantified atoms, and whether it contains a quantifier.
fn sequence(rng: &mut Rng, depth: usize, groups: &mut Groups) -> (String, bool) {
    let mut quantified = false;
    let text = (0..1 + rng.below(4))
        .map(|_| {
            let (text, repeatable) = atom(rng, depth, groups);
            let quantifier = match repeatable {
                Repeatable::Not => "",
                Repeatable::Bounded => rng.pick(&["", "", "?", "{2}", "{0}", "?+", "??"]),
                Repeatable::Freely => rng.pick(&[
                    "", "", "", "*", "+", "?", "{2}", "{1,3}", "{,2}", "*?", "{0}", "*+", "++",
                    "?+", "{1,2}+",
                ]),
            };
            quantified |= !quantifier.is_empty() || repeatable == Repeatable::Bounded;
            format!("{text}{quantifier}")
        })
        .collect();
    (text, quantified)
}

/// An alternation, and whether it contains a quantifier.
fn alternation(rng: &mut Rng, depth: usize, groups: &mut Groups) -> (String, bool) {
    let branches = if rng.below(3) == 0 {
        2 + rng.below(2)
    } else {
        1
    };
    let mut quantified = false;
    let text = (0..branches)
        .map(|_| {
            let (text, q) = sequence(rng, depth, groups);
            quantified |= q;
            text
        })
        .collect::<Vec<_>>()
        .join("|");
    (text, quantified)
}

/// Generated ids over the ASCII characters of [`ALPHABET`].
fn generated_ids(count: usize, rng: &mut Rng) -> Vec<String> {
    let ascii: Vec<&str> = ALPHABET.iter().copied().filter(|c| c.is_ascii()).collect();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let id: String = (0..1 + rng.below(5)).map(|_| rng.pick(&ascii)).collect();
        if !out.contains(&id) && !IDS.contains(&id.as_str()) {
            out.push(id);
        }
    }
    out
}

const ORACLE: &str = r#"
import json, re, signal, sys, warnings
warnings.simplefilter("ignore")
job = json.load(sys.stdin)
ids = job["ids"]
results = []
def too_slow(*_):
    raise TimeoutError
signal.signal(signal.SIGALRM, too_slow)
for p in job["patterns"]:
    signal.alarm(10)
    try:
        rx = re.compile(p, re.IGNORECASE)
        m = [rx.match(i) is not None for i in ids]
    except TimeoutError:
        sys.exit("python3 needed more than 10 s for pattern %r; keep the corpus free of catastrophic backtracking" % p)
    except Exception as e:
        results.append({"ok": False, "type": type(e).__name__,
                        "msg": getattr(e, "msg", None) or str(e),
                        "pos": getattr(e, "pos", None)})
        continue
    finally:
        signal.alarm(0)
    results.append({"ok": True, "m": m})
json.dump({"version": list(sys.version_info[:2]), "results": results}, sys.stdout)
"#;

/// Runs the oracle once for all patterns.
fn python(patterns: &[String], ids: &[String]) -> Value {
    let job = json!({"patterns": patterns, "ids": ids});
    let out = pipe(
        "python3",
        &["-c", ORACLE],
        job.to_string().as_bytes(),
        "this test needs python3 (3.11 or newer) on PATH as the oracle for Python's re module",
    );
    serde_json::from_slice(&out).expect("python3 answers JSON")
}

#[test]
fn lookup_patterns_agree_with_python_re() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let curated: Vec<String> = PATTERNS.iter().map(|p| p.to_string()).collect();
    let mut generated = fragment_patterns(2000, &mut rng);
    generated.extend(structured_patterns(2000, &mut rng));
    let corpus: Vec<String> = curated.iter().chain(&generated).cloned().collect();
    let equivalents = CPYTHON_BUGS.iter().map(|(_, e)| e.to_string());
    let all: Vec<String> = corpus.iter().cloned().chain(equivalents).collect();
    let ids: Vec<String> = IDS
        .iter()
        .map(|id| id.to_string())
        .chain(generated_ids(60, &mut rng))
        .collect();
    let oracle = python(&all, &ids);
    let version: Vec<u64> = oracle["version"]
        .as_array()
        .expect("version")
        .iter()
        .map(|v| v.as_u64().expect("int"))
        .collect();
    assert!(
        version.as_slice() >= [3, 11].as_slice(),
        "the oracle must be Python 3.11 or newer (the syntax ported), found {version:?}"
    );
    // Messages are compared with the Python version the parser was ported from.
    let same_messages = version.as_slice() == [3, 11].as_slice();
    let results = oracle["results"].as_array().expect("results");

    let mut problems = Vec::new();
    let (mut compared, mut both_reject, mut unknown_names) = (0usize, 0, 0);
    let (results, bug_results) = results.split_at(corpus.len());
    for (pattern, python) in corpus.iter().zip(results) {
        let ours = LookupPattern::new(pattern);
        if python["ok"] == Value::Bool(false) {
            let msg = python["msg"].as_str().unwrap_or_default();
            match ours {
                Ok(_) => problems.push(format!(
                    "{pattern:?}: Python rejects it ({msg}), we accept it"
                )),
                Err(e) => {
                    both_reject += 1;
                    let pos = python["pos"].as_u64().map(|p| p as usize);
                    match e.kind() {
                        PatternErrorKind::RejectedByPython if same_messages => {
                            let expected = match pos {
                                Some(p) => format!("{msg} at position {p}"),
                                None => msg.to_string(),
                            };
                            if !e.to_string().contains(&expected) || e.position() != pos {
                                problems.push(format!(
                                    "{pattern:?}: Python says `{expected}`, we say `{e}`"
                                ));
                            }
                        }
                        PatternErrorKind::RejectedByPython => {}
                        // A spelling we cannot tell from an alias hides Python's error behind it.
                        PatternErrorKind::Unsupported if pattern.contains("\\N{") => {}
                        _ => problems.push(format!(
                            "{pattern:?}: Python rejects it ({msg}), we refuse it as `{e}`"
                        )),
                    }
                }
            }
            continue;
        }
        let matches = python["m"].as_array().expect("match results");
        let ours = match ours {
            Ok(ours) => ours,
            // The one documented refusal: a `\N{...}` name alias (or a spelling like one).
            Err(e) if e.kind() == PatternErrorKind::Unsupported && pattern.contains("\\N{") => {
                unknown_names += 1;
                continue;
            }
            Err(e) => {
                problems.push(format!("{pattern:?}: Python accepts it, we refuse it: {e}"));
                continue;
            }
        };
        assert_eq!(ours.as_python(), pattern);
        for (id, expected) in ids.iter().zip(matches) {
            compared += 1;
            let expected = expected.as_bool().expect("bool");
            match ours.matches(id) {
                Ok(got) if got == expected => {}
                Ok(got) => problems.push(format!(
                    "{pattern:?} on {id:?}: Python {expected}, ours {got}"
                )),
                Err(e) => problems.push(format!(
                    "{pattern:?} on {id:?}: Python {expected}, ours {e}"
                )),
            }
        }
    }
    for ((bug, equivalent), python) in CPYTHON_BUGS.iter().zip(bug_results) {
        let ours = LookupPattern::new(bug).expect("Python accepts it");
        let matches = python["m"]
            .as_array()
            .expect("Python accepts the equivalent");
        for (id, expected) in ids.iter().zip(matches) {
            compared += 1;
            let expected = expected.as_bool().expect("bool");
            match ours.matches(id) {
                Ok(got) if got == expected => {}
                got => problems.push(format!(
                    "{bug:?} on {id:?}: Python {expected} on {equivalent:?}, ours {got:?}"
                )),
            }
        }
    }
    println!(
        "{} patterns ({} curated, {} CPython bugs) × {} ids against Python {}.{}: {compared} pairs compared, \
         {both_reject} patterns rejected by both, {unknown_names} with a character name alias",
        corpus.len(),
        curated.len(),
        CPYTHON_BUGS.len(),
        ids.len(),
        version[0],
        version[1],
    );
    assert!(curated.len() >= 250, "the curated corpus shrank");
    let unique: std::collections::HashSet<&String> = curated.iter().collect();
    assert_eq!(
        unique.len(),
        curated.len(),
        "the curated corpus has duplicates"
    );
    assert!(compared > 200_000, "compared only {compared} pairs");
    assert!(
        problems.is_empty(),
        "{} disagreement(s) with Python:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
