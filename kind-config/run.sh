#!/usr/bin/env bash
# strata in a local kind cluster, end to end, where Docker and kind are installed:
#   1. builds the image (Dockerfile) as strata:kind and loads it into the kind cluster;
#   2. serves the example profile repository (examples/, committed into a throwaway Git
#      repository) with `git daemon` on the kind network's gateway, i.e. the host as the pods
#      see it;
#   3. applies deploy/ through kind-config/overlay (image strata:kind, Git URL of step 2);
#   4. waits until the agent's status (ConfigMap strata-status, key status.json) says phase
#      Ready; on failure or timeout dumps the agent's logs, status, events and pods.
#
# Usage: kind-config/run.sh
#   CLUSTER=strata       kind cluster name (created from kind-config/cluster.yaml if missing)
#   HELM_MAJOR=4         helm in the image (4 or 3)
#   TIMEOUT=600          seconds to wait for Ready
#   GIT_PORT=9418        port of the git daemon on the gateway address
#   KEEP=1               keep the cluster afterwards (default: keep it only when it existed)
#   KUBECTL=...          kubectl (default: <repo>/.tools/kubectl/kubectl, else kubectl on PATH)
#
# The example charts reference the upstream cert-manager/linkerd/flagger images, which do not
# do anything useful without their real configuration; in the throwaway repository this script
# replaces them with registry.k8s.io/pause and turns the post-install check Jobs off, so the
# layers become Ready in a real cluster. (The simulated cluster used by the tests needs none of
# this.)
#
# It cannot run on the machines strata is developed on (no Docker engine): what it calls is
# checked there instead: the image's layout (scripts/check-image-layout.sh), the manifests and
# this overlay rendering (tests/delivery.rs), the agent against the simulated cluster
# (tests/e2e_*.rs), and this script with bash -n and shellcheck.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster=${CLUSTER:-strata}
helm_major=${HELM_MAJOR:-4}
timeout=${TIMEOUT:-600}
git_port=${GIT_PORT:-9418}
image=strata:kind
ns=strata-system
if [ -n "${KUBECTL:-}" ]; then
  kubectl=$KUBECTL
elif [ -x "$repo/.tools/kubectl/kubectl" ]; then
  kubectl=$repo/.tools/kubectl/kubectl
else
  kubectl=$(command -v kubectl) || {
    echo "run.sh: kubectl not found (scripts/install-tools.sh installs the pinned one)" >&2
    exit 1
  }
fi

say() { echo "kind-config/run.sh: $*"; }
die() {
  echo "kind-config/run.sh: $*" >&2
  exit 1
}

for tool in docker kind git; do
  command -v "$tool" >/dev/null || die "$tool is required (this script needs Docker and kind)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"

work=$(mktemp -d)
daemon=
created=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$daemon" ]; then
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
  rm -rf "$work"
  if [ "$created" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
    say "deleting kind cluster $cluster (KEEP=1 keeps it)"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# 1. Image and cluster.
say "building $image (helm $helm_major)"
docker build --build-arg "HELM_MAJOR=$helm_major" -t "$image" "$repo"
clusters=$(kind get clusters 2>/dev/null || true)
if ! grep -qx "$cluster" <<<"$clusters"; then
  say "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --config "$repo/kind-config/cluster.yaml" --wait 120s
  created=1
fi
context=kind-$cluster
k() { "$kubectl" --context "$context" "$@"; }
kind load docker-image "$image" --name "$cluster"

# 2. The example profile repository, served to the pods.
gateway=$(docker network inspect kind \
  -f '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}' |
  tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | head -1) ||
  die "no IPv4 gateway on the docker network 'kind'"
src=$work/srv/profiles
mkdir -p "$src"
cp -R "$repo/examples/." "$src/"
# Real-cluster stand-ins (see the header): do-nothing images, no check Jobs.
find "$src/charts" -name values.yaml -print0 |
  xargs -0 sed -i -E 's#^([[:space:]]*image:).*#\1 registry.k8s.io/pause:3.10#; s#^([[:space:]]*enabled:) true#\1 false#'
git -C "$src" init -q -b main
git -C "$src" add -A
git -C "$src" -c user.name=strata-kind -c user.email=strata-kind@localhost commit -q -m "example profiles for kind"
git daemon --reuseaddr --listen="$gateway" --port="$git_port" --base-path="$work/srv" \
  --export-all "$work/srv" >"$work/git-daemon.log" 2>&1 &
daemon=$!
url=git://$gateway:$git_port/profiles
for _ in $(seq 50); do
  git ls-remote "$url" >/dev/null 2>&1 && break
  sleep 0.2
done
git ls-remote "$url" >/dev/null || die "git daemon is not serving $url: $(cat "$work/git-daemon.log")"
say "serving examples/ at $url"

# 3. The agent.
k kustomize "$repo/kind-config/overlay" |
  sed "s#git://host.kind.internal:9418/#git://$gateway:$git_port/#" >"$work/strata.yaml"
grep -q "$url" "$work/strata.yaml" || die "the overlay no longer carries the Git URL placeholder"
k apply -f "$work/strata.yaml"
# A new image under the same tag: restart so the pod runs what was just built.
k -n "$ns" rollout restart deployment/strata
k -n "$ns" rollout status deployment/strata --timeout=180s || true

# 4. Wait for Ready.
dump() {
  echo "---- status (configmap strata-status) ----"
  k -n "$ns" get configmap strata-status -o jsonpath='{.data.status\.json}' 2>&1 || true
  echo
  echo "---- agent logs ----"
  k -n "$ns" logs deployment/strata --tail=200 2>&1 || true
  echo "---- events in $ns ----"
  k -n "$ns" get events --sort-by=.lastTimestamp 2>&1 | tail -40 || true
  echo "---- pods ----"
  k get pods -A -o wide 2>&1 || true
  echo "---- helm releases (secrets) ----"
  k get secrets -A -l owner=helm 2>&1 || true
}
phase=
deadline=$((SECONDS + timeout))
while [ $SECONDS -lt $deadline ]; do
  status=$(k -n "$ns" get configmap strata-status -o jsonpath='{.data.status\.json}' 2>/dev/null || true)
  # The overall phase is the status object's first key (before any nested object).
  phase=$(printf '%s' "$status" | tr -d ' \n\t' | sed -nE 's/^[{][^{]*"phase":"([A-Za-z]+)".*/\1/p')
  say "phase: ${phase:-<no status yet>}"
  case $phase in
    Ready)
      say "strata is Ready"
      printf '%s\n' "$status"
      say "status API: $kubectl --context $context -n $ns port-forward svc/strata 8080:8080, then curl localhost:8080/status"
      exit 0
      ;;
    Failed | Invalid)
      dump
      die "strata reports phase $phase"
      ;;
  esac
  sleep 5
done
dump
die "strata did not become Ready within ${timeout}s (last phase: ${phase:-none})"
