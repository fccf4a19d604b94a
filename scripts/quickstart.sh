#!/usr/bin/env bash
# Installs slapd if missing, builds scim2ldap, and runs it in the foreground
# against a throwaway local OpenLDAP (kept in ./scim2ldap-dev). Prints the
# SCIM base URL and a bearer token to paste into Entra ID or Okta.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --openldap
exec cargo run --release --quiet -- dev "$@"
