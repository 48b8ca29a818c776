"""Image building without a registry: base image, repository images cut at a commit, pruning."""
from __future__ import annotations

import subprocess

import pytest

from sandboxes.images import (
    MANAGED_LABEL,
    _mirror_from_deb822,
    _mirror_from_sources_list,
    ensure_base_image,
    prune_images,
)
from sandboxes.repo_images import build_repo_image


def test_mirror_from_deb822_and_sources_list():
    deb822 = (
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert _mirror_from_deb822(deb822, "bookworm") == "http://mirror.example/debian"
    assert _mirror_from_deb822(deb822, "trixie") is None
    listing = "# deb http://old/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert _mirror_from_sources_list(listing, "bookworm") == "http://m.example/debian"


@pytest.mark.docker
def test_base_image_is_a_noop_when_present(docker_client, base_image):
    assert ensure_base_image(docker_client, progress=lambda m: None) == base_image
    image = docker_client.images.get(base_image)
    assert image.labels[MANAGED_LABEL] == "1"
    assert "agent-rl/base:latest" in image.tags


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo_with_future(tmp_path):
    """A repo whose later commit (the 'fix') lives on main, a branch, a tag and a remote ref."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "lib.py").write_text("def answer():\n    return 41\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "lib.py").write_text("def answer():\n    return 42  # THE FIX\n")
    _git(repo, "commit", "-qam", "fix")
    fix = _git(repo, "rev-parse", "HEAD")
    _git(repo, "branch", "feature")
    _git(repo, "tag", "v2")
    _git(repo, "remote", "add", "origin", "https://example.invalid/repo.git")
    _git(repo, "update-ref", "refs/remotes/origin/main", fix)
    _git(repo, "stash", "list")
    return repo, base, fix


@pytest.mark.docker
def test_repo_image_has_no_history_after_base_commit(docker_client, base_image, repo_with_future):
    repo, base, fix = repo_with_future
    tag = build_repo_image(repo, base, setup=["python3 -c 'import lib' && echo built > /testbed/.setup-ran"],
                           base=base_image, client=docker_client, progress=lambda m: None)
    assert tag.startswith("agent-rl/repo:")
    script = (
        "git log --all --format=%H; echo ---; git remote; echo ---; "
        "git cat-file --batch-all-objects --batch-check | grep -c commit; "
        "grep -r 'THE FIX' . || echo clean; stat -c %u lib.py .setup-ran; id -u; git status --porcelain"
    )
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "bash", "-c", script],
                         capture_output=True, text=True, check=True).stdout
    log, remotes, rest = out.split("---\n")
    assert log.split() == [base]
    assert remotes.strip() == ""
    assert rest.split()[:6] == ["1", "clean", "1000", "1000", "1000", "??"]
    # Same inputs: no rebuild, same tag, also when the commit is given by a ref name.
    assert build_repo_image(repo, base, setup=["python3 -c 'import lib' && echo built > /testbed/.setup-ran"],
                            base=base_image, client=docker_client) == tag
    assert fix not in out


@pytest.mark.docker
def test_bad_commit_and_failing_setup_are_clear_errors(docker_client, base_image, repo_with_future):
    from sandboxes.images import ImageBuildError

    repo, base, _ = repo_with_future
    with pytest.raises(ImageBuildError, match="git rev-parse"):
        build_repo_image(repo, "no-such-ref", base=base_image, client=docker_client, progress=lambda m: None)
    with pytest.raises(ImageBuildError, match="setup step 1 failed"):
        build_repo_image(repo, base, setup=["echo failing-setup; exit 1"], base=base_image,
                         client=docker_client, progress=lambda m: None)


@pytest.mark.docker
def test_prune_removes_only_managed_dangling_images(docker_client, base_image, tmp_path):
    import io

    def build(label_value: str, marker: str) -> str:
        dockerfile = f"FROM {base_image}\nLABEL {MANAGED_LABEL}={label_value} marker={marker}\n"
        image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="agent-rl/prune-test:x",
                                              rm=True)
        return image.id

    managed_old = build("1", "a")
    unmanaged_old = build("0", "b")  # untags managed_old
    build("0", "c")  # untags unmanaged_old
    try:
        removed = prune_images(docker_client)
        assert any(managed_old in entry for entry in removed)
        assert docker_client.images.get(unmanaged_old)  # not ours: untouched
        assert docker_client.images.get(base_image)  # tagged: untouched
    finally:
        for ref in ("agent-rl/prune-test:x", unmanaged_old):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:
                pass


def test_low_disk_is_a_clear_error(tmp_path):
    from sandboxes.images import ImageBuildError, _check_free_disk

    with pytest.raises(ImageBuildError, match="GiB free under .*prune"):
        _check_free_disk(str(tmp_path), needed=1 << 60)
