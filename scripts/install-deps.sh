#!/usr/bin/env bash
# Installs what scim2ldap's tests, benchmark and quick start need on
# Debian/Ubuntu: the directory servers the integration tests start
# (OpenLDAP's slapd, 389 Directory Server, a Samba AD DC) and their
# command line tools. Each test run starts its own throwaway servers on
# loopback; the packaged services are never used, and none is left
# enabled or running.
#
# Idempotent and fast when everything is there: one dpkg-query, no apt.
# To add a package, add a line to PACKAGES (and a service that it starts,
# if any, to SERVICES).
#
# `install-deps.sh --openldap` installs only OpenLDAP (what the quick
# start's `scim2ldap dev` needs).
set -euo pipefail

PACKAGES=(
  # OpenLDAP
  slapd ldap-utils openssl
  # 389 Directory Server (pulls python3-lib389 for dscreate)
  389-ds-base
  # Samba AD DC: provisioning data, the directory modules, and socat for
  # the relays into samba's network namespace (its LDAP ports are fixed)
  samba samba-ad-provision samba-dsdb-modules socat ldb-tools iproute2
  # The status page's test runs it in a headless browser
  chromium
  # promtool checks monitoring/alerts.yml
  prometheus
)
# Services the packages above install; they are disabled after install.
SERVICES=(slapd smbd nmbd samba-ad-dc winbind dirsrv prometheus prometheus-node-exporter)
if [[ ${1:-} == --openldap ]]; then
  PACKAGES=(slapd ldap-utils openssl)
  SERVICES=(slapd)
fi

installed=" $(dpkg-query -W -f='${Package}:${db:Status-Status} ' "${PACKAGES[@]}" 2>/dev/null || true) "
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $installed == *" $p:installed "* ]] || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
  exit 0
fi

SUDO=()
if [[ $(id -u) != 0 ]]; then SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}" >&2
# No packaged daemon may start during the install: policy-rc.d answering
# 101 ("action forbidden") is how Debian's invoke-rc.d is told so. An
# existing policy-rc.d is kept as it is.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() { if (( added_policy )); then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
# ... nor start at the next boot.
for s in "${SERVICES[@]}"; do
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now "$s" >/dev/null 2>&1 || true
  fi
  if [[ -e /etc/init.d/$s ]] && command -v update-rc.d >/dev/null 2>&1; then
    "${SUDO[@]}" update-rc.d "$s" disable >/dev/null 2>&1 || true
  fi
done
echo "install-deps: done" >&2
