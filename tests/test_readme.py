"""The README's Python examples run as written and print what their comments say."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_and_prints_what_its_comments_say(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)       # examples may write files (checkpoints)
    source = BLOCKS[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, f"README block {index}", "exec"), {})
    # A `print(...)  # expected` line must print the expected text.
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s*#\s*(.+)$", source, re.M)]
    if expected:
        assert out.getvalue().splitlines() == expected
