from pathlib import Path

from domain.errors import CATALOGUE, ErrorCode, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_every_code_has_a_catalogue_entry():
    assert set(CATALOGUE) == set(ErrorCode)


def test_docs_errors_md_is_generated_from_the_catalogue():
    assert DOC.read_text() == render_markdown(), "run: make docs"
