#!/bin/sh
# Install the Debian packages listed in contrib/system-packages.txt that are missing.
# Needs root (or sudo) and apt-get; on other systems it prints what to install and goes on.
set -eu
list="$(dirname "$0")/../contrib/system-packages.txt"
want=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list" | tr '\n' ' ')
[ -n "$want" ] || exit 0
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install these system packages with your package manager:$missing" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
