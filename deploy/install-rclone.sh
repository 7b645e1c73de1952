#!/bin/sh
# Install rclone from Debian, for backups to an rclone remote (docs/backup.md).
#
# Does nothing when rclone is already on PATH. Not root: prints the one command
# that installs it and exits 0 (backups to a directory need nothing; the test
# of an rclone target skips).
set -eu

command -v rclone >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "rclone missing; install it with:"
    echo "  sudo sh $(dirname "$0")/install-rclone.sh"
    exit 0
fi

echo "installing rclone"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends rclone >/dev/null
echo "installed: $(command -v rclone)"
