#!/usr/bin/env bash
# A throwaway Redis Sentinel setup for the tests: a master and its replica, no
# persistence, watched by one sentinel under the name "latchkey" (quorum 1), all on
# 127.0.0.1 (the default TEST_REDIS_SENTINEL_URL,
# redis://127.0.0.1:26390?master_name=latchkey).
#
#   scripts/redis-sentinel.sh [start]   start it unless the sentinel answers already (idempotent)
#   scripts/redis-sentinel.sh stop      shut it down and remove its files
#   scripts/redis-sentinel.sh status    print the master the sentinel names
#
# .ci/run and `make redis-sentinel` call start. A failover (the tests force one) swaps
# the two data nodes' roles; the sentinel keeps track. Files live in
# REDIS_SENTINEL_DIR (default: latchkey-redis-sentinel in the temp directory).
set -euo pipefail

data_ports=(${REDIS_SENTINEL_DATA_PORTS:-6390 6391})
sentinel_port=${REDIS_SENTINEL_PORT:-26390}
dir=${REDIS_SENTINEL_DIR:-${TMPDIR:-/tmp}/latchkey-redis-sentinel}

cli() { # port, args...
	local port=$1; shift
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}
answers() { [ "$(cli "$1" ping 2>/dev/null)" = "PONG" ]; }
master() { cli "$sentinel_port" sentinel get-master-addr-by-name latchkey 2>/dev/null | tr '\n' ' '; }
replica_synced() { cli "$1" info replication 2>/dev/null | tr -d '\r' | grep -q '^master_link_status:up$'; }

wait_answers() { # port, log
	for _ in $(seq 1 50); do
		answers "$1" && return 0
		sleep 0.1
	done
	echo "redis-sentinel: 127.0.0.1:$1 does not answer (see $2)" >&2
	return 1
}

start() {
	if answers "$sentinel_port" && [ -n "$(master)" ]; then
		echo "redis-sentinel: a sentinel answers on 127.0.0.1:$sentinel_port already (master $(master))"
		return 0
	fi
	command -v redis-server >/dev/null || { echo "redis-sentinel: redis-server is not installed" >&2; return 1; }
	mkdir -p "$dir"
	local m=${data_ports[0]} r=${data_ports[1]}
	if ! answers "$m"; then
		redis-server --bind 127.0.0.1 --port "$m" --dir "$dir" --save "" --appendonly no \
			--daemonize yes --logfile "$dir/redis-$m.log"
	fi
	wait_answers "$m" "$dir/redis-$m.log"
	if ! answers "$r"; then
		redis-server --bind 127.0.0.1 --port "$r" --dir "$dir" --save "" --appendonly no \
			--replicaof 127.0.0.1 "$m" --daemonize yes --logfile "$dir/redis-$r.log"
	fi
	wait_answers "$r" "$dir/redis-$r.log"
	if ! answers "$sentinel_port"; then
		# A sentinel rewrites its configuration file: a fresh one each start.
		cat >"$dir/sentinel.conf" <<CONF
bind 127.0.0.1
port $sentinel_port
dir $dir
sentinel monitor latchkey 127.0.0.1 $m 1
sentinel down-after-milliseconds latchkey 1000
sentinel failover-timeout latchkey 5000
CONF
		redis-server "$dir/sentinel.conf" --sentinel --daemonize yes --logfile "$dir/sentinel.log"
	fi
	wait_answers "$sentinel_port" "$dir/sentinel.log"
	for _ in $(seq 1 100); do
		if [ -n "$(master)" ] && replica_synced "$r"; then
			echo "redis-sentinel: sentinel on 127.0.0.1:$sentinel_port, master $(master)"
			return 0
		fi
		sleep 0.2
	done
	echo "redis-sentinel: no synced replica on 127.0.0.1:$r after 20 s" >&2
	return 1
}

stop() {
	for port in "$sentinel_port" "${data_ports[@]}"; do
		if answers "$port"; then
			cli "$port" shutdown nosave >/dev/null 2>&1 || true
		fi
	done
	rm -rf "$dir"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) master; echo ;;
*)
	echo "usage: $0 [start|stop|status]" >&2
	exit 2
	;;
esac
