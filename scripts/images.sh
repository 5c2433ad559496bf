#!/usr/bin/env bash
# Builds the raftcron-node and raftcron-operator images offline, from release
# binaries already built, as docker-archive tarballs (the `docker save`
# format) that `ctr images import` and `docker load` both take. No daemon, no
# registry, no network: the layer is written here, from the binaries and the
# glibc shared libraries they link (per `ldd`).
#
# usage: scripts/images.sh [--bin-dir DIR] [--out DIR] [--tag TAG] [--only node|operator] [--import]
#   --bin-dir DIR   where raftcron-node, raftcronctl, raftcron-operator are (default target/release;
#                   build them with `cargo build --release --locked -p raftcron-node -p raftcron-operator --bins`)
#   --out DIR       where the tarballs go (default target/images)
#   --tag TAG       image tag (default: appVersion of charts/raftcron/Chart.yaml, the chart's default tag)
#   --only WHAT     build one image
#   --import        also `ctr -n k8s.io images import` each tarball (containerd's Kubernetes namespace)
# Repositories are the chart's (nodes.image.repository / operator.image.repository in
# charts/raftcron/values.yaml); NODE_IMAGE=repo OPERATOR_IMAGE=repo override them.
#
# The images lay out what deploy/Dockerfile.node and deploy/Dockerfile.operator
# build on gcr.io/distroless/cc-debian12:nonroot:
#   node:      /raftcron-node, /raftcronctl; ENTRYPOINT ["/raftcron-node"], CMD ["run"]; EXPOSE 7001 8001
#   operator:  /raftcron-operator;           ENTRYPOINT ["/raftcron-operator"];          EXPOSE 8080
#   both:      USER 65532:65532; the shared libraries `ldd` names and the dynamic loader; /etc/passwd and
#              /etc/group with nonroot (65532); /etc/nsswitch.conf; CA certificates at
#              /etc/ssl/certs/ca-certificates.crt (SSL_CERT_FILE); /tmp (1777); /home/nonroot.
# The libraries come from this machine, which built the binaries, so they match them. One layer,
# files owned by root, mtimes 0: the same binaries give the same image ID.
#
# Then, on a cluster without a registry:
#   scripts/images.sh --import
#   helm install raftcron charts/raftcron -n raftcron --create-namespace   # pullPolicy IfNotPresent
#   kubectl run v --rm -it --restart=Never --image=ghcr.io/raftcron/raftcron-node:0.1.0 \
#       --image-pull-policy=Never -- --version
# The Dockerfiles stay the way users build these images.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$root/target/release"
out="$root/target/images"
tag=""
only=""
do_import=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        --import) do_import=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$only" in ""|node|operator) ;; *) echo "images.sh: --only node|operator" >&2; exit 2 ;; esac

chart="$root/charts/raftcron"
if [[ -z "$tag" ]]; then
    tag="$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' "$chart/Chart.yaml")"
fi
[[ -n "$tag" ]] || { echo "images.sh: no appVersion in $chart/Chart.yaml; pass --tag" >&2; exit 1; }
repo_of() { # the chart's repository ending in /$1
    sed -n "s|^[[:space:]]*repository:[[:space:]]*\"\{0,1\}\([^\"[:space:]]*/$1\)\"\{0,1\}.*|\1|p" \
        "$chart/values.yaml" | head -n1
}
node_repo="${NODE_IMAGE:-$(repo_of raftcron-node)}"
operator_repo="${OPERATOR_IMAGE:-$(repo_of raftcron-operator)}"
[[ -n "$node_repo" && -n "$operator_repo" ]] || {
    echo "images.sh: no image repositories in $chart/values.yaml; set NODE_IMAGE and OPERATOR_IMAGE" >&2
    exit 1
}

need() {
    for b in "$@"; do
        [[ -x "$bin_dir/$b" ]] || {
            echo "images.sh: $bin_dir/$b not found; build it first:" >&2
            echo "  cargo build --release --locked -p raftcron-node -p raftcron-operator --bins" >&2
            exit 1
        }
    done
}
command -v ldd >/dev/null || { echo "images.sh: ldd is needed" >&2; exit 1; }
mkdir -p "$out"

# pack REF OUT.tar EXPOSE(comma-separated) ENTRYPOINT CMD(comma-separated, may be empty) BINARY...
pack() {
    python3 - "$@" <<'PY'
import hashlib, io, json, os, stat, subprocess, sys, tarfile

ref, out, expose, entrypoint, cmd, *binaries = sys.argv[1:]

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
CA = "/etc/ssl/certs/ca-certificates.crt"


class Layer:
    """A rootfs as a tar, entries in the order added, parents first."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.seen = set()

    def _info(self, path, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, 0
        ti.uname = ti.gname = ""
        return ti

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        if not path or path in self.seen:
            return
        self._parents(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode, uid, gid))
        self.seen.add(path)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if path in self.seen:
            return
        self._parents(path)
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        self.seen.add(path)

    def symlink(self, path, target):
        path = path.strip("/")
        if path in self.seen:
            return
        self._parents(path)
        ti = self._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        self.seen.add(path)

    def host_path(self, path, depth=0):
        """A host file the way the host reaches it: each symlink on the way
        (merged-/usr's /lib -> usr/lib, libfoo.so.1 -> libfoo.so.1.2) is a
        symlink in the layer too, and the file at the end is copied."""
        if depth > 40:
            sys.exit(f"images.sh: too many symlinks at {path}")
        parts = path.strip("/").split("/")
        cur = ""
        for i, part in enumerate(parts):
            nxt = cur + "/" + part
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                self.symlink(nxt, target)
                resolved = os.path.normpath(os.path.join(cur or "/", target))
                rest = "/".join(parts[i + 1 :])
                return self.host_path(resolved + ("/" + rest if rest else ""), depth + 1)
            cur = nxt
        st = os.stat(cur)
        with open(cur, "rb") as f:
            self.file(cur, f.read(), stat.S_IMODE(st.st_mode))

    def finish(self):
        self.tar.close()
        return self.buf.getvalue()


def shared_libraries(binary):
    """Absolute paths `ldd` resolves for a binary, the loader included."""
    text = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" ")[0]
            if target == "not":
                sys.exit(f"images.sh: {binary}: {line}")
        else:
            target = line.split(" ")[0]
        if target.startswith("/"):
            paths.append(target)
    return paths


layer = Layer()
for d, mode, owner in [("etc", 0o755, 0), ("tmp", 0o1777, 0), ("root", 0o700, 0),
                       ("home/nonroot", 0o700, 65532), ("var/lib/raftcron", 0o755, 65532)]:
    layer.dir(d, mode, owner, owner)
layer.file("etc/passwd", PASSWD.encode())
layer.file("etc/group", GROUP.encode())
layer.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
if os.path.exists("/etc/os-release"):
    layer.file("etc/os-release", open("/etc/os-release", "rb").read())
if not os.path.exists(CA):
    sys.exit(f"images.sh: {CA} not found (apt-get install ca-certificates)")
layer.host_path(CA)
libraries = []
for b in binaries:
    with open(b, "rb") as f:
        layer.file(os.path.basename(b), f.read(), 0o755)
    for lib in shared_libraries(b):
        if lib not in libraries:
            libraries.append(lib)
for lib in sorted(libraries):
    layer.host_path(lib)
blob = layer.finish()

diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
created = "1970-01-01T00:00:00Z"
config = {
    "Env": [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SSL_CERT_FILE=" + CA,
    ],
    "Entrypoint": [entrypoint],
    "User": "65532:65532",
    "WorkingDir": "/",
    "ExposedPorts": {f"{p}/tcp": {} for p in expose.split(",") if p},
    "Labels": {"org.opencontainers.image.source": "https://github.com/raftcron/raftcron"},
}
if cmd:
    config["Cmd"] = cmd.split(",")
image = {
    "architecture": "amd64",
    "os": "linux",
    "created": created,
    "config": config,
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": created, "created_by": "scripts/images.sh: " + ", ".join(os.path.basename(b) for b in binaries)}],
}
config_bytes = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
image_id = hashlib.sha256(config_bytes).hexdigest()
name, tag = ref.rsplit(":", 1)
layer_dir = diff_id[len("sha256:"):]
manifest = [{"Config": image_id + ".json", "RepoTags": [ref], "Layers": [layer_dir + "/layer.tar"]}]

with tarfile.open(out + ".partial", "w", format=tarfile.PAX_FORMAT) as t:
    def add(path, data, kind=tarfile.REGTYPE, mode=0o644):
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.mtime = kind, mode, 0
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        else:
            t.addfile(ti)
    add(layer_dir, b"", tarfile.DIRTYPE, 0o755)
    add(layer_dir + "/VERSION", b"1.0")
    add(layer_dir + "/layer.tar", blob)
    add(image_id + ".json", config_bytes)
    add("manifest.json", json.dumps(manifest).encode())
    add("repositories", json.dumps({name: {tag: layer_dir}}).encode())
os.replace(out + ".partial", out)
print(f"{out}: {ref} (image id sha256:{image_id[:12]}, {len(blob) >> 20} MiB layer, "
      f"{len(libraries)} shared libraries: {', '.join(os.path.basename(l) for l in sorted(libraries))})")
PY
}

built=()
if [[ -z "$only" || "$only" == node ]]; then
    need raftcron-node raftcronctl
    f="$out/raftcron-node-$tag.tar"
    pack "$node_repo:$tag" "$f" 7001,8001 /raftcron-node run "$bin_dir/raftcron-node" "$bin_dir/raftcronctl"
    built+=("$f")
fi
if [[ -z "$only" || "$only" == operator ]]; then
    need raftcron-operator
    f="$out/raftcron-operator-$tag.tar"
    pack "$operator_repo:$tag" "$f" 8080 /raftcron-operator "" "$bin_dir/raftcron-operator"
    built+=("$f")
fi
if [[ $do_import == 1 ]]; then
    for f in "${built[@]}"; do
        ctr -n k8s.io images import "$f"
    done
fi
