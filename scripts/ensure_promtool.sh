#!/usr/bin/env bash
# Makes promtool available for the test suite, which checks the Prometheus
# scrape config and alert rules under deploy/prometheus/ and runs their unit
# tests (`promtool test rules`, tests/test_alerts.py).
#
# - promtool already on PATH: nothing to do.
# - root with apt-get: install the Debian package `prometheus` (it ships
#   promtool). In a container without an init system its postinst starts no
#   server; on a host with systemd it may, on :9090, which the tests do not use.
# - otherwise: say what to install; a failure only when CI is set, because CI
#   must check the rules while a developer may run the rest alone.
set -euo pipefail

if command -v promtool >/dev/null; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	if command -v promtool >/dev/null; then
		echo "ensure_promtool: installed $(promtool --version 2>&1 | head -n 1)"
		exit 0
	fi
	echo "ensure_promtool: apt-get installed prometheus but no promtool is on PATH" >&2
	exit 1
fi

echo "ensure_promtool: promtool not found: install the Debian package 'prometheus'" \
	"(apt-get install prometheus) to check the alert rules" >&2
case "${CI:-}" in
"" | 0 | false) exit 0 ;;
*) exit 1 ;;
esac
