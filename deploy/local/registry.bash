# Apicurio Registry for deploy/local/stack: a schema registry serving the Confluent-compatible
# REST API on http://127.0.0.1:$CT_STACK_REGISTRY_PORT/apis/ccompat/v7 (default port 8081),
# and with the secure servers over HTTPS too, with the stack's server certificate, on
# $CT_STACK_REGISTRY_TLS_PORT (default 8481); in-memory storage (H2), no authentication.
# Sourced by the stack.
#
# Not part of a plain `stack up`: `stack up registry` starts it (and `make test` does, for the
# tests of tests/integration/test_registry*.py). The first start builds it from Maven Central
# with Maven's Quarkus plugin (deploy/local/registry/, README.md there) into the cache, about a
# minute on an idle machine; later starts take a few seconds. Its schemas live in memory: a
# restart empties it, and `ct schemas register` registers the project's contracts again.

registry_port="${CT_STACK_REGISTRY_PORT:-8081}"
registry_src="$here/registry"
registry_version="$(sed -n 's:.*<registry.version>\(.*\)</registry.version>.*:\1:p' "$registry_src/pom.xml")"
# Keyed to every file of deploy/local/registry, so that a change there builds it again.
registry_home="$cache/apicurio-registry-$registry_version-$(
  cd "$registry_src" && find . -type f -not -path '*/target/*' -print0 | sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-12)"
registry_url="http://127.0.0.1:$registry_port/apis/ccompat/v7"
registry_tls_port="${CT_STACK_REGISTRY_TLS_PORT:-8481}"
registry_tls_url="https://127.0.0.1:$registry_tls_port/apis/ccompat/v7"

registry_mvn() {  # pom, goals...: quiet, one thread, no tests, Maven Central only
  mvn -B -q -T1 -s "$registry_src/settings.xml" -Dmaven.repo.local="$cache/m2" -DskipTests \
    -f "$@"
}

# Built in a copy under the cache, so that Maven's target/ never lands in the checkout.
install_registry() {
  [[ -f "$registry_home/.complete" ]] && return
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) to build the registry"
  command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jdk-headless)"
  say "registry: building Apicurio Registry $registry_version with Maven's Quarkus plugin (first time only, about a minute)"
  local build="$registry_home.build" started=$SECONDS
  rm -rf "$build" "$registry_home" && mkdir -p "$build" && cp -r "$registry_src/." "$build/"
  # The one artifact of the registry's tree that Maven Central lacks, built from its source
  # (registry/config-index-deployment/pom.xml says why) into the stack's private repository.
  registry_mvn "$build/config-index-deployment/pom.xml" install \
    || die "registry: building the config-index deployment module failed (see the output above)"
  registry_mvn "$build/pom.xml" package \
    || die "registry: mvn package (the Quarkus build) failed (see the output above)"
  mkdir -p "$registry_home"
  mv "$build/target/local-schema-registry-1-runner.jar" "$build/target/lib" "$registry_home/"
  rm -rf "$build"
  touch "$registry_home/.complete"
  say "registry: built in $((SECONDS - started))s into $registry_home"
}

start_registry() {
  install_registry
  local tls=()
  if [[ "$secure_on" == 1 ]]; then
    ensure_certs
    tls=(-Dquarkus.http.ssl-port="$registry_tls_port"
         -Dquarkus.http.ssl.certificate.files="$secure/server.pem"
         -Dquarkus.http.ssl.certificate.key-files="$secure/server.key")
  fi
  # Quarkus reads its settings from system properties: loopback only, in memory, quiet.
  nohup java -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$registry_port" "${tls[@]}" \
    -Dquarkus.log.level=WARN -Dquarkus.log.category.\"io.apicurio\".level=WARN \
    -Dquarkus.datasource.jdbc.min-size=2 -Dquarkus.datasource.jdbc.initial-size=2 \
    -Dct.component=registry \
    -jar "$registry_home/local-schema-registry-1-runner.jar" >>"$run/registry.log" 2>&1 &
  echo $! >"$run/registry.pid"
  wait_ready registry wait_registry "$registry_url"
  if [[ "$secure_on" == 1 ]]; then
    wait_ready registry wait_registry "$registry_tls_url" --cacert "$secure/ca.pem"
  fi
}

wait_registry() {  # url, curl options...
  local deadline=$((SECONDS + ready_timeout))
  until curl -fsS -o /dev/null "${@:2}" "$1/subjects" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "registry: no answer from $1" >&2; return 1; }
    sleep 0.5
  done
}

# The plaintext API for workers; with the secure servers, the HTTPS one and its CA as well
# (CT_STACK_*: not worker settings, what the tests use to reach it).
print_registry_env() {
  is_running registry || die "registry-env: the registry is not running: 'deploy/local/stack up registry' starts it"
  printf 'export %s=%q\n' CT_SCHEMA_REGISTRY_URL "$registry_url"
  if [[ "$secure_on" == 1 ]]; then
    printf 'export %s=%q\n' CT_STACK_REGISTRY_TLS_URL "$registry_tls_url" \
      CT_STACK_REGISTRY_CA_FILE "$secure/ca.pem"
  fi
}
