#!/usr/bin/env bash
# Builds bin/latchkey for `make run`, saying what it does. The first build on a new
# machine downloads the Go modules and compiles about 700 packages (the standard
# library included; SQLite, a large pure-Go translation, is the longest), which takes
# minutes on two cores and used to print nothing after the downloads. Later builds
# reuse Go's build cache: seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=bin/latchkey
mkdir -p bin
if [ ! -x "$out" ]; then
	echo "make run: building Latchkey into $out. The first build on a machine downloads the"
	echo "  Go modules and compiles about 700 packages: a few minutes on two cores (SQLite"
	echo "  takes longest). Later builds take seconds."
fi
start=$(date +%s)

# progress reads `go build -v`, which names each package as it compiles it, and
# shows a count; any other line (downloads, compile errors) is printed as it is.
progress() {
	local n=0 line tty=0
	[ -t 1 ] && tty=1
	while IFS= read -r line; do
		case "$line" in
		*' '* | *:*)
			if [ $tty = 1 ] && [ $n -gt 0 ]; then printf '\n'; fi
			printf '%s\n' "$line"
			;;
		*)
			n=$((n + 1))
			if [ $tty = 1 ]; then
				printf '\r  compiling: %3d packages done, now %-48.48s' "$n" "$line"
			elif [ $((n % 50)) = 0 ]; then
				printf '  compiling: %d packages done (%ds)\n' "$n" "$(($(date +%s) - start))"
			fi
			;;
		esac
	done
	if [ $tty = 1 ] && [ $n -gt 0 ]; then printf '\n'; fi
	if [ $n -gt 20 ]; then
		printf '  compiled %d packages in %ds\n' "$n" "$(($(date +%s) - start))"
	fi
}

"$GO" build -v -o "$out" . 2>&1 | progress
