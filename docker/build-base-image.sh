#!/usr/bin/env bash
# The compose image's base, built from the Debian archive, for machines that reach no container registry.
#
#   docker/build-base-image.sh [TAG]          (as root; TAG defaults to heron-remote-base:bookworm)
#   docker compose build --build-arg BASE=heron-remote-base:bookworm
#
# Debian bookworm (debootstrap, from the mirror apt uses here or $MIRROR) with Python 3.11, sshd and
# the project's dependencies in a venv (/opt/venv, first on PATH). The wheels are fetched by this
# machine's pip, like any package it installs, so building the image on top needs no network.
# Nothing is kept but the image: the root tree is made in a temp dir that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-heron-remote-base:bookworm}
suite=${SUITE:-bookworm}
if [ -z "${MIRROR:-}" ]; then
    # The Debian mirror apt uses on this machine (deb822 or one-line sources), else Debian's own.
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -E '^[[:space:]]*(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
for tool in debootstrap docker python3; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool (Debian: apt-get install debootstrap docker.io)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/heron-base.XXXXXX")
root=$work/root
cleanup() {
    # Unmount first, deepest first, so that removing the tree can never reach through a mount.
    grep -F " $work/" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "base image: debootstrap $suite from $MIRROR"
debootstrap --variant=minbase \
    --include=python3,python3-venv,openssh-server,openssh-client,iproute2,procps,iptables,ca-certificates \
    "$suite" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# The dependencies and the test extra, read from pyproject.toml; setuptools for the editable install.
mapfile -t deps < <(python3 - <<'PY'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))
build = project["build-system"]["requires"]
project = project["project"]
print("\n".join([*build, *project["dependencies"], *project["optional-dependencies"]["test"]]))
PY
)
python3 -m pip download -q --disable-pip-version-check --python-version 3.11 --only-binary=:all: \
    -d "$root/tmp/wheels" "${deps[@]}" >"$work/pip.log" 2>&1 || { tail -n 30 "$work/pip.log" >&2; exit 1; }
mount -t proc proc "$root/proc"
# A clean environment in there: this machine's pip settings name its own paths.
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$root" "$@"; }
in_root python3 -m venv /opt/venv
in_root /opt/venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir --no-index \
    --find-links /tmp/wheels "${deps[@]}"
umount "$root/proc"
rm -rf "$root/tmp/wheels" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/etc/ssh"/ssh_host_*
mkdir -p "$root/run/sshd"

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$tag" >/dev/null
echo "base image: $tag"
