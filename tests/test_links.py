"""`make links` (tools/links.py): Binder, dashboard and nbgitpuller links from the git remote."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from _tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


links = load_tool("links")


@pytest.mark.parametrize(
    "remote",
    ["https://github.com/acme/gradcourse.git", "https://github.com/acme/gradcourse",
     "git@github.com:acme/gradcourse.git", "ssh://git@github.com/acme/gradcourse.git"],
)
def test_github_remotes_in_every_spelling(remote):
    repo = links.parse_remote(remote)
    assert repo == links.Repo("https://github.com/acme/gradcourse", "gh/acme/gradcourse", "gradcourse")


def test_other_hosts_use_binders_gitlab_and_git_providers():
    assert links.parse_remote("https://gitlab.com/g/sub/course.git").binder_spec == "gl/g%2Fsub%2Fcourse"
    assert links.parse_remote("https://git.example.org/a/b").binder_spec == "git/https%3A%2F%2Fgit.example.org%2Fa%2Fb"


@pytest.mark.parametrize("remote", ["/srv/git/gradcourse", "../gradcourse", "file:///srv/git/x"])
def test_local_remotes_are_refused(remote):
    with pytest.raises(ValueError, match="url"):
        links.parse_remote(remote)


def test_the_three_links():
    repo = links.parse_remote("git@github.com:acme/gradcourse.git")
    out = list(links.links(repo, "main", "https://hub.example.edu/").values())
    assert out[0] == "https://mybinder.org/v2/gh/acme/gradcourse/main?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    assert out[1] == "https://mybinder.org/v2/gh/acme/gradcourse/main?urlpath=voila/render/dashboard/dashboard.ipynb"
    pull = urlsplit(out[2])
    assert (pull.scheme, pull.netloc, pull.path) == ("https", "hub.example.edu", "/hub/user-redirect/git-pull")
    assert parse_qs(pull.query) == {"repo": ["https://github.com/acme/gradcourse"], "branch": ["main"],
                                    "urlpath": ["lab/tree/gradcourse/notebooks/00_start_here.ipynb"]}
    assert (ROOT / "dashboard" / "dashboard.ipynb").exists() and (ROOT / "notebooks" / "00_start_here.ipynb").exists()


def test_readme_badges_rewritten_for_the_remote():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    repo = links.parse_remote("https://github.com/acme/gradcourse")
    new = links.rewrite_readme(text, repo, "main")
    assert text.count("https://mybinder.org/v2/") == 2, "README has the course badge and the dashboard badge"
    assert new.count("https://mybinder.org/v2/gh/acme/gradcourse/main?urlpath=") == 2
    assert "voila/render/dashboard/dashboard.ipynb" in new and "lab/tree/notebooks/00_start_here.ipynb" in new
    assert links.rewrite_readme(new, repo, "main") == new


def test_no_remote_says_so_and_fails(monkeypatch, capsys):
    monkeypatch.setattr(links, "git_remote", lambda name: None)
    assert links.main([]) == 1
    err = capsys.readouterr().err
    assert "No git remote 'origin'" in err and "https://" not in err.split("e.g.")[0]


def test_with_a_remote_prints_links_and_asks_for_the_hub(monkeypatch, capsys):
    monkeypatch.setattr(links, "git_remote", lambda name: "https://github.com/acme/gradcourse.git")
    assert links.main(["--branch", "spring"]) == 0
    out = capsys.readouterr().out
    assert "https://mybinder.org/v2/gh/acme/gradcourse/spring?urlpath=voila/render/dashboard/dashboard.ipynb" in out
    assert "OWNER" not in out and "make links HUB=" in out


@pytest.mark.parametrize("remote", ["https://GitHub.com/acme/gradcourse.git", "https://www.github.com/acme/gradcourse",
                                    "git@WWW.GitHub.com:acme/gradcourse.git"])
def test_github_in_any_case_or_with_www_is_github(remote):
    """Binder's generic git provider builds these too, but slowly and uncached: gh/ is GitHub's."""
    assert links.parse_remote(remote) == links.Repo("https://github.com/acme/gradcourse", "gh/acme/gradcourse",
                                                    "gradcourse")
    assert links.parse_remote("https://www.GitLab.com/g/course").binder_spec == "gl/g%2Fcourse"


def test_a_hub_without_a_scheme_gives_an_absolute_link(monkeypatch, capsys):
    repo = links.parse_remote("https://github.com/acme/gradcourse")
    for hub in ("hub.example.edu", "hub.example.edu/", "https://hub.example.edu"):
        pull = links.nbgitpuller_link(repo, "main", hub)
        assert pull.startswith("https://hub.example.edu/hub/user-redirect/git-pull?repo="), pull
    assert links.nbgitpuller_link(repo, "main", "http://localhost:8000").startswith("http://localhost:8000/hub/")
    monkeypatch.setattr(links, "git_remote", lambda name: "https://github.com/acme/gradcourse.git")
    assert links.main(["--hub=hub.example.edu"]) == 0
    assert "\n  https://hub.example.edu/hub/user-redirect/git-pull?" in capsys.readouterr().out
    assert links.main(["--hub=ftp://hub.example.edu"]) == 1
    assert "--hub: hub: 'ftp://hub.example.edu' is not a web address" in capsys.readouterr().err


def test_a_branch_with_url_characters_is_encoded():
    """fix#1 left bare would open branch "fix" (the # starts a fragment); / is %2F for Binder."""
    repo = links.parse_remote("https://github.com/acme/gradcourse")
    out = list(links.links(repo, "fix#1", "https://hub.example.edu").values())
    assert out[0] == "https://mybinder.org/v2/gh/acme/gradcourse/fix%231?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    assert links.binder_link(repo, "spring/2026", "lab") == "https://mybinder.org/v2/gh/acme/gradcourse/spring%2F2026?urlpath=lab"
    assert parse_qs(urlsplit(out[2]).query)["branch"] == ["fix#1"]
    assert urlsplit(out[2]).fragment == ""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert links.rewrite_readme(text, repo, "fix#1").count("/gh/acme/gradcourse/fix%231?urlpath=") == 2
