#!/usr/bin/env bash
# Checks, without Docker, that strata runs in the layout its container image gives it:
#   - the image's root filesystem, built by the same scripts/image-rootfs.sh the Dockerfile
#     runs (git + ssh + their libraries, CA bundle, passwd with uid 65532, no shell), plus the
#     strata binary and the pinned helm in /usr/local/bin;
#   - mounted read-only, with only a fresh tmpfs on /tmp writable (the Deployment's emptyDir),
#     /proc and /dev from the host;
#   - run as uid/gid 65532 (so no capabilities) with no_new_privs, with exactly the image's
#     environment (ENV of the Dockerfile's final stage, repeated below: keep them in sync).
# Then it asserts: git and helm work there (clone the example repository, helm template and
# helm env with every helm home under /tmp), a write outside /tmp fails (the layout really is
# read-only), `strata --help` succeeds, and, once the binary has the subcommand,
# `strata plan` against a local example profile repository succeeds and names its releases.
#
# Usage: scripts/check-image-layout.sh [STRATA_BIN]
#   STRATA_BIN  the strata binary to check (default: build it like the image does, release for
#               x86_64-unknown-linux-musl, when that target and musl-gcc are installed; else a
#               glibc release build, whose libraries are then added to the rootfs).
#   HELM        helm binary (default: $STRATA_TOOLS_DIR or <repo>/.tools, helm4/helm).
# Needs root (chroot, mount namespace; the checked processes themselves run as 65532),
# util-linux (unshare, setpriv) and coreutils chroot.
#
# What it assumes about the agent (adjust here when the flags settle): configuration by the
# env vars STRATA_GIT_URL (git:// here), STRATA_GIT_REF, STRATA_PROFILES_PATH and
# STRATA_WORK_DIR; a `plan` subcommand listed in `--help` that exits 0 for a valid profile
# list and prints the release names. Without `plan` in --help that step is skipped, not failed.
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
  if rustup target list --installed 2>/dev/null | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
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
if ldd "$strata" 2>&1 | grep -q '=>'; then
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
SETPRIV=$(command -v setpriv)
CHROOT=$(command -v chroot)
step=0
run() { # NAME EXPECT(ok|fail) CMD...
  local name=$1 expect=$2
  shift 2
  step=$((step + 1))
  local out=$OUT_DIR/run-$step.out
  set +e
  # no_new_privs first (still root, so chroot can run), then chroot switches to uid:gid 65532
  # with no supplementary groups; leaving uid 0 clears every capability.
  env -i "${ENVS[@]}" "$SETPRIV" --no-new-privs \
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
echo "check-image-layout: written under /tmp:"
(cd "$root/tmp" && find . -maxdepth 2 | sort | sed 's/^/    /')
INNER

printf '%s\n' "${image_env[@]}" "${config_env[@]}" >"$work/env"
mkdir -p "$work/out"
GIT_URL=$url ENV_FILE=$work/env OUT_DIR=$work/out unshare --mount --propagation private bash "$work/inner.sh" "$root" "$uid"
say "PASS: strata ($strata) runs as uid $uid with a read-only root and only /tmp writable"
