"""`agent-rl sandbox gc|list`: find and remove leaked sandbox containers by label."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sandbox", help="list or garbage-collect sandbox containers")
    sub = p.add_subparsers(dest="sandbox_action", metavar="ACTION", required=True)
    gc = sub.add_parser("gc", help="remove sandbox containers whose owning process on this host died")
    gc.add_argument("--all-owners", action="store_true",
                    help="remove every agent-rl sandbox container, including live processes' ones")
    gc.set_defaults(func=run_gc)
    listing = sub.add_parser("list", help="list agent-rl sandbox containers and their owners")
    listing.set_defaults(func=run_list)


def run_gc(args: argparse.Namespace) -> int:
    from sandboxes.reaper import reap

    removed = reap(all_owners=args.all_owners)
    print(f"removed {len(removed)} sandbox container(s)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import docker

    from sandboxes.docker import KIND_LABEL, MANAGED_LABEL, OWNER_HOST_LABEL, OWNER_PID_LABEL

    client = docker.from_env()
    filters = {"label": [f"{MANAGED_LABEL}=1", f"{KIND_LABEL}=sandbox"]}
    # ignore_removed: another process may remove a container between the listing and its inspection.
    for container in client.containers.list(all=True, ignore_removed=True, filters=filters):
        labels = container.labels
        print(f"{container.short_id}  {container.status:<8} owner {labels.get(OWNER_HOST_LABEL)}:"
              f"{labels.get(OWNER_PID_LABEL)}  {container.attrs['Config']['Image']}")
    return 0
