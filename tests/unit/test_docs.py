"""The README agrees with docs/install.md, cites no issue numbers, and its picture is there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _shell_blocks(text: str) -> list[list[str]]:
    """Return each ```sh block's commands: continuation lines joined, comments dropped."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", "", body)
        commands = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
        blocks.append([" ".join(c.split()) for c in commands if c])
    return blocks


def test_the_short_pi_install_is_docs_install_md_in_order() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Installing on a Raspberry Pi", 1)[1].split("\n## ", 1)[0]
    (short,) = _shell_blocks(section)
    install = [c for block in _shell_blocks((ROOT / "docs/install.md").read_text()) for c in block]
    # Each command of the short form is in docs/install.md, and in the same order.
    positions = []
    for command in short:
        assert command in install, f"README's {command!r} is not in docs/install.md"
        positions.append(install.index(command))
    assert positions == sorted(positions)
    # ...and nothing docs/install.md does before starting the service is left out.
    start = install.index("sudo systemctl enable --now amr-gateway")
    skipped = [c for c in install[:start] if c not in short]
    assert skipped == ["/opt/amr-gateway/bin/amr-gateway --version"]


def test_the_readme_cites_no_issue_numbers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"(?i)issue\s*#?\d+|\(#\d+\)|#\d{1,4}\b", readme) == []


def test_the_readme_pictures_are_small_pngs_and_the_load_profile_says_its_command() -> None:
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", readme)
    assert "docs/img/load-profile.png" in images
    for image in images:
        data = (ROOT / image).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) < 150_000, image
    assert "--plot docs/img/load-profile.png" in readme  # and the command that made it
