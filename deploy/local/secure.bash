# Sourced by deploy/local/stack: the secure side of the local stack. A local CA and the
# certificates it signs, the users' passwords, Kafka's SCRAM users and ACLs, Mailpit's password
# file, and `secure-env`. Everything is made once per state directory, in $secure (mode 700),
# and never enters the checkout.

kafka_user="ct"
# A user who authenticates fine but holds no ACL: the tests' authorization failure.
kafka_noacl_user="ct-noacl"
smtp_user="ct"
# What user ct may use: the project's topics and consumer groups, production names and the
# tests' (tests/conftest.py `settings`: t-<run>-... topics, g-<run>-... groups), nothing else.
acl_topic_prefixes=(ct. oms.order-status. t-)
acl_group_prefixes=(ct- g-)

# A certificate signed by the local CA: name, subject, X.509 extensions (one per line).
issue_cert() {
  local name="$1" subject="$2" extensions="$3"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$secure/$name.key" -out "$secure/$name.csr" \
    -subj "$subject" 2>/dev/null
  printf '%b\n' "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n$extensions" \
    >"$secure/$name.ext"
  openssl x509 -req -in "$secure/$name.csr" -CA "$secure/ca.pem" -CAkey "$secure/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$secure/$name.ext" -out "$secure/$name.pem" 2>/dev/null
  rm -f "$secure/$name.csr" "$secure/$name.ext"
}

# The CA lives as long as the state directory; the certificates it signs are made again when they
# have less than 30 days left (a restart of the servers then picks them up).
ensure_certs() {
  if [[ -f "$secure/ca.pem" && -f "$secure/kafka-keystore.pem" ]] &&
     openssl x509 -checkend 2592000 -noout -in "$secure/server.pem" >/dev/null 2>&1 &&
     openssl x509 -checkend 2592000 -noout -in "$secure/client.pem" >/dev/null 2>&1; then
    return
  fi
  command -v openssl >/dev/null || die "openssl not found: run 'make tools' (it installs it with apt-get)"
  (umask 077 && mkdir -p "$secure")
  chmod 700 "$secure"
  say "certificates: making the local CA and server/client certificates in $secure"
  (
    umask 077
    if [[ ! -f "$secure/ca.pem" ]]; then
      openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "$secure/ca.key" -out "$secure/ca.pem" -subj "/CN=Conversation Tracker local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null || die "certificates: openssl could not make the CA"
    fi
    # One certificate for every server of the stack: they all listen on loopback.
    issue_cert server "/CN=localhost" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth"
    # Kafka's mutual-TLS listener maps "CN=ct,O=..." (RFC 2253 order) to User:ct.
    issue_cert client "/O=Conversation Tracker/CN=$kafka_user" \
      "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
    cat "$secure/server.key" "$secure/server.pem" >"$secure/kafka-keystore.pem"
  ) || die "certificates: could not make them in $secure"
  chmod 644 "$secure/ca.pem"
}

password_of() {  # name: the password in $secure/NAME.password, made on first use
  local file="$secure/$1.password"
  if [[ ! -s "$file" ]]; then
    (umask 077 && mkdir -p "$secure" && openssl rand -hex 24 >"$file")
  fi
  cat "$file"
}

kafka_tool() {  # class, arguments...: one of Kafka's command-line tools against this broker
  java -Xms64m -Xmx256m -Dlog4j2.configurationFile="$here/log4j2.yaml" -cp "$kafka_lib/*" \
    "$1" --bootstrap-server "$kafka_bootstrap" "${@:2}" >>"$run/${kafka_nodes[0]}.log" 2>&1
}

# SCRAM users and ACLs live in the cluster's metadata, so they are made once per formatted
# storage: the stamp names the cluster id and a hash of what was granted.
ensure_kafka_principals() {
  local cluster_id stamp="$secure/kafka-principals.done" wanted
  cluster_id="$(sed -n 's/^cluster.id=//p' "$(kafka_data_of "${kafka_nodes[0]}")/meta.properties")"
  wanted="$cluster_id $( (declare -f ensure_kafka_principals; echo "${acl_topic_prefixes[*]} ${acl_group_prefixes[*]}"
                          password_of "kafka-$kafka_user"; password_of "kafka-$kafka_noacl_user") | sha256sum | cut -c1-16)"
  [[ "$(cat "$stamp" 2>/dev/null)" == "$wanted" ]] && return
  say "kafka: creating SCRAM users $kafka_user and $kafka_noacl_user and granting $kafka_user its ACLs"
  local user
  for user in "$kafka_user" "$kafka_noacl_user"; do
    # On the command line: ConfigCommand's --add-config-file mangles the SCRAM-SHA-512 key. The
    # tool runs for a second, on this machine's loopback stack only.
    kafka_tool kafka.admin.ConfigCommand --alter --entity-type users --entity-name "$user" \
      --add-config "SCRAM-SHA-512=[iterations=8192,password=$(password_of "kafka-$user")]" \
      || die "kafka: could not create SCRAM user $user: read $run/kafka.log"
  done
  local topics=() groups=() p
  for p in "${acl_topic_prefixes[@]}"; do topics+=(--topic "$p"); done
  for p in "${acl_group_prefixes[@]}"; do groups+=(--group "$p"); done
  # Create: `ct topics create`; DescribeConfigs: admin clients that read topic settings.
  kafka_tool org.apache.kafka.tools.AclCommand --add --allow-principal "User:$kafka_user" \
    --resource-pattern-type prefixed "${topics[@]}" --operation Read --operation Write \
    --operation Describe --operation Create --operation DescribeConfigs \
    || die "kafka: could not grant the topic ACLs: read $run/kafka.log"
  kafka_tool org.apache.kafka.tools.AclCommand --add --allow-principal "User:$kafka_user" \
    --resource-pattern-type prefixed "${groups[@]}" --operation Read --operation Describe \
    || die "kafka: could not grant the group ACLs: read $run/kafka.log"
  (umask 077 && echo "$wanted" >"$stamp")
}

ensure_mailpit_auth() {
  # Mailpit reads htpasswd files; the password is stored as a SHA-512 crypt hash, not in clear.
  (umask 077 && printf '%s:%s\n' "$smtp_user" "$(openssl passwd -6 "$(password_of "smtp-$smtp_user")")" \
    >"$secure/mailpit-auth")
}

secure_mongo_uri() {
  echo "mongodb://127.0.0.1:$mongo_tls_port/?tls=true&tlsCAFile=$secure/ca.pem"
}

# `export NAME=value` lines, values quoted for the shell.
secure_assignments() {
  local -a pairs=(
    CT_KAFKA_BOOTSTRAP "$(listener_bootstrap "$kafka_sasl_port")"
    CT_KAFKA_SECURITY_PROTOCOL SASL_SSL
    CT_KAFKA_SASL_MECHANISM SCRAM-SHA-512
    CT_KAFKA_SASL_USERNAME "$kafka_user"
    CT_KAFKA_SASL_PASSWORD "$(password_of "kafka-$kafka_user")"
    CT_KAFKA_SSL_CA_FILE "$secure/ca.pem"
    CT_SMTP_HOST 127.0.0.1
    CT_SMTP_PORT "$mailpit_smtp_port"
    CT_SMTP_TLS starttls
    CT_SMTP_USERNAME "$smtp_user"
    CT_SMTP_PASSWORD "$(password_of "smtp-$smtp_user")"
    CT_SMTP_CA_FILE "$secure/ca.pem"
    CT_MONGO_URI "$(secure_mongo_uri)"
    CT_STACK_MAILPIT_API "http://127.0.0.1:$mailpit_api_port"
    # Not worker settings: what the tests need besides, to reach the other secure servers.
    CT_STACK_MAILPIT_TLS_SMTP "127.0.0.1:$mailpit_tls_smtp_port"
    CT_STACK_MAILPIT_TLS_API "http://127.0.0.1:$mailpit_tls_api_port"
    CT_STACK_KAFKA_PLAINTEXT "$kafka_bootstrap"
    CT_STACK_KAFKA_MTLS_BOOTSTRAP "$(listener_bootstrap "$kafka_ssl_port")"
    CT_STACK_KAFKA_CLIENT_CERT "$secure/client.pem"
    CT_STACK_KAFKA_CLIENT_KEY "$secure/client.key"
    CT_STACK_KAFKA_NOACL_USERNAME "$kafka_noacl_user"
    CT_STACK_KAFKA_NOACL_PASSWORD "$(password_of "kafka-$kafka_noacl_user")"
  )
  local i
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    printf 'export %s=%q\n' "${pairs[i]}" "${pairs[i + 1]}"
  done
}

print_secure_env() {
  [[ "$secure_on" == 1 ]] || die "secure-env: CT_STACK_SECURE=0 runs no secure servers"
  [[ -f "$secure/ca.pem" && -f "$secure/kafka-principals.done" ]] ||
    die "secure-env: the secure servers were never started in $state: run 'deploy/local/stack up' first"
  secure_assignments
}

# Readiness of the secure listeners, run in the background by wait_ready (a subshell: the
# exports stay there).
check_secure_kafka() {
  eval "$(secure_assignments)"
  "$ct" check kafka --timeout "$ready_timeout"
}

check_secure_mongo() {
  CT_MONGO_URI="$(secure_mongo_uri)" "$ct" check mongo --timeout "$ready_timeout"
}
