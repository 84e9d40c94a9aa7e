#!/usr/bin/env bash
# Checks, without Docker, that strata runs in the layout its container image gives it:
#   - the image's root filesystem, built by the same scripts/image-rootfs.sh the Dockerfile
#     runs (git + ssh + their libraries, CA bundle, passwd with uid 65532, no shell), plus the
#     strata binary and the pinned helm in /usr/local/bin;
#   - mounted read-only, with only a fresh tmpfs on /tmp writable (the Deployment's emptyDir),
#     /proc and /dev from the host;
#   - run as uid/gid 65532 (so no capabilities) with no_new_privs, with exactly the image's
#     environment (ENV of the Dockerfile's final stage, repeated below: keep them in sync).
# Then it asserts: git and helm work there (clone the example repository over git://, git's
# https helper loads, helm template and helm env with every helm home under /tmp), a write
# outside /tmp fails (the layout really is read-only), `strata --help` succeeds, and, once the
# binary has the subcommand, `strata plan` against the example profile repository succeeds and
# names its releases. In-cluster phase: deploy/ applied to a simulated cluster, the agent run
# with the Deployment's environment and service-account mount, `strata run --once` -> Ready.
#
# Usage: scripts/check-image-layout.sh [STRATA_BIN]
#   STRATA_BIN  the strata binary to check (default: build it like the image does, release for
#               x86_64-unknown-linux-musl, when that target and musl-gcc are installed; else a
#               glibc release build, whose libraries are then added to the rootfs).
#   HELM        helm binary (default: $STRATA_TOOLS_DIR or <repo>/.tools, helm4/helm).
#   SKIP_CLUSTER=1  skip the in-cluster phase.
#   KUBESIM     kubesim binary for the in-cluster phase (default: cargo build -p kubesim).
#   CLUSTER_KUBECONFIG, CLUSTER_SA_DIR, CLUSTER_API_PORT: use a simulated cluster the caller
#               already runs (its kubeconfig, service-account directory, API port on 127.0.0.1)
#               instead of starting kubesim.
#   OVERLAY=deploy/bootstrap  apply the bootstrap overlay instead of deploy/, on a cluster
#               without kube-proxy: the kubelet's KUBERNETES_SERVICE_HOST/PORT (the Service IP)
#               lead nowhere, and the agent must reach the API server at the control-plane
#               endpoint the overlay's ConfigMap strata-bootstrap gives (set to kubesim here).
# Needs root (chroot, mount namespace; the checked processes themselves run as 65532),
# util-linux (unshare, setpriv) and coreutils chroot.
#
# What it assumes about the agent (adjust here when the flags settle): configuration by the
# env vars STRATA_GIT_URL (git:// here), STRATA_GIT_REF, STRATA_PROFILES_PATH and
# STRATA_WORK_DIR; a `plan` subcommand listed in `--help` that exits 0 for a valid profile
# list and prints the release names; `strata run --once` exits 0 once every layer is Ready and
# the status is in ConfigMap strata-system/strata-status (key status.json, JSON with a top-level
# "phase"). Without `plan` in --help, or `--once` in `run --help`, that step is skipped.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=${STRATA_TOOLS_DIR:-$repo/.tools}
helm=${HELM:-$tools/helm4/helm}
uid=65532

fail() {
  echo "check-image-layout: FAIL: $*" >&2
  exit 1
}
say() { echo "check-image-layout: $*"; }

[ "$(id -u)" = 0 ] || fail "must run as root (chroot and a private mount namespace); the checked processes run as uid $uid"
for tool in unshare setpriv chroot git; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
[ -x "$helm" ] || fail "helm not found at $helm: run scripts/install-tools.sh or set HELM"

strata=${1:-}
if [ -z "$strata" ]; then
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  musl=x86_64-unknown-linux-musl
  # Whole outputs are captured before grep reads them: with pipefail, `cmd | grep -q` fails by
  # chance when grep exits at its first match and cmd then dies of SIGPIPE.
  installed_targets=$(rustup target list --installed 2>/dev/null || true)
  if grep -qx "$musl" <<<"$installed_targets" && command -v musl-gcc >/dev/null; then
    say "building strata as the image does (cargo build --release --locked --target $musl)"
    (cd "$repo" && CC_x86_64_unknown_linux_musl=musl-gcc \
      cargo build --release --locked --target "$musl" -p strata --bin strata)
    strata=$target_dir/$musl/release/strata
  else
    say "no $musl target or musl-gcc here: checking a glibc release build instead"
    (cd "$repo" && cargo build --release --locked -p strata --bin strata)
    strata=$target_dir/release/strata
  fi
fi
[ -x "$strata" ] || fail "strata binary not found at $strata"
extra_elf=()
ldd_out=$(ldd "$strata" 2>&1 || true)
if grep -q '=>' <<<"$ldd_out"; then
  say "note: $strata is dynamically linked; adding its libraries to the rootfs (the image's musl build is static and needs none)"
  extra_elf=("$strata")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

"$repo/scripts/image-rootfs.sh" "$root" "${extra_elf[@]}"
install -m 0755 "$strata" "$root/usr/local/bin/strata"
install -m 0755 "$helm" "$root/usr/local/bin/helm"
# Mount points the container runtime provides.
mkdir -p "$root/proc" "$root/dev"
touch "$root/etc/hosts" "$root/etc/resolv.conf"

# A small profile repository (two charts by path, two layers), served over git:// by a
# `git daemon` on 127.0.0.1, as a Git server is seen from a pod (network transports are what
# the image supports; local paths would need a shell, see the Dockerfile).
src=$work/srv/profiles
mkdir -p "$src/charts/base/templates" "$src/charts/app/templates"
cat >"$src/profiles.yaml" <<'EOF'
apiVersion: strata.dev/v1alpha1
kind: ProfileList
defaults:
  namespace: default
  timeout: 2m
profiles:
  - name: base
    chart:
      path: charts/base
  - name: app
    chart:
      path: charts/app
EOF
for chart in base app; do
  layer=1
  [ "$chart" = app ] && layer=2
  cat >"$src/charts/$chart/Chart.yaml" <<EOF
apiVersion: v2
name: $chart
version: 0.1.0
annotations:
  strata.dev/profile: "true"
  strata.dev/layer: "$layer"
EOF
  cat >"$src/charts/$chart/templates/configmap.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-layer
data:
  chart: {{ .Chart.Name }}
EOF
done
git -C "$src" init -q -b main
git -C "$src" -c user.name=check -c user.email=check@localhost add -A
git -C "$src" -c user.name=check -c user.email=check@localhost commit -q -m "example profiles"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$work/srv" --export-all \
  "$work/srv" >"$work/git-daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
url=git://127.0.0.1:$port/profiles
for _ in $(seq 50); do
  git ls-remote "$url" >/dev/null 2>&1 && break
  sleep 0.1
done
git ls-remote "$url" >/dev/null || fail "git daemon did not serve $url: $(cat "$work/git-daemon.log")"

# The image's environment: exactly the ENV lines of the Dockerfile's final stage
# (tests/delivery.rs checks that the two lists agree).
image_env=(
  PATH=/usr/local/bin:/usr/bin:/bin
  HOME=/tmp
  TMPDIR=/tmp
  HELM_CACHE_HOME=/tmp/helm/cache
  HELM_CONFIG_HOME=/tmp/helm/config
  HELM_DATA_HOME=/tmp/helm/data
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  STRATA_WORK_DIR=/tmp/strata
)
# The configuration the Deployment would give (deploy/base/configmap.yaml), pointed at the
# example repository.
config_env=(
  "STRATA_GIT_URL=$url"
  STRATA_GIT_REF=main
  STRATA_PROFILES_PATH=profiles.yaml
)

# In-cluster phase (skipped with SKIP_CLUSTER=1): a simulated cluster (kubesim, the project's
# in-memory API server + controllers), deploy/ applied to it with the pinned kubectl, and the
# agent started in the chroot the way the Deployment starts it: environment from the applied
# ConfigMap strata-config, STRATA_NAMESPACE as the Downward API gives it, the service-account
# directory (token, ca.crt, namespace) mounted at /var/run/secrets/kubernetes.io/serviceaccount
# and KUBERNETES_SERVICE_HOST/PORT set, no kubeconfig: kube-rs and helm use their in-cluster
# configuration. kubesim does not model per-ServiceAccount identities, so the token is one it
# issued for the service-account directory.
cluster_env=()
sa_dir=
if [ "${SKIP_CLUSTER:-0}" != 1 ]; then
  kubectl=${KUBECTL:-$tools/kubectl/kubectl}
  [ -x "$kubectl" ] || fail "kubectl not found at $kubectl: run scripts/install-tools.sh or set KUBECTL"
  sa_dir=$work/serviceaccount
  if [ -n "${CLUSTER_KUBECONFIG:-}" ]; then
    # A cluster the caller started (tests/delivery.rs starts kubesim in-process).
    if [ ! -f "$CLUSTER_KUBECONFIG" ] || [ ! -d "${CLUSTER_SA_DIR:-}" ] || [ -z "${CLUSTER_API_PORT:-}" ]; then
      fail "CLUSTER_KUBECONFIG needs CLUSTER_SA_DIR (token, ca.crt, namespace) and CLUSTER_API_PORT"
    fi
    cp "$CLUSTER_KUBECONFIG" "$work/kubeconfig"
    cp -R "$CLUSTER_SA_DIR" "$sa_dir"
    api_port=$CLUSTER_API_PORT
  else
    kubesim=${KUBESIM:-}
    if [ -z "$kubesim" ]; then
      say "building kubesim (cargo build -p kubesim --bin kubesim)"
      (cd "$repo" && cargo build -q -p kubesim --bin kubesim)
      kubesim=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/kubesim
    fi
    [ -x "$kubesim" ] || fail "kubesim binary not found at $kubesim"
    "$kubesim" --listen 127.0.0.1:0 --kubeconfig "$work/kubeconfig" --in-cluster-dir "$sa_dir" \
      --in-cluster-namespace strata-system >"$work/kubesim.out" 2>"$work/kubesim.err" &
    kubesim_pid=$!
    trap 'kill "$daemon" "$kubesim_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
    for _ in $(seq 100); do
      grep -q '^https://' "$work/kubesim.out" 2>/dev/null && break
      sleep 0.1
    done
    grep -q '^https://' "$work/kubesim.out" || fail "kubesim did not start: $(cat "$work/kubesim.err")"
    api_port=$(grep -m1 '^KUBERNETES_SERVICE_PORT=' "$work/kubesim.out" | cut -d= -f2)
  fi
  k() { "$kubectl" --kubeconfig "$work/kubeconfig" "$@"; }
  # deploy/ (or $OVERLAY) as is, with the example repository as the Git URL; the bootstrap
  # overlay's control-plane endpoint is kubesim's address.
  overlay=${OVERLAY:-deploy}
  "$kubectl" kustomize "$repo/$overlay" |
    sed "s#https://git.example.com/platform/profiles.git#$url#" |
    sed "s#KUBERNETES_SERVICE_HOST: control-plane.example.com#KUBERNETES_SERVICE_HOST: 127.0.0.1#" |
    sed "s#KUBERNETES_SERVICE_PORT: \"6443\"#KUBERNETES_SERVICE_PORT: \"$api_port\"#" >"$work/deploy.yaml"
  grep -q "$url" "$work/deploy.yaml" || fail "$overlay no longer has the placeholder Git URL this check replaces"
  k apply -f "$work/deploy.yaml" >"$work/apply.out" 2>&1 || fail "kubectl apply of $overlay failed: $(cat "$work/apply.out")"
  say "kubectl apply of $overlay to kubesim: $(wc -l <"$work/apply.out") objects"
  [ "$(k -n strata-system get deployment strata -o jsonpath='{.spec.template.spec.serviceAccountName}')" = strata ] ||
    fail "the applied Deployment does not run as ServiceAccount strata"
  # The Deployment's environment: envFrom strata-config (read back from the cluster), the
  # Downward API namespace; the kubelet's service-account mount and service env.
  # shellcheck disable=SC2016 # a Go template, not shell
  mapfile -t cluster_env < <(k -n strata-system get configmap strata-config \
    -o go-template='{{range $k, $v := .data}}{{$k}}={{$v}}{{"\n"}}{{end}}')
  [ "${#cluster_env[@]}" -gt 0 ] || fail "ConfigMap strata-config is empty in the cluster"
  status_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The kubelet's service variables: the kubernetes Service, reachable through kube-proxy;
  # with the bootstrap overlay there is none yet, so they lead to a closed port.
  service_port=$api_port
  if [ "$overlay" = deploy/bootstrap ]; then
    service_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
  # Then the container's own env entries, resolved as the kubelet does (value, configMapKeyRef
  # from the applied ConfigMaps, fieldRef; an optional Secret, which this check does not
  # create, is skipped):
  # they come after, so they win.
  mapfile -t deployment_env < <(k -n strata-system get deployment strata -o json |
    python3 -c '
import json, subprocess, sys
d = json.load(sys.stdin)
c = d["spec"]["template"]["spec"]["containers"][0]
kubectl = sys.argv[1:]
fields = {"metadata.namespace": "strata-system", "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}
for e in c.get("env", []):
    src = e.get("valueFrom", {})
    if "value" in e:
        value = e["value"]
    elif "configMapKeyRef" in src:
        ref = src["configMapKeyRef"]
        cm = json.loads(subprocess.check_output(kubectl + ["-n", "strata-system", "get", "configmap", ref["name"], "-o", "json"]))
        value = cm["data"][ref["key"]]
    elif "fieldRef" in src:
        value = fields[src["fieldRef"]["fieldPath"]]
    elif src.get("secretKeyRef", {}).get("optional"):
        continue  # no such Secret in this check
    else:
        sys.exit("unhandled env entry " + json.dumps(e))
    print(e["name"] + "=" + value)
' "$kubectl" --kubeconfig "$work/kubeconfig")
  cluster_env+=(
    STRATA_NAMESPACE=strata-system
    KUBERNETES_SERVICE_HOST=127.0.0.1
    "KUBERNETES_SERVICE_PORT=$service_port"
    "KUBERNETES_SERVICE_PORT_HTTPS=$service_port"
    "${deployment_env[@]}"
    # Port 8080 may be taken on a shared test machine.
    "STRATA_LISTEN=127.0.0.1:$status_port"
  )
  # The kubelet makes the projected token readable by the pod's user.
  chown -R "$uid:$uid" "$sa_dir"
  mkdir -p "$root/var/run/secrets/kubernetes.io/serviceaccount"
fi

# The inner part runs in a private mount namespace; it mounts the rootfs read-only with a
# tmpfs on /tmp, then runs each command chrooted as uid 65532.
cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
root=$1
uid=$2
shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$root/tmp"
mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
# Like the kubelet: the node's /etc/hosts and /etc/resolv.conf over the image's.
for f in /etc/hosts /etc/resolv.conf; do
  if [ -f "$f" ]; then mount --bind "$f" "$root$f"; fi
done
SETPRIV=$(command -v setpriv)
CHROOT=$(command -v chroot)
TIMEOUT=()
step=0
run() { # NAME EXPECT(ok|fail) CMD...
  local name=$1 expect=$2
  shift 2
  step=$((step + 1))
  local out=$OUT_DIR/run-$step.out
  set +e
  # no_new_privs first (still root, so chroot can run), then chroot switches to uid:gid 65532
  # with no supplementary groups; leaving uid 0 clears every capability.
  env -i "${ENVS[@]}" "${TIMEOUT[@]}" "$SETPRIV" --no-new-privs \
    "$CHROOT" --userspec="$uid:$uid" "$root" "$@" >"$out" 2>&1
  local rc=$?
  set -e
  if { [ "$expect" = ok ] && [ $rc -ne 0 ]; } || { [ "$expect" = fail ] && [ $rc -eq 0 ]; }; then
    echo "check-image-layout: FAIL: $name (exit $rc, expected $expect): $*" >&2
    sed 's/^/    /' "$out" >&2
    exit 1
  fi
  echo "check-image-layout: ok: $name"
  LAST=$out
}
mapfile -t ENVS <"$ENV_FILE"

run "git runs as $uid" ok /usr/bin/git --version
run "ssh client present" ok /usr/bin/ssh -V
run "git clones the profile repository into /tmp" ok /usr/bin/git clone -q "$GIT_URL" /tmp/clone
run "git's https helper and its libraries load (connection refused expected)" fail \
  /usr/bin/git ls-remote https://127.0.0.1:9/profiles
grep -qiE 'connect|refused' "$LAST" || { echo "check-image-layout: FAIL: git https did not get as far as connecting:" >&2; cat "$LAST" >&2; exit 1; }
run "nothing outside /tmp is writable" fail /usr/bin/git clone -q "$GIT_URL" /etc/clone
run "helm runs" ok /usr/local/bin/helm version
run "helm renders a chart" ok /usr/local/bin/helm template demo /tmp/clone/charts/app
grep -q 'name: demo-layer' "$LAST" || { echo "check-image-layout: FAIL: helm template output lacks demo-layer" >&2; exit 1; }
run "helm env" ok /usr/local/bin/helm env
for var in HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME; do
  grep -q "^$var=\"/tmp/" "$LAST" || { echo "check-image-layout: FAIL: helm $var not under /tmp" >&2; cat "$LAST" >&2; exit 1; }
done
run "strata --help" ok /usr/local/bin/strata --help
if grep -qE '^\s+plan(\s|$)' "$LAST"; then
  run "strata plan against the example repository" ok /usr/local/bin/strata plan
  for release in base app; do
    grep -q "$release" "$LAST" || { echo "check-image-layout: FAIL: strata plan output does not name $release" >&2; cat "$LAST" >&2; exit 1; }
  done
  sed 's/^/    /' "$LAST"
else
  echo "check-image-layout: SKIP: strata --help lists no plan subcommand yet"
fi
if [ -n "$SA_DIR" ]; then
  sa=$root/var/run/secrets/kubernetes.io/serviceaccount
  mount --bind "$SA_DIR" "$sa"
  mount -o remount,bind,ro "$sa"
  mapfile -t ENVS < <(cat "$IMAGE_ENV_FILE" "$CLUSTER_ENV_FILE")
  run "strata run --help" ok /usr/local/bin/strata run --help
  if grep -q -- '--once' "$LAST"; then
    TIMEOUT=("$(command -v timeout)" 180)
    run "strata run --once in the cluster (deploy/ environment, in-cluster service account)" ok \
      /usr/local/bin/strata run --once
    TIMEOUT=()
    tail -5 "$LAST" | sed 's/^/    /'
    echo ran >"$OUT_DIR/cluster-ran"
  else
    echo "check-image-layout: SKIP: strata run has no --once yet"
  fi
fi
echo "check-image-layout: written under /tmp:"
(cd "$root/tmp" && find . -maxdepth 2 | sort | sed 's/^/    /')
INNER

printf '%s\n' "${image_env[@]}" "${config_env[@]}" >"$work/env"
printf '%s\n' "${image_env[@]}" >"$work/image-env"
printf '%s\n' "${cluster_env[@]}" >"$work/cluster-env"
mkdir -p "$work/out"
if ! GIT_URL=$url ENV_FILE=$work/env IMAGE_ENV_FILE=$work/image-env CLUSTER_ENV_FILE=$work/cluster-env \
  SA_DIR=$sa_dir OUT_DIR=$work/out unshare --mount --propagation private bash "$work/inner.sh" "$root" "$uid"; then
  if [ -n "$sa_dir" ]; then
    echo "check-image-layout: the agent's status ConfigMap strata-system/strata-status:" >&2
    k -n strata-system get configmap strata-status -o jsonpath='{.data.status\.json}' >&2 || true
    echo >&2
  fi
  fail "see the step above"
fi
if [ -n "$sa_dir" ] && [ -f "$work/out/cluster-ran" ]; then
  status=$(k -n strata-system get configmap strata-status -o jsonpath='{.data.status\.json}') ||
    fail "the agent wrote no status ConfigMap strata-status in strata-system"
  phase=$(printf '%s' "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["phase"])')
  [ "$phase" = Ready ] || fail "status phase is $phase, not Ready: $status"
  for cm in base-layer app-layer; do
    k -n default get configmap "$cm" >/dev/null || fail "release object ConfigMap default/$cm missing"
  done
  say "ok: status ConfigMap strata-system/strata-status says Ready; the releases' objects exist"
fi
say "PASS: strata ($strata) runs as uid $uid with a read-only root and only /tmp writable"
