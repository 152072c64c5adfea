#!/usr/bin/env bash
# Install Debian's pgbouncer for the PgBouncer sweeps and tests (needs root or sudo).
# Elsewhere: `brew install pgbouncer` (macOS), `dnf install pgbouncer` (Fedora/RHEL, PGDG repo),
# or build it from https://www.pgbouncer.org/install.html; poolbench finds it on PATH.
set -euo pipefail
if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Only the binary is wanted: the package's own service is disabled right after.
$SUDO apt-get install -y -qq pgbouncer >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
