#!/usr/bin/env bash
# Installs what scim2ldap's tests and quick start need on Debian/Ubuntu:
# OpenLDAP's slapd and the ldap-utils command line tools. The packaged slapd
# service is not used (each test starts its own throwaway server).
set -euo pipefail
if command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; then
  if command -v ldapsearch >/dev/null 2>&1; then exit 0; fi
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing slapd and ldap-utils with apt-get" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq slapd ldap-utils >/dev/null
$SUDO apt-get install -y -qq chromium prometheus >/dev/null # status page test, promtool for monitoring/alerts.yml
