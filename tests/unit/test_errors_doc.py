from pathlib import Path

from domain.errors import CATALOGUE, ErrorCode, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_every_code_has_a_catalogue_entry():
    assert set(CATALOGUE) == set(ErrorCode)


def test_docs_errors_md_is_generated_from_the_catalogue():
    assert DOC.read_text() == render_markdown(), "run: make docs"


ROOT = DOC.parents[1]


def _sources(*folders: str) -> str:
    return "\n".join(p.read_text() for f in folders for p in (ROOT / f).rglob("*.py")
                     if p.name != "errors.py")


def test_every_code_is_raised_somewhere_and_asserted_in_a_test():
    code_text = _sources("domain", "adapters", "activities", "workflows", "workers")
    test_text = _sources("tests")
    for code in ErrorCode:
        assert f"ErrorCode.{code.name}" in code_text or f'"{code}"' in code_text, code
        assert code.value in test_text, code
