#!/usr/bin/env bash
# Installs what orch needs on a Debian machine, as root, idempotently:
# the Debian packages it runs on and a virtualenv at .venv with orch (editable) and its
# test extras. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  etcd-server etcd-client runc crun skopeo umoci busybox-static docker-registry
  iproute2 iptables nftables iperf3 bind9-dnsutils dnsperf procps psmisc kmod
  python3 python3-venv python3-dev gcc make git ca-certificates
)

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: orch runs containers and network namespaces: run as root" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel parts orch uses (no-ops where built in or already loaded).
for m in overlay veth bridge vxlan; do modprobe -q "$m" 2>/dev/null || true; done

PY=${PYTHON:-python3}
stamp=.venv/.orch-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: preparing .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "bootstrap: ready"
