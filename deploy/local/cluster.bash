# Kafka for deploy/local/stack, one broker or a cluster of three (sourced by the stack).
#
# `stack up --brokers 3` (or CT_STACK_BROKERS=3) runs three KRaft nodes, each a broker and a
# controller, the three controllers one quorum of three voters. Node k (1-based) listens on
# CT_STACK_KAFKA_PORT + k - 1 (9092, 9093, 9094), its controller on CT_STACK_CONTROLLER_PORT + k - 1
# (9095, 9096, 9097), and with the secure listeners on SASL and SSL ports + k - 1 (9192-9194,
# 9292-9294). deploy/local/server-cluster.properties adds replication 3 and min.insync.replicas 2.
# A state directory remembers its broker count, so every later command (down, status, logs,
# restart) handles it without the flag; the components are then kafka-1, kafka-2 and kafka-3,
# and `kafka` names all three.

kafka_brokers_file="$state/kafka-brokers"
kafka_cluster_id_file="$state/kafka-cluster-id"

# The broker count: the flag, else CT_STACK_BROKERS, else what the state directory was made with.
resolve_brokers() {  # the --brokers value or ""
  local saved=""
  [[ -f "$kafka_brokers_file" ]] && saved="$(cat "$kafka_brokers_file")"
  brokers="${1:-${CT_STACK_BROKERS:-${saved:-1}}}"
  [[ "$brokers" == 1 || "$brokers" == 3 ]] ||
    die "--brokers (CT_STACK_BROKERS) must be 1 or 3 (three KRaft voters), not '$brokers'"
  if [[ -n "$saved" && "$saved" != "$brokers" ]]; then
    die "$state holds a $saved-broker Kafka, not $brokers: 'deploy/local/stack reset' deletes it, or use another CT_STATE_DIR"
  fi
  if ((brokers == 1)); then kafka_nodes=(kafka); else
    kafka_nodes=()
    for ((k = 1; k <= brokers; k++)); do kafka_nodes+=("kafka-$k"); done
  fi
  kafka_bootstrap="$(listener_bootstrap "$kafka_port")"
}

# host:port of one listener on every broker, from the first broker's port.
listener_bootstrap() {  # first port
  local ports=() k
  for ((k = 0; k < brokers; k++)); do ports+=("127.0.0.1:$(($1 + k))"); done
  (IFS=,; echo "${ports[*]}")
}

is_kafka_node() { [[ "$1" == kafka || "$1" == kafka-[0-9] ]]; }

node_number() { if [[ "$1" == kafka ]]; then echo 1; else echo "${1#kafka-}"; fi; }

kafka_data_of() { if [[ "$1" == kafka ]]; then echo "$state/kafka-data"; else echo "$state/kafka-data-${1#kafka-}"; fi; }

# The properties of one node: server.properties (+ server-secure.properties) with this node's
# ports, then, in a cluster, server-cluster.properties, whose lines win (later keys do in Java).
write_node_properties() {  # node, properties file
  local k; k="$(node_number "$1")"
  local files=("$here/server.properties") voters=() v
  if [[ "$secure_on" == 1 ]]; then ensure_certs; files+=("$here/server-secure.properties"); fi
  ((brokers == 1)) || files+=("$here/server-cluster.properties")
  for ((v = 1; v <= brokers; v++)); do voters+=("$v@127.0.0.1:$((controller_port + v - 1))"); done
  sed -e "s/:9092/:$((kafka_port + k - 1))/g" -e "s/:9095/:$((controller_port + k - 1))/g" \
      -e "s/:9192/:$((kafka_sasl_port + k - 1))/g" -e "s/:9292/:$((kafka_ssl_port + k - 1))/g" \
      -e "s:@SECURE@:$secure:g" -e "s/@NODE@/$k/g" -e "s/@VOTERS@/$(IFS=,; echo "${voters[*]}")/g" \
      "${files[@]}" >"$2"
  echo "log.dirs=$(kafka_data_of "$1")" >>"$2"
}

# Every node of a cluster is formatted with the same cluster id, made once.
format_node() {  # node, properties file
  local data; data="$(kafka_data_of "$1")"
  [[ -f "$data/meta.properties" ]] && return
  mkdir -p "$data"
  if [[ ! -f "$kafka_cluster_id_file" ]]; then
    java -cp "$kafka_lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$kafka_cluster_id_file"
  fi
  java -cp "$kafka_lib/*" -Dlog4j2.configurationFile="$here/log4j2.yaml" \
    kafka.tools.StorageTool format -t "$(cat "$kafka_cluster_id_file")" -c "$2" >>"$run/$1.log" 2>&1 \
    || die "$1: formatting the storage failed: read $run/$1.log"
  echo "$brokers" >"$kafka_brokers_file"
}

# SIGTERM to every running Kafka node among these components (`down` then waits for each).
signal_kafka_nodes() {  # component...
  local c
  for c in "$@"; do
    if is_kafka_node "$c" && is_running "$c"; then
      say "$c: stopping (pid $(pid_of "$c"))"; kill -TERM "$(pid_of "$c")" 2>/dev/null || true
    fi
  done
}

# Heaps: one broker gets up to 1 GiB; three share the machine with FerretDB and the workers.
kafka_heap() {
  if [[ -n "${CT_STACK_KAFKA_HEAP:-}" ]]; then echo "$CT_STACK_KAFKA_HEAP"
  elif ((brokers == 1)); then echo "-Xms256m -Xmx1g"
  else echo "-Xms192m -Xmx512m"; fi
}

# Start these nodes together: no node of a quorum answers before a majority of voters runs, so
# they are launched first and waited for after.
start_kafka_nodes() {  # node...
  (($#)) || return 0
  install_kafka
  local node started=$SECONDS deadline
  for node in "$@"; do launch_node "$node"; done
  require_ct
  for node in "$@"; do
    deadline=$((SECONDS + ${CT_STACK_BIND_RETRY_S:-60}))
    until node_ready "$node"; do
      # A port in the kernel's ephemeral range (32768-60999 here) can be held by an outgoing
      # connection, even by a client that, reconnecting to this stopped broker, connected to
      # itself; it lets go within a minute. So try again rather than fail the stack.
      ((SECONDS < deadline)) || die "$node: $(bind_failure "$node") for ${CT_STACK_BIND_RETRY_S:-60}s: move it with the CT_STACK_*_PORT variables (below 32768)"
      say "$node: $(bind_failure "$node"); starting it again"
      sleep 3
      launch_node "$node"
    done
    say "$node: ready in $((SECONDS - started))s (pid $(pid_of "$node"), log $run/$node.log)"
  done
  if [[ "$secure_on" == 1 ]]; then
    ensure_kafka_principals
    # The SASL_SSL listener with the user just made: TLS, SCRAM and the ACLs all answer.
    wait_ready "$1" check_secure_kafka
  fi
}

declare -A kafka_log_mark=()

launch_node() {  # node
  local props="$run/$1.properties"
  write_node_properties "$1" "$props"
  format_node "$1" "$props"
  touch "$run/$1.log"
  kafka_log_mark[$1]="$(stat -c %s "$run/$1.log")"
  # shellcheck disable=SC2046 # the heap options are words
  nohup java $(kafka_heap) -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$run" \
    -cp "$kafka_lib/*" kafka.Kafka "$props" >>"$run/$1.log" 2>&1 &
  echo $! >"$run/$1.pid"
}

# What this start of the node logged about a port it could not bind, if anything.
bind_failure() {  # node
  tail -c +"$((${kafka_log_mark[$1]:-0} + 1))" "$run/$1.log" 2>/dev/null |
    grep -o 'failed to bind to [0-9.:]*: Address already in use' | tail -n 1
}

# Like wait_ready, but a node that exits because a port was taken returns 1 instead of failing.
node_ready() {  # node
  local port=$((kafka_port + $(node_number "$1") - 1))
  CT_KAFKA_BOOTSTRAP="127.0.0.1:$port" "$ct" check kafka --timeout "$ready_timeout" \
    >/dev/null 2>"$run/$1.ready.err" &
  local checker=$!
  while kill -0 "$checker" 2>/dev/null; do
    if ! kill -0 "$(pid_of "$1")" 2>/dev/null; then
      kill "$checker" 2>/dev/null || true
      [[ -z "$(bind_failure "$1")" ]] || return 1
      die "$1 exited during start-up: read $run/$1.log ($(tail -n 1 "$run/$1.log" | cut -c1-300))"
    fi
    sleep 0.3
  done
  if ! wait "$checker"; then
    kill "$(pid_of "$1")" 2>/dev/null || true
    die "$1 did not become ready within ${ready_timeout}s: read $run/$1.log ($(tail -n 1 "$run/$1.ready.err" 2>/dev/null))"
  fi
}
