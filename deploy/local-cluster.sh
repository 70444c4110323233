#!/usr/bin/env bash
# Start a local three-node pushgate cluster on this machine, in the foreground.
#
#   deploy/local-cluster.sh [--data DIR] [--port PORT] [--nginx] [--tls] [--bin PATH] [-- PUSHGATE FLAGS...]
#
# Node i (1..3) listens on 127.0.0.1i: HTTP on port 9091, cluster (gRPC) on
# 9092 unless --port is given, in which case the ports are picked once and
# remembered in DIR/ports.env (a restarted cluster must find its members at
# the addresses stored in its membership). With --nginx, a round-robin nginx
# on 127.0.0.1:PORT (default 9091) stands in front of the three nodes, like a
# Kubernetes Service. Ctrl-C / SIGTERM stops everything; if one node exits
# (e.g. PUT /-/quit), the others are stopped too and the script exits with
# that node's status. With --tls, the replicas talk mutual TLS with
# certificates of a CA made for this cluster (openssl, once, in DIR/tls).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=./data-cluster
PORT=""
NGINX=0
TLS=0
BIN=""
while (($#)); do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --nginx) NGINX=1; shift ;;
    --tls) TLS=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
EXTRA=("$@")
if [[ -z $BIN ]]; then
  BIN=$HERE/../target/release/pushgate
  [[ -x $BIN ]] || (cd "$HERE/.." && cargo build --release --bin pushgate >&2)
fi
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)

# Two ports per node, free on the node's own loopback address and below the
# kernel's ephemeral range. Nodes dial their peers from their own address, and
# a closed connection keeps its ephemeral port in TIME_WAIT for a minute, in
# which a listener cannot bind that address and port; a port from the
# ephemeral range could also be taken by a new outgoing connection before the
# node binds it. Outgoing connections never get a port below the range.
free_ports() {
  python3 - <<'PY'
import random, socket
try:
    start = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError):
    start = 32768
def bindable(ip, port):
    s = socket.socket()
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
def pick(ip, taken):
    if start > 11000:
        for _ in range(10000):
            p = random.randrange(10000, start)
            if p not in taken and bindable(ip, p) and bindable("127.0.0.1", p):
                return p
    s = socket.socket(); s.bind((ip, 0)); p = s.getsockname()[1]; s.close()
    return p
taken = set()
for i in (1, 2, 3):
    for _ in ("http", "grpc"):
        p = pick("127.0.0.1%d" % i, taken)
        taken.add(p)
        print(p)
PY
}
if [[ -f $DATA/ports.env ]]; then
  # shellcheck disable=SC1091
  . "$DATA/ports.env"
else
  if [[ -n $PORT ]]; then
    P=($(free_ports))
    HTTP=(${P[0]} ${P[2]} ${P[4]}); GRPC=(${P[1]} ${P[3]} ${P[5]})
  else
    HTTP=(9091 9091 9091); GRPC=(9092 9092 9092)
  fi
  printf 'HTTP=(%s)\nGRPC=(%s)\n' "${HTTP[*]}" "${GRPC[*]}" > "$DATA/ports.env"
fi
PEERS="1=127.0.0.11:${GRPC[0]},2=127.0.0.12:${GRPC[1]},3=127.0.0.13:${GRPC[2]}"
if ((NGINX)) && [[ -z $PORT ]]; then
  echo "--nginx needs --port (the nodes then use ports of their own)" >&2; exit 2
fi

# Mutual TLS: a CA of this cluster's own and one certificate per node for its
# address, made once and kept with the data (a restarted cluster reuses them).
TLS_FLAGS=()
if ((TLS)); then
  T=$DATA/tls
  if [[ ! -f $T/ca.crt ]]; then
    mkdir -p "$T"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=pushgate local cluster CA" -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null
    for i in 1 2 3; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node$i" \
        -keyout "$T/node$i.key" -out "$T/node$i.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1%s\nextendedKeyUsage=serverAuth,clientAuth\n' $i > "$T/node$i.ext"
      openssl x509 -req -in "$T/node$i.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial \
        -days 3650 -extfile "$T/node$i.ext" -out "$T/node$i.crt" 2>/dev/null
    done
  fi
  echo "replicas talk mutual TLS (CA and certificates in $T)" >&2
fi
tls_flags() { # node id
  ((TLS)) || return 0
  printf '%s\n' "--cluster.tls.cert-file=$DATA/tls/node$1.crt" "--cluster.tls.key-file=$DATA/tls/node$1.key" \
    "--cluster.tls.ca-file=$DATA/tls/ca.crt"
}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'stop_all; exit 0' TERM INT

for i in 1 2 3; do
  mapfile -t TLS_FLAGS < <(tls_flags $i)
  "$BIN" --cluster.node-id=$i --cluster.peers="$PEERS" "${TLS_FLAGS[@]}" \
    --web.listen-address=127.0.0.1$i:${HTTP[$((i-1))]} \
    --cluster.listen-address=127.0.0.1$i:${GRPC[$((i-1))]} \
    --storage.path="$DATA/node$i" "${EXTRA[@]}" >>"$DATA/node$i.log" 2>&1 &
  PIDS+=($!)
  echo "node $i: http://127.0.0.1$i:${HTTP[$((i-1))]}  (log: $DATA/node$i.log)" >&2
done

if ((NGINX)); then
  mkdir -p "$DATA/nginx"
  cat > "$DATA/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
user root;
pid $DATA/nginx/nginx.pid;
error_log $DATA/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DATA/nginx/body;
  proxy_temp_path $DATA/nginx/proxy;
  fastcgi_temp_path $DATA/nginx/fastcgi;
  uwsgi_temp_path $DATA/nginx/uwsgi;
  scgi_temp_path $DATA/nginx/scgi;
  client_max_body_size 64m;
  upstream pushgate {
    server 127.0.0.11:${HTTP[0]};
    server 127.0.0.12:${HTTP[1]};
    server 127.0.0.13:${HTTP[2]};
  }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://pushgate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
      proxy_read_timeout 60s;
      proxy_request_buffering on;
    }
  }
}
CONF
  nginx -p "$DATA/nginx" -c "$DATA/nginx/nginx.conf" &
  PIDS+=($!)
  echo "nginx (round robin over the three nodes): http://127.0.0.1:$PORT" >&2
fi

# Exit when any child exits (a node quit or failed): stop the rest.
set +e
wait -n "${PIDS[@]}"
status=$?
stop_all
exit $status
