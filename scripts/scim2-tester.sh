#!/usr/bin/env bash
# Runs the public SCIM compliance suite scim2-tester (through scim2-cli)
# against a throwaway scim2ldap and OpenLDAP on loopback, then stops both.
# Exits non-zero when the suite reports a failure or an error.
#
#   scripts/scim2-tester.sh            # makes a venv in a temp dir
#   SCIM2_TESTER_VENV=~/.cache/scimvenv scripts/scim2-tester.sh   # reuse one
#
# Needs python3 with venv, slapd (scripts/install-deps.sh) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d -t scim2ldap-tester.XXXXXX)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

venv=${SCIM2_TESTER_VENV:-$work/venv}
if [ ! -x "$venv/bin/scim2" ]; then
    echo "scim2-tester.sh: creating a venv with scim2-cli and scim2-tester in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet scim2-cli scim2-tester
fi

cargo build --quiet
bin=${CARGO_TARGET_DIR:-target}/debug/scim2ldap

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
http_port=$(free_port)
ldap_port=$(free_port)

"$bin" dev --dir "$work/dev" --listen "127.0.0.1:$http_port" --ldap-port "$ldap_port" \
    >"$work/daemon.log" 2>&1 &
daemon_pid=$!

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        echo "scim2-tester.sh: the daemon did not start:" >&2
        cat "$work/daemon.log" >&2
        exit 1
    fi
    sleep 0.1
done

token=$(cat "$work/dev/token")
status=0
SCIM_CLI_HEADERS="Authorization: Bearer $token" \
    "$venv/bin/scim2" --url "http://127.0.0.1:$http_port/scim/v2" test "$@" \
    | tee "$work/report.txt" || status=$?

# The tester prints one line per check; count them by outcome.
ok=$(grep -c -E '^(🟢|✅|SUCCESS)' "$work/report.txt" || true)
bad=$(grep -c -E '^(🔴|❌|ERROR|FAIL)' "$work/report.txt" || true)
echo "scim2-tester.sh: $ok checks passed, $bad failed (scim2 exit status $status)"
if [ "$status" -ne 0 ] || [ "$bad" -ne 0 ]; then
    if [ -n "${SCIM2_TESTER_SHOW_LOG:-}" ]; then
        cat "$work/daemon.log" >&2
    fi
    exit 1
fi
