"""Smoke checks: does what the recovered database says equal what the spec expects, and is a
check's SQL something a check may run at all?"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from domain.errors import DrillError, ErrorCode

if TYPE_CHECKING:  # domain.report imports domain.spec, which imports this module
    from domain.report import CheckResult


def _as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def values_match(observed: Any, expected: Any) -> bool:
    """Numbers compare by value (count(*) is 3000 whether int or '3000'); the rest exactly."""
    left, right = _as_number(observed), _as_number(expected)
    if left is not None and right is not None:
        return left == right
    if isinstance(expected, str) and not isinstance(observed, str) and observed is not None:
        return str(observed) == expected
    return observed == expected


def json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def verdict(name: str, observed: Any, expected: Any) -> CheckResult:
    from domain.report import CheckResult

    observed = json_safe(observed)
    return CheckResult(
        name=name, passed=values_match(observed, expected), observed=observed, expected=expected
    )


# --- What a check may not do --------------------------------------------------------------------
#
# A check is one read-only query. At spec validation, before any sandbox exists, a check naming
# a server-side file or program function, COPY, a role switch, or a way to run SQL built from a
# string (which would hide all of these) is refused with CHECK_UNSAFE. This is a guard against
# mistakes and casual abuse, read from the SQL's tokens (comments and string contents skipped):
# the run-time defences are in activities/checks.py (one statement, read-only transaction,
# statement timeout, SET ROLE pg_read_all_data).

_FILES = "reads or writes files on the database server"
_ROLE = "changes the role or the settings the check runs with"
_HIDDEN = "runs SQL built from a string, out of sight of this check"
_TRANSACTION = "ends or changes the check's read-only transaction"

_DENIED_FUNCTIONS = {
    "pg_read_file": _FILES, "pg_read_binary_file": _FILES, "pg_stat_file": _FILES,
    "lo_import": _FILES, "lo_export": _FILES,
    "set_config": _ROLE,
    "ts_stat": _HIDDEN, "ts_rewrite": _HIDDEN,
}
_DENIED_PREFIXES = {
    "pg_ls_": _FILES,  # pg_ls_dir, pg_ls_waldir, pg_ls_logdir, pg_ls_tmpdir, ...
    "pg_file_": _FILES,  # adminpack: pg_file_write, pg_file_rename, pg_file_unlink, ...
    "pg_logdir_ls": _FILES,
    "dblink": "connects to other servers and runs SQL there",
    "query_to_xml": _HIDDEN,  # query_to_xml, query_to_xmlschema, query_to_xml_and_xmlschema
}
_DENIED_STATEMENTS = {
    "copy": "reads or writes files or runs programs on the database server",
    "do": _HIDDEN,
    "load": "loads a library into the database server",
    "set": _ROLE, "reset": _ROLE,
    **{word: _TRANSACTION for word in (
        "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release")},
}

_IDENT_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_STRING_PREFIXES = ("e", "b", "x", "n")


@dataclass(frozen=True)
class _Token:
    kind: str  # word (unquoted identifier or keyword, lower-cased), name ("quoted"), string, punct
    text: str


def _skip_string(sql: str, i: int, backslashes: bool) -> int:
    """Index after the '...' string starting at sql[i] ('' doubles a quote; with E'' a
    backslash escapes the next character). Unterminated: the end."""
    i += 1
    while i < len(sql):
        if backslashes and sql[i] == "\\":
            i += 2
        elif sql[i] == "'":
            if sql.startswith("''", i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i


def _skip_block_comment(sql: str, i: int) -> int:
    depth, i = 1, i + 2  # PostgreSQL's block comments nest
    while i < len(sql) and depth:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


class UnreadableSql(Exception):
    """Something the deny-list cannot see through (it is refused rather than guessed at)."""


def sql_tokens(sql: str) -> list[_Token]:
    """The SQL's tokens as PostgreSQL's lexer splits them, as far as the deny-list needs:
    comments dropped, string and dollar-quoted contents kept opaque."""
    tokens: list[_Token] = []
    i = 0
    while i < len(sql):
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif ch == "'":
            i = _skip_string(sql, i, backslashes=False)
            tokens.append(_Token("string", "'"))
        elif sql[i:i + 3].lower() in ("u&'", 'u&"'):
            raise UnreadableSql("a Unicode-escaped name or string (U&...)")
        elif ch.lower() in _STRING_PREFIXES and sql.startswith("'", i + 1):
            i = _skip_string(sql, i + 1, backslashes=ch.lower() == "e")
            tokens.append(_Token("string", "'"))
        elif ch == '"':
            end = i + 1
            while True:
                end = sql.find('"', end)
                if end < 0 or not sql.startswith('""', end):
                    break
                end += 2
            end = len(sql) if end < 0 else end
            tokens.append(_Token("name", sql[i + 1:end].replace('""', '"').lower()))
            i = end + 1
        elif ch == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(tag.group(0), tag.end())
            i = len(sql) if end < 0 else end + len(tag.group(0))
            tokens.append(_Token("string", "$"))
        elif _IDENT_START.match(ch):
            word = _IDENT.match(sql, i).group(0)
            tokens.append(_Token("word", word.lower()))
            i += len(word)
        else:
            tokens.append(_Token("punct", ch))
            i += 1
    return tokens


def _statements(tokens: list[_Token]) -> list[list[_Token]]:
    statements: list[list[_Token]] = [[]]
    for token in tokens:
        if token == _Token("punct", ";"):
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _statement_construct(statement: list[_Token]) -> tuple[str, str] | None:
    first = statement[0]
    if first.kind != "word" or first.text not in _DENIED_STATEMENTS:
        return None
    words = [t.text for t in statement[1:4] if t.kind in ("word", "name")]
    if first.text in ("set", "reset"):
        rest = words[1:] if words[:1] in (["session"], ["local"]) else words
        if rest[:1] == ["role"]:
            return f"{first.text.upper()} ROLE", _ROLE
        if rest[:1] in (["authorization"], ["session_authorization"]) \
                or words[:2] == ["session", "authorization"]:
            return f"{first.text.upper()} SESSION AUTHORIZATION", _ROLE
    return first.text.upper(), _DENIED_STATEMENTS[first.text]


def _function_construct(tokens: list[_Token]) -> tuple[str, str] | None:
    for token, following in zip(tokens, tokens[1:]):
        if token.kind not in ("word", "name") or following != _Token("punct", "("):
            continue
        name = token.text
        reason = _DENIED_FUNCTIONS.get(name) or next(
            (why for prefix, why in _DENIED_PREFIXES.items() if name.startswith(prefix)), None)
        if reason:
            return f"{name}()", reason
    return None


def unsafe_construct(sql: str) -> tuple[str, str] | None:
    """(construct, why it is refused) for the first thing in `sql` a check may not do."""
    try:
        tokens = sql_tokens(sql)
    except UnreadableSql as exc:
        return str(exc), "it can hide any name from this check"
    statements = _statements(tokens)
    if len(statements) > 1:
        return "more than one statement (;)", "a check runs as one statement"
    for statement in statements:
        found = _statement_construct(statement) or _function_construct(statement)
        if found:
            return found
    return None


def refuse_unsafe_check(name: str, sql: str) -> None:
    """CHECK_UNSAFE, naming the check and the construct, for SQL a check may not run."""
    found = unsafe_construct(sql)
    if found is None:
        return
    construct, why = found
    raise DrillError(
        ErrorCode.CHECK_UNSAFE,
        f"check {name!r} uses {construct} ({why})",
        f"Make check {name!r} one read-only query, without {construct} (e.g. select count(*) "
        "from orders where ...); checks run as pg_read_all_data, with no file or program "
        "access.",
    )
