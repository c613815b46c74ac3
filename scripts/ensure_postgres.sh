#!/usr/bin/env bash
# Makes the PostgreSQL server binaries available for the test suite, which
# starts its own throwaway server from /usr/lib/postgresql/*/bin (issue 5:
# the storage, fault and end-to-end tests run against SQLite and PostgreSQL).
#
# - initdb already under /usr/lib/postgresql/*/bin: nothing to do.
# - root with apt-get: install the Debian package `postgresql`. Its postinst
#   may start a cluster on port 5432; the tests do not use that one.
# - otherwise: say what to install; a failure only when CI is set, because CI
#   must run both backends while a developer may run the SQLite half alone.
set -euo pipefail

have_initdb() {
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_initdb; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends postgresql >/dev/null
	if have_initdb; then
		echo "ensure_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
		exit 0
	fi
	echo "ensure_postgres: apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb" >&2
	exit 1
fi

echo "ensure_postgres: PostgreSQL server binaries not found: install the Debian package" \
	"'postgresql' (apt-get install postgresql) to run the tests against PostgreSQL too" >&2
case "${CI:-}" in
"" | 0 | false) exit 0 ;;
*) exit 1 ;;
esac
