#!/usr/bin/env bash
# A throwaway Redis Cluster for the tests: three masters, no replicas, no persistence,
# on 127.0.0.1:7000-7002 (the default TEST_REDIS_CLUSTER_URL,
# redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002).
#
#   scripts/redis-cluster.sh [start]   start it unless it answers already (idempotent)
#   scripts/redis-cluster.sh stop      shut its nodes down and remove their files
#   scripts/redis-cluster.sh status    print `cluster info` of the first node
#
# .ci/run and `make redis-cluster` call start. The nodes' files (nodes-PORT.conf, logs)
# live in REDIS_CLUSTER_DIR (default: latchkey-redis-cluster in the temp directory).
set -euo pipefail

ports=(${REDIS_CLUSTER_PORTS:-7000 7001 7002})
dir=${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/latchkey-redis-cluster}

cli() { # port, args...
	local port=$1; shift
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}
answers() { [ "$(cli "$1" ping 2>/dev/null)" = "PONG" ]; }
state_ok() { cli "${ports[0]}" cluster info 2>/dev/null | tr -d '\r' | grep -q '^cluster_state:ok$'; }
slots_assigned() { cli "${ports[0]}" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p'; }

start() {
	if state_ok; then
		echo "redis-cluster: a cluster answers on 127.0.0.1:${ports[0]} already"
		return 0
	fi
	command -v redis-server >/dev/null || { echo "redis-cluster: redis-server is not installed" >&2; return 1; }
	mkdir -p "$dir"
	for port in "${ports[@]}"; do
		if answers "$port"; then
			continue
		fi
		# A node file left by an earlier run names a cluster that no longer exists.
		rm -f "$dir/nodes-$port.conf"
		redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
			--cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 5000 \
			--save "" --appendonly no --daemonize yes --logfile "$dir/redis-$port.log"
	done
	for port in "${ports[@]}"; do
		for _ in $(seq 1 50); do
			answers "$port" && break
			sleep 0.1
		done
		answers "$port" || { echo "redis-cluster: node 127.0.0.1:$port does not answer (see $dir/redis-$port.log)" >&2; return 1; }
	done
	if [ "$(slots_assigned)" = "0" ]; then
		local addrs=()
		for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
		redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
	fi
	for _ in $(seq 1 100); do
		if state_ok; then
			echo "redis-cluster: cluster_state:ok, masters on 127.0.0.1 ports ${ports[*]}"
			return 0
		fi
		sleep 0.2
	done
	echo "redis-cluster: no cluster_state:ok on 127.0.0.1:${ports[0]} after 20 s:" >&2
	cli "${ports[0]}" cluster info >&2 || true
	return 1
}

stop() {
	for port in "${ports[@]}"; do
		if answers "$port"; then
			cli "$port" shutdown nosave >/dev/null 2>&1 || true
		fi
		rm -f "$dir/nodes-$port.conf" "$dir/redis-$port.log"
	done
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) cli "${ports[0]}" cluster info ;;
*)
	echo "usage: $0 [start|stop|status]" >&2
	exit 2
	;;
esac
