"""Every ```python block of README.md runs as written, each in a fresh namespace.

Blocks run in this process (JAX is imported once), from the repo root, with HF_HUB_OFFLINE=1, as a
reader would paste them into a notebook. A block whose info string says ``no-run``
(```python no-run) is skipped; use that only for code that cannot run in a test.
"""

import pathlib
import re
from typing import NamedTuple

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
SECTION = "Use fft from your own code"
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)(.*)$")  # An opening fence: language, rest.
_CLOSE = re.compile(r"^(`{3,}|~{3,})\s*$")


class Block(NamedTuple):
    index: int  # Among the README's python blocks, from 0.
    heading: str  # The closest heading above the block.
    line: int  # 1-based line of the block's first code line.
    info: str  # The rest of the info string after the language, e.g. 'no-run'.
    code: str


def python_blocks(text: str) -> list[Block]:
    """The ```python fenced blocks of a Markdown text, with the heading each sits under."""
    blocks: list[Block] = []
    heading, fence, start, lang, info, body = "", None, 0, "", "", []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = _FENCE.match(line)
            if m:
                fence, start, lang, info, body = m.group(1), number + 1, m.group(2), m.group(3), []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif (
            (m := _CLOSE.match(line))
            and m.group(1)[0] == fence[0]
            and len(m.group(1)) >= len(fence)
        ):
            if lang.lower() in ("python", "py", "python3"):
                blocks.append(
                    Block(len(blocks), heading, start, info.strip(), "\n".join(body) + "\n")
                )
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the code fence opened before line {start} is never closed"
    return blocks


BLOCKS = python_blocks(README.read_text())


def _id(block: Block) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", block.heading.lower()).strip("-")
    return f"{block.index}-{slug or 'top'}"


def test_section_has_python_examples():
    in_section = [b for b in BLOCKS if b.heading == SECTION]
    assert f"\n## {SECTION}\n" in README.read_text(), f"README.md lacks the section '## {SECTION}'"
    assert len(in_section) >= 4, f"'## {SECTION}' has {len(in_section)} python blocks, want >= 4"


def test_parser_finds_blocks_and_headings():
    text = "# A\n```python\nx = 1\n```\n## B\n```bash\n# not a heading\n```\n````python no-run\ny\n````\n"
    assert python_blocks(text) == [
        Block(0, "A", 3, "", "x = 1\n"),
        Block(1, "B", 10, "no-run", "y\n"),
    ]


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_block_runs(block: Block, monkeypatch, capsys):
    if "no-run" in block.info.split():
        pytest.skip(f"README.md line {block.line}: marked no-run")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Padded to the block's place in README.md, so tracebacks show README's own lines.
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    namespace = {"__name__": f"readme_block_{block.index}"}
    # Running the README's own code is the point; an exception fails the test.
    exec(code, namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert printed.strip(), f"README.md line {block.line}: the block printed nothing"
