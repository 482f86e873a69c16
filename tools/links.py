"""Print the links an instructor hands out, built from this clone's git remote: ``make links``.

    python tools/links.py [--remote NAME] [--branch BRANCH] [--hub URL] [--readme]

- the Binder link (the README's badge) that opens the course in JupyterLab;
- the Binder link that opens the explorers' dashboard in Voila;
- an nbgitpuller link that pulls the notebooks into every learner's home on a JupyterHub.

The repository comes from ``git remote get-url origin`` (GitHub, GitLab or any public git URL).
With no remote, or a remote Binder cannot reach (a path on this disk), the tool says so and
exits 1 rather than print a link with a placeholder in it. ``--readme`` also rewrites the two
Binder badges in README.md for this remote (commit that in your fork). Standard library only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
BINDER = "https://mybinder.org/v2"
FIRST_LESSON = "notebooks/00_start_here.ipynb"
DASHBOARD = "dashboard/dashboard.ipynb"
# The badges in README.md: a Binder link to some <provider>/<repo spec>/<ref>?urlpath=...
README_BADGE = re.compile(r"https://mybinder\.org/v2/[^?\s)]+\?urlpath=(lab/tree|voila/render)/")


@dataclass(frozen=True)
class Repo:
    """A public git repository: its https clone URL and Binder's spec for it."""

    clone_url: str  # https://github.com/owner/name
    binder_spec: str  # gh/owner/name, gl/owner%2Fname or git/<url-encoded url>
    name: str  # the folder nbgitpuller clones into


def parse_remote(url: str) -> Repo:
    """Read a git remote URL (https, ssh or scp-like) into a :class:`Repo`.

    >>> parse_remote("git@github.com:carpentries/gradcourse.git").binder_spec
    'gh/carpentries/gradcourse'
    >>> parse_remote("https://gitlab.com/group/sub/gradcourse").binder_spec
    'gl/group%2Fsub%2Fgradcourse'
    >>> parse_remote("/srv/git/gradcourse")
    Traceback (most recent call last):
    ...
    ValueError: url: '/srv/git/gradcourse' is a path on this machine, not a public git URL Binder can clone
    """
    url = url.strip()
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", url)  # git@host:owner/name.git
    if scp:
        host, path = scp.groups()
    else:
        m = re.fullmatch(r"(?:https?|ssh|git)://(?:[^@/]+@)?([\w.-]+)(?::\d+)?/(.+)", url)
        if not m:
            raise ValueError(f"url: {url!r} is a path on this machine, not a public git URL Binder can clone")
        host, path = m.groups()
    path = re.sub(r"\.git/?$", "", path.strip("/"))
    if not path:
        raise ValueError(f"url: {url!r} names no repository")
    # Host names are case-insensitive and "www." is an alias: GitHub.com and www.github.com are
    # GitHub, and Binder's gh provider builds (and caches) them far better than its generic git one.
    host = host.lower().removeprefix("www.")
    clone_url = f"https://{host}/{path}"
    name = path.rsplit("/", 1)[-1]
    if host == "github.com" and path.count("/") == 1:
        spec = f"gh/{path}"
    elif host == "gitlab.com":
        spec = f"gl/{quote(path, safe='')}"
    else:
        spec = f"git/{quote(clone_url, safe='')}"
    return Repo(clone_url=clone_url, binder_spec=spec, name=name)


def binder_ref(branch: str) -> str:
    """The branch as one URL path segment: Binder wants ``/`` as ``%2F``, and a ``#`` or ``?`` left
    bare would end the path (``fix#1`` would open branch ``fix``).

    >>> binder_ref("fix#1"), binder_ref("spring/2026")
    ('fix%231', 'spring%2F2026')
    """
    return quote(branch, safe="")


def binder_link(repo: Repo, branch: str, urlpath: str) -> str:
    return f"{BINDER}/{repo.binder_spec}/{binder_ref(branch)}?urlpath={urlpath}"


def hub_url(hub: str) -> str:
    """The hub's address as an absolute URL: ``hub.example.edu`` (no scheme) would make a link
    relative to wherever it is pasted, so https:// is assumed; any scheme but http(s) is refused.

    >>> hub_url("hub.example.edu"), hub_url("http://localhost:8000/")
    ('https://hub.example.edu', 'http://localhost:8000')
    >>> hub_url("ftp://hub.example.edu")
    Traceback (most recent call last):
    ...
    ValueError: hub: 'ftp://hub.example.edu' is not a web address (http:// or https://)
    """
    text = hub.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text.lstrip("/")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"hub: {hub!r} is not a web address (http:// or https://)")
    return text


def nbgitpuller_link(repo: Repo, branch: str, hub: str) -> str:
    """A JupyterHub link that clones (or updates) the repository into the learner's home and opens lesson 00."""
    query = urlencode({"repo": repo.clone_url, "branch": branch,
                       "urlpath": f"lab/tree/{repo.name}/{FIRST_LESSON}"})
    return f"{hub_url(hub)}/hub/user-redirect/git-pull?{query}"


def links(repo: Repo, branch: str, hub: str | None) -> dict[str, str]:
    out = {
        "Binder, the course in JupyterLab (README badge)": binder_link(repo, branch, f"lab/tree/{FIRST_LESSON}"),
        "Binder, the explorers' dashboard in Voila": binder_link(repo, branch, f"voila/render/{DASHBOARD}"),
    }
    if hub:
        out["nbgitpuller, for your JupyterHub"] = nbgitpuller_link(repo, branch, hub)
    return out


def rewrite_readme(text: str, repo: Repo, branch: str) -> str:
    """Point README's Binder badges at ``repo``/``branch``, keeping what each one opens."""
    return README_BADGE.sub(lambda m: f"{BINDER}/{repo.binder_spec}/{binder_ref(branch)}?urlpath={m.group(1)}/",
                            text)


def git_remote(name: str) -> str | None:
    try:
        done = subprocess.run(["git", "remote", "get-url", name], cwd=ROOT, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remote", default="origin", help="the git remote to read (default: origin)")
    parser.add_argument("--branch", default="main", help="the branch Binder and nbgitpuller use (default: main)")
    parser.add_argument("--hub", default="", help="your JupyterHub's address, e.g. https://hub.example.edu")
    parser.add_argument("--readme", action="store_true", help="also point README.md's Binder badges at the remote")
    args = parser.parse_args(argv)

    url = git_remote(args.remote)
    if url is None:
        print(f"No git remote {args.remote!r} in this clone, so there is no public repository to link to.\n"
              f"Push the course to GitHub (or GitLab) first, e.g.\n"
              f"  git remote add {args.remote} https://github.com/<you>/gradcourse.git\n"
              f"  git push -u {args.remote} main\n"
              f"then run `make links` again.", file=sys.stderr)
        return 1
    try:
        repo = parse_remote(url)
    except ValueError as error:
        print(f"git remote {args.remote!r}: {error}.\nBinder and nbgitpuller need a public repository.",
              file=sys.stderr)
        return 1

    try:
        hub = hub_url(args.hub) if args.hub else None
    except ValueError as error:
        print(f"--hub: {error}.", file=sys.stderr)
        return 1

    print(f"repository: {repo.clone_url}  (git remote {args.remote!r}, branch {args.branch!r})\n")
    for label, link in links(repo, args.branch, hub).items():
        print(f"{label}:\n  {link}\n")
    if not args.hub:
        print("nbgitpuller: give your hub's address to get the link, e.g.\n"
              "  make links HUB=https://hub.example.edu\n"
              "(it pulls the notebooks into each learner's home and opens lesson 00).")
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        new = rewrite_readme(text, repo, args.branch)
        readme.write_text(new, encoding="utf-8")
        print("README.md: badges " + ("updated" if new != text else "already point at this repository"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
