"""Turn a `pip install --dry-run --report` JSON into a fully pinned, hash-checked requirements file.

Used by lock.sh. The output installs with `pip install --require-hashes --no-deps -r FILE`, so
what gets installed is exactly what was resolved, whatever the index serves later. Each hash is
the one of the file pip chose for this platform (CPython 3.13, manylinux x86_64); regenerate the
lock on that platform.

usage: python pin_report.py REPORT.json HEADER_LINE... > requirements.lock
"""

import json
import re
import sys


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        report = json.load(f)

    env = report["environment"]
    for line in sys.argv[2:]:
        print(f"# {line}" if line else "#")
    print(
        f"# resolved by pip {report['pip_version']} for CPython {env['python_full_version']}"
        f" on {env['sys_platform']} {env['platform_machine']}"
    )
    print()

    pins = []
    for item in report["install"]:
        meta = item["metadata"]
        archive = item["download_info"].get("archive_info") or {}
        digest = (archive.get("hashes") or {}).get("sha256")
        if not digest:
            print(f"no sha256 for {meta['name']}: {item['download_info']}", file=sys.stderr)
            return 1
        pins.append((normalize(meta["name"]), meta["version"], digest))

    for name, version, digest in sorted(pins):
        print(f"{name}=={version} \\")
        print(f"    --hash=sha256:{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
