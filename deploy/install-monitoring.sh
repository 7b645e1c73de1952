#!/bin/sh
# Install the monitoring tools ironbook runs itself (promtool, prometheus,
# alertmanager, amtool, node_exporter) and the headless browser the ops console
# is tested in (chromium, chromedriver) from the Debian packages, without
# letting Debian start any of them as system services: ironbook starts its own
# loopback instances, and nothing may be left listening on the packages'
# default ports.
#
# Does nothing when every tool is already on PATH. Not root: prints the one
# command that installs them and exits 0 (the tests that need them skip).
set -eu

PACKAGES="prometheus prometheus-alertmanager prometheus-node-exporter chromium chromium-driver"
SERVICES="prometheus prometheus-alertmanager prometheus-node-exporter"

missing=""
for tool in promtool prometheus prometheus-alertmanager amtool prometheus-node-exporter chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "monitoring tools missing:$missing; install them with:"
    echo "  sudo sh $(dirname "$0")/install-monitoring.sh"
    exit 0
fi

# policy-rc.d exiting 101 forbids invoke-rc.d from starting any service during
# the install. Keep one that already exists; remove only the one written here.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" -eq 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT INT TERM

echo "installing $PACKAGES (missing:$missing)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null

# If a service was started anyway (no policy layer honoured), stop it and keep
# it from starting at boot.
for service in $SERVICES; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    else
        if [ -x "/etc/init.d/$service" ]; then "/etc/init.d/$service" stop >/dev/null 2>&1 || true; fi
        if command -v update-rc.d >/dev/null 2>&1; then update-rc.d "$service" disable >/dev/null 2>&1 || true; fi
    fi
done
# Binaries started by the packages run as the "prometheus" user.
if pids=$(pgrep -u prometheus 2>/dev/null); then
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
fi
echo "installed: $(command -v promtool) $(command -v prometheus) $(command -v prometheus-alertmanager) $(command -v prometheus-node-exporter) $(command -v chromium) $(command -v chromedriver)"
