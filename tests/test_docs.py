"""The front door: README, docs/ and scripts/ say only what is true of the repository.

Every `scripts/...` path a document, script or module names exists, or is cited as it stood in git
(`git show REV:scripts/...`) and exists at that revision; the studies each say the question they answer.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT_PATH = re.compile(r"scripts/[\w/]+\.(?:py|sh)")
GIT_SHOW = re.compile(rf"git show (\w+):({SCRIPT_PATH.pattern})")


def _texts() -> list[Path]:
    """The files whose text may name a script: documents, scripts, the packages, the tests."""
    files = [REPO / "README.md", REPO / "PERFORMANCE.md", *sorted((REPO / "docs").glob("*.md"))]
    for folder in ("scripts", "extract", "classify", "features", "tests"):
        files += sorted(p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".sh", ".md"})
    return [f for f in files if f.is_file()]


def _in_git(name: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", name], cwd=REPO, stderr=subprocess.DEVNULL).returncode == 0


def _missing_scripts(text: str) -> set[str]:
    """The scripts ``text`` names that do not exist: a plain path missing from the working tree, or a
    ``git show REV:PATH`` citation whose path is not in that revision. A revision this checkout does not
    hold (a shallow clone, a tarball) cannot be judged and counts as found."""
    missing = {f"{rev}:{path}" for rev, path in set(GIT_SHOW.findall(text))
               if _in_git(f"{rev}^{{commit}}") and not _in_git(f"{rev}:{path}")}
    return missing | {name for name in SCRIPT_PATH.findall(GIT_SHOW.sub("", text)) if not (REPO / name).is_file()}


def test_every_named_script_exists():
    missing = {(f.relative_to(REPO).as_posix(), name)
               for f in _texts() for name in _missing_scripts(f.read_text(encoding="utf-8"))}
    assert not missing, sorted(missing)


def test_a_script_cited_in_git_counts_only_at_its_revision():
    # the paths are joined here so that this file's own text names no missing script
    deleted, never = "/".join(("scripts", "studies", "explain_sface.py")), "/".join(("scripts", "no_such.py"))
    assert not (REPO / deleted).exists()
    if not _in_git("1270e34^{commit}"):
        pytest.skip("this checkout does not hold the history (a shallow clone or a tarball)")
    assert _missing_scripts(f"`git show 1270e34:{deleted}`") == set()
    assert _missing_scripts(f"`python {deleted}`") == {deleted}
    assert _missing_scripts(f"`git show 1270e34:{never}`") == {f"1270e34:{never}"}


def test_scripts_top_level_holds_the_product_only():
    top = {p.name for p in (REPO / "scripts").iterdir() if p.is_file()}
    assert not {n for n in top if n.startswith(("bench_", "check_"))}, "benchmarks belong in scripts/bench/"
    assert {"main.sh", "setup.sh", "test.sh"} <= top


@pytest.mark.parametrize("study", sorted((REPO / "scripts" / "studies").glob("*.py")), ids=lambda p: p.name)
def test_each_study_says_its_question(study):
    first = study.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith('"""Study: ') and "?" in first, first


# ---------------------------------------------------------------- README and docs/

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_WORDS = 1250
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
INLINE = re.compile(r"`((?:\$py|python|\.venv/bin/python) -m (?:extract|classify)[^`]*)`")


def _commands(text: str) -> list[list[str]]:
    """Every `python -m extract|classify ...` command of a document as argv (without `-m PACKAGE`), with
    its package first: those of the code blocks (continuation lines joined, comments cut), and inline
    ones that are complete commands (no `[optional]`, `...` or `a|b` placeholders)."""
    lines = []
    for _, block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    lines += [c for c in INLINE.findall(text) if not re.search(r"\[|\.\.\.|\|", c)]
    found = []
    for line in lines:
        words = shlex.split(line.split("#", 1)[0])
        for at in range(1, len(words) - 1):
            if words[at] == "-m" and words[at + 1] in ("extract", "classify") \
                    and words[at - 1].endswith(("py", "python")):
                found.append(words[at + 1:])
    return found


def _parse(argv: list[str]) -> None:
    """Parse argv with the real parser of its package and subcommand; argparse's error becomes a failure."""
    from classify import cli as classify_cli
    from extract import cli as extract_cli
    from extract import upgrade, verify

    package, args = argv[0], argv[1:]
    if package == "classify":
        parser, args = classify_cli.build_parser(), args
    elif args[:1] == ["list"]:
        parser, args = extract_cli._list_parser(), args[1:]
    elif args[:1] == ["verify"]:
        parser, args = verify.build_parser(), args[1:]
    elif args[:1] == ["upgrade"]:
        parser, args = upgrade.build_parser(), args[1:]
    else:
        parser = extract_cli.build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as stop:
        pytest.fail(f"`{' '.join(argv)}` is refused by its parser (exit {stop.code})")


def test_readme_is_a_quickstart():
    words = len((REPO / "README.md").read_text(encoding="utf-8").split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words (prose and code); at most {README_MAX_WORDS}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page
        if not (doc.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, broken


def test_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in DOCS[1:] if f"docs/{p.name}" not in readme] == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_documented_command_parses(doc):
    commands = _commands(doc.read_text(encoding="utf-8"))
    for argv in commands:
        _parse(argv)
    if doc.name in ("README.md", "stages.md"):
        assert len(commands) >= 7  # the quickstart blocks are found


@pytest.mark.usefixtures("tiny_backbones")
def test_the_readme_quickstart_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's stages block, run command by command on generated CelebA and UTKFace folders with the
    tiny test backbone in place of dlib_resnet: each command exits 0 and leaves what the README says; then
    its Python example on the head that block trained."""
    from classify import cli as classify_cli
    from extract import cli as extract_cli
    from tests.fixtures import make_celeba, make_utkface

    celeba, utk = make_celeba(tmp_path, n=40), make_utkface(tmp_path, n=40)
    faces = tmp_path / "my_faces"
    faces.mkdir()
    for image in sorted((celeba / "img_align_celeba").glob("*.jpg"))[:3]:
        (faces / image.name).write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(code for _, code in FENCE.findall(readme) if "-m classify train" in code)
    block = (block.replace("dlib_resnet", "tiny_test").replace("data/celeba", str(celeba))
             .replace("data/utkface", str(utk)))
    commands = _commands(f"```\n{block}```")
    assert [argv[:2] for argv in commands] == [["extract", "list"], ["extract", "--dataset"],
                                               ["extract", "--dataset"], ["classify", "train"],
                                               ["classify", "compare"], ["classify", "predict"],
                                               ["classify", "evaluate"], ["classify", "report"]]
    for package, *args in commands:
        if package == "extract":
            code = extract_cli.main([*args, "--plugin", "tests.extract_tiny", "--no-progress"]
                                    + ([] if args == ["list"] else ["--workers", "0"]))
        else:
            code = classify_cli.main(args)
        assert code == 0, f"{package} {' '.join(args)}"
    heads = tmp_path / "runs" / "celeba" / "heads"
    assert (heads / "tiny_test__logreg.npz").is_file() and (heads / "leaderboard.md").is_file()
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 1 + 3  # a header and one row per image
    assert "<h2>Summary</h2>" in (tmp_path / "runs" / "celeba" / "report.html").read_text(encoding="utf-8")
    assert (tmp_path / "runs" / "celeba" / "report.md").is_file()
    _run_the_python_example(readme, faces, capsys)


def _run_the_python_example(readme: str, faces: Path, capsys) -> None:
    """The README's `GenderModel` example on the head the stages block trained, with two of its images."""
    example = next(code for kind, code in FENCE.findall(readme) if kind == "python")
    first, second = sorted(faces.glob("*.jpg"))[:2]
    example = (example.replace("dlib_resnet", "tiny_test").replace('"face.jpg"', repr(str(first)))
               .replace('"group.jpg"', repr(str(second))))
    capsys.readouterr()
    exec(compile(example, "README.md", "exec"), {})  # noqa: S102 - the README's own code, run as a user would
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [words[0] for words in printed] == [str(first), str(second)]
    assert all(words[1] in ("male", "female") and 0.5 <= float(words[2]) <= 1 for words in printed)
