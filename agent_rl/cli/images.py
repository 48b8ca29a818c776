"""`agent-rl images build|list|prune`: sandbox images, built without any registry."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("images", help="build, list and prune sandbox images",
                              description="Sandbox images: the Debian base (debootstrap + docker import) "
                              "and repository images cut at a base commit.")
    sub = p.add_subparsers(dest="images_action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build the base image (no-op when current), or a repository image")
    build.add_argument("--repo", help="local path or git URL of a repository to layer on the base image")
    build.add_argument("--commit", help="base commit of --repo (default: HEAD)", default="HEAD")
    build.add_argument("--setup", action="append", default=[], metavar="CMD",
                       help="setup command run as root at build time (repeatable, in order)")
    build.add_argument("--workdir", default="/testbed", help="where the repository goes (default /testbed)")
    build.set_defaults(func=run_build)
    listing = sub.add_parser("list", help="list images labelled agent-rl.managed=1")
    listing.set_defaults(func=run_list)
    prune = sub.add_parser("prune", help="remove managed dangling images (never anyone else's)")
    prune.add_argument("--all", action="store_true", help="remove every managed image no container uses")
    prune.set_defaults(func=run_prune)


def run_build(args: argparse.Namespace) -> int:
    from sandboxes.images import ImageBuildError, ensure_base_image
    from sandboxes.repo_images import build_repo_image

    try:
        tag = ensure_base_image()
        if args.repo:
            tag = build_repo_image(args.repo, args.commit, setup=args.setup, workdir=args.workdir, base=tag)
    except (ImageBuildError, ValueError) as exc:
        print(f"images build: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from sandboxes.images import list_images

    for row in list_images():
        tags = " ".join(row["tags"]) or "<untagged>"
        print(f"{row['id']:<20} {row['kind']:<7} {int(row['size']) / 1e6:>8.0f} MB  {tags}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from sandboxes.images import prune_images

    removed = prune_images(all=args.all)
    print(f"removed {len(removed)} image(s)/layer(s)")
    return 0
