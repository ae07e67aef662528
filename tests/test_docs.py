"""Docs that cannot drift: the site builds with `--strict` (a broken link, anchor, page or API reference fails), and
every block the pages mark runnable runs, at the tiny sizes its marker gives (the convention: docs/writing-docs.md)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import ROOT, commands, marked_pages, python_block, run_page, same_output


def test_the_site_builds_strictly(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site/api/index.html").read_text().count("ShiftedEnv") > 5  # the reference was rendered


@pytest.mark.parametrize("page", marked_pages())
def test_the_runnable_blocks_of_each_page_run(page: str, tmp_path: Path, capfd):
    run_page(page, tmp_path, capfd)


def test_the_harness_fails_on_a_broken_command_and_on_output_that_differs(tmp_path: Path, capfd):
    for i, (block, message) in enumerate([("testbed fit --data.nope 1", "exited with 2"),
                                          ("pip install testbed", "only `testbed` commands run")]):
        page, folder = tmp_path / f"page{i}.md", tmp_path / f"run{i}"
        page.write_text(f"<!-- run -->\n```bash\n{block}\n```\n")
        folder.mkdir()
        with pytest.raises(AssertionError, match=message):
            run_page(str(page), folder, capfd)
    assert same_output(["epoch 1/2: loss 0.5 (6.7 s)", "...", "done"], ["epoch 1/2: loss 0.61 (12.0 s)", "x", "done"])
    assert not same_output(["epoch 1/2: loss 0.5", "done"], ["epoch 1/2: acc 0.5", "done"])
    assert commands("testbed a \\\n  --b 1 && testbed c  # note\n") == [["testbed", "a", "--b", "1"], ["testbed", "c"]]


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert not {p for p in pages if p not in nav}


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc gives a heading (its default slugify)."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def test_the_readme_is_short_its_links_resolve_and_its_plugin_is_the_plugin_page_s():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150  # the manual is the site (issue 29); the README is its front door
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#([^)]*))?\)", readme):
        path, anchor = ROOT / target[0], target[1]
        assert path.exists(), f"README links to {target[0]}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"README links to {target[0]}#{anchor}, no such heading"
    assert python_block("README.md", "NoisyFeatures").text == python_block("docs/plugging-in.md", "NoisyFeatures").text
