"""Smoke checks: does what the recovered database says match what the spec expects, and is a
check's SQL something a check may run at all?

Every kind ends in a CheckResult built here, from what the adapter read (adapters/
smoke_checks.py): a value or rows for `sql`, the recovered schema for `schema`, orphan counts
for `referential_integrity`, amcheck's findings for `amcheck`, the newest timestamp for
`freshness`. A check that cannot run at all (amcheck not installed in the backup, no foreign
key to check) is `skipped`: never a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, \
    model_validator

from domain.errors import DrillError, ErrorCode
from domain.schema import SchemaSnapshot, schema_differences
from domain.targets import ResolvedTarget
from domain.timeparse import format_utc

if TYPE_CHECKING:  # domain.report imports domain.spec, which imports this module
    from domain.report import CheckResult, Recovered


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
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --- What an `sql` check expects -----------------------------------------------------------------


class ExpectRange(BaseModel):
    """`expect: {min: 1, max: 10}`: a number within the bounds given (inclusive)."""

    model_config = ConfigDict(extra="forbid")

    min: int | float | None = None
    max: int | float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ExpectRange:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def met_by(self, observed: Any) -> bool:
        number = _as_number(observed)
        return number is not None \
            and (self.min is None or number >= _as_number(self.min)) \
            and (self.max is None or number <= _as_number(self.max))


class ExpectRegex(BaseModel):
    """`expect: {regex: "^v[0-9]+"}`: the value as text matches (re.search: anchor with ^ $)."""

    model_config = ConfigDict(extra="forbid")

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def met_by(self, observed: Any) -> bool:
        return observed is not None and re.search(self.regex, str(observed)) is not None


class ExpectRows(BaseModel):
    """`expect: {rows: [[1, "a"], [2, "b"]]}`: the whole result, row by row, in order (say
    ORDER BY), each value compared as a plain `expect` is."""

    model_config = ConfigDict(extra="forbid")

    rows: list[list[Any]]

    def met_by(self, observed: Any) -> bool:
        return isinstance(observed, list) and len(observed) == len(self.rows) and all(
            isinstance(got, list) and len(got) == len(want)
            and all(values_match(o, e) for o, e in zip(got, want))
            for got, want in zip(observed, self.rows))


_FORMS: dict[frozenset, type[BaseModel]] = {
    frozenset({"min"}): ExpectRange, frozenset({"max"}): ExpectRange,
    frozenset({"min", "max"}): ExpectRange, frozenset({"regex"}): ExpectRegex,
    frozenset({"rows"}): ExpectRows}


def _form(value: Any) -> Any:
    """A mapping with exactly a form's keys is that form (and must be a valid one); any other
    value, other mappings included, is compared as it is."""
    form = _FORMS.get(frozenset(value)) if isinstance(value, dict) else None
    if form is None:
        return value
    try:
        return form.model_validate(value)
    except ValidationError as exc:
        raise ValueError("; ".join(error["msg"] for error in exc.errors())) from None


Expectation = Annotated[Any, BeforeValidator(_form)]


def expectation_met(observed: Any, expected: Any) -> bool:
    if isinstance(expected, (ExpectRange, ExpectRegex, ExpectRows)):
        return expected.met_by(observed)
    return values_match(observed, expected)


def _result(name: str, kind: str, **fields: Any) -> CheckResult:
    from domain.report import CheckResult  # here, not above: see TYPE_CHECKING

    return CheckResult(name=name, kind=kind, **fields)


def shown(expected: Any) -> Any:
    """The expectation as the report shows it (a form as its mapping)."""
    return expected.model_dump(exclude_none=True) if isinstance(expected, BaseModel) else expected


def verdict(name: str, observed: Any, expected: Any) -> CheckResult:
    observed = json_safe(observed)
    return _result(name, "sql", passed=expectation_met(observed, expected),
                       observed=observed, expected=shown(expected))


def skipped(name: str, kind: str, why: str) -> CheckResult:
    """A check that could not run: shown as skipped, never counted as a pass."""
    return _result(name, kind, passed=False, skipped=why)


def errored(name: str, kind: str, error: str, expected: Any = None) -> CheckResult:
    return _result(name, kind, passed=False, expected=shown(expected), error=error)


# --- schema --------------------------------------------------------------------------------------

# Differences listed in the report; the count says how many there were in all.
MAX_LISTED = 50


def schema_verdict(name: str, snapshot: SchemaSnapshot, recovered: SchemaSnapshot) -> CheckResult:
    differences = schema_differences(snapshot, recovered)
    listed = differences[:MAX_LISTED]
    if len(differences) > MAX_LISTED:
        listed.append(f"... and {len(differences) - MAX_LISTED} more")
    origin = "the snapshot" + (f" of {snapshot.database}" if snapshot.database else "") \
        + (f" taken {format_utc(snapshot.taken_at)}" if snapshot.taken_at else "")
    return _result(name, "schema", passed=not differences, observed=listed,
                       expected=f"{len(snapshot.tables)} tables as in {origin}")


# --- referential_integrity -----------------------------------------------------------------------

WORST_OFFENDERS = 5


@dataclass(frozen=True)
class Orphans:
    """One foreign key's rows whose referenced row is missing (MATCH SIMPLE: a row with a
    NULL in the key references nothing; MATCH FULL: a partly NULL key is an orphan too)."""

    foreign_key: str  # constraint name
    table: str  # schema.table holding the key
    references: str  # schema.table it references
    orphans: int
    examples: tuple = ()  # a few orphan keys, for the reader


def referential_verdict(name: str, counted: list[Orphans]) -> CheckResult:
    if not counted:
        return skipped(name, "referential_integrity",
                       "no foreign key to check in the recovered database")
    total = sum(fk.orphans for fk in counted)
    worst = sorted((fk for fk in counted if fk.orphans), key=lambda fk: (-fk.orphans, fk.table,
                                                                          fk.foreign_key))
    return _result(
        name, "referential_integrity", passed=total == 0,
        observed={"orphans": total, "foreign_keys": len(counted), "worst": [
            {"foreign_key": fk.foreign_key, "table": fk.table, "references": fk.references,
             "orphans": fk.orphans, "examples": json_safe(list(fk.examples))}
            for fk in worst[:WORST_OFFENDERS]]},
        expected={"orphans": 0})


# --- amcheck -------------------------------------------------------------------------------------


def amcheck_verdict(name: str, verified: list[str], unverified: list[str],
                    corruption: list[str]) -> CheckResult:
    """`verified`: what amcheck looked at ("public.orders (heap)"); `unverified`: what it
    could not (a GIN index, an unlogged table during recovery), each saying why; `corruption`:
    what it found, each naming its relation. Corruption fails; nothing verified is an error."""
    observed = {"verified": verified, "unverified": unverified,
                "corruption": corruption[:MAX_LISTED]}
    if not verified and not corruption:
        return _result(name, "amcheck", passed=False, observed=observed,
                           expected={"corruption": []},
                           error="nothing verified: " + "; ".join(unverified))
    return _result(name, "amcheck", passed=not corruption, observed=observed,
                       expected={"corruption": []})


# --- freshness -----------------------------------------------------------------------------------


class RecoveredPoint(BaseModel):
    """The instant the recovered data should reach, for `freshness`."""

    at: datetime
    meaning: str


def recovered_point(target: ResolvedTarget | None, recovered: Recovered | None,
                    drill_started: datetime | None) -> RecoveredPoint | None:
    """A time target: that instant (PostgreSQL replayed every commit before it). `latest`: the
    drill's start, so an archive that lags (and replays too little) shows. Any other target
    (lsn, xid, name, immediate): the last commit replayed. None when there is none."""
    if target is not None and target.mode == "time" and target.utc is not None:
        return RecoveredPoint(at=target.utc, meaning="the target time")
    if target is not None and target.mode == "latest" and drill_started is not None:
        return RecoveredPoint(at=drill_started,
                              meaning="the drill's start (target latest: the end of the archive)")
    if recovered is not None and recovered.last_commit_time is not None:
        return RecoveredPoint(at=recovered.last_commit_time, meaning="the last commit replayed")
    return None


def _instant(value: datetime | date) -> datetime:
    """A column value as UTC: timestamp without time zone and date are read as UTC."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def freshness_verdict(name: str, newest: datetime | date | None, point: RecoveredPoint,
                      tolerance: timedelta, tolerance_text: str) -> CheckResult:
    """The newest value may be at most `tolerance` older than the recovered point (newer passes:
    a source still writing while a `latest` drill runs)."""
    expected = {"newest_not_before": format_utc(point.at - tolerance),
                "point": format_utc(point.at), "point_is": point.meaning,
                "tolerance": tolerance_text}
    if newest is None:
        return _result(name, "freshness", passed=False,
                           observed={"newest": None}, expected=expected)
    at = _instant(newest)
    behind = (point.at - at).total_seconds()
    return _result(name, "freshness", passed=at >= point.at - tolerance,
                       observed={"newest": format_utc(at), "behind_seconds": round(behind, 6)},
                       expected=expected)


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
