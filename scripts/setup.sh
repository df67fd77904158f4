#!/usr/bin/env bash
# Prepares a machine to build, test and run upwatch. Idempotent: it changes
# nothing when everything is already there. Works as root and as a normal
# user (with sudo for the one step that needs root).
#
# What it needs:
#   - Go >= 1.26 (the toolchain is not installed here: install it first).
#   - PostgreSQL's server binaries (initdb, postgres): `upwatch up` and the
#     tests run a private PostgreSQL from them. Installed with apt when missing.
set -euo pipefail

want_go_major=1
want_go_minor=26

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# --- Go -------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	die "Go is not installed (need >= ${want_go_major}.${want_go_minor}); install it and put 'go' on PATH"
fi
go_version=$(go env GOVERSION) # e.g. go1.26.8
ver=${go_version#go}
major=${ver%%.*}
rest=${ver#*.}
minor=${rest%%[.a-z]*}
if ((major < want_go_major || (major == want_go_major && minor < want_go_minor))); then
	die "Go ${ver} is too old: need >= ${want_go_major}.${want_go_minor}"
fi
say "Go ${ver}: ok"

# --- PostgreSQL server binaries --------------------------------------------
# Debian puts them in /usr/lib/postgresql/<version>/bin, off the PATH; the
# tests and `upwatch up` look there too (shared/localpg).
have_postgres() {
	if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
		return 0
	fi
	local d
	for d in /usr/lib/postgresql/*/bin; do
		if [[ -x "$d/initdb" && -x "$d/postgres" ]]; then
			return 0
		fi
	done
	return 1
}

if have_postgres; then
	say "PostgreSQL server binaries: ok"
else
	install_cmd=(apt-get install -y postgresql)
	if [[ $(id -u) -eq 0 ]]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		die "PostgreSQL server binaries not found; as root, run: apt-get update && apt-get install -y postgresql"
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		die "PostgreSQL server binaries not found and apt-get is not available: install PostgreSQL (>= 15) server packages, or set PG_BIN_DIR"
	fi
	say "installing PostgreSQL server binaries with apt-get"
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install_cmd[@]}"
	have_postgres || die "apt-get installed postgresql but initdb/postgres are still not found"
	say "PostgreSQL server binaries: installed"
fi

# As root, the private PostgreSQL runs as the postgres user, which the
# package creates.
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
	die "running as root, but there is no postgres user to run PostgreSQL as (reinstall the postgresql package)"
fi
say "ready"
